"""InfEdit (``infedit``): unified attention control with a mutual branch (docs/baselines.md §1).

The sampler runs three branches (``SamplerInputs.mutual_cond``): source x_s, target x_t and mutual x_m, a second
source-prompt branch stepped like the target. The UNet batch is six chunks of B edits,
``[src_u, tgt_u, mut_u, src_c, tgt_c, mut_c]``; the mutual branch takes the source prompt.

- **Self-attention** (every layer, in the unconditional and in the conditional triple): while the edit's
  per-type schedule s says so (s > (k+1)/T, ALE's and InfEdit's rule) Q = (Q_s, Q_s, Q_s), K = (K_s, K_s, K_s),
  V = (V_s, V_t, V_s): the target reads the source's maps with its own values and the mutual output is the
  source's. Afterwards Q = (Q_s, Q_t, Q_t), K = (K_s, K_t, K_s), V = (V_s, V_t, V_s): the target is plain and
  the mutual branch is the target's queries on the source's keys and values. All through SDPA.
- **Cross-attention** (conditional triple; the unconditional chunks are plain): the refinement of a branch's maps
  into the target's token order is ref(P_x)[..., n] = a[n] P_x[..., mapper[n]] + (1 - a[n]) P_t[..., n], with
  P2P's aligner plus InfEdit's cosine extension (``seq_aligner.infedit_refinement_mapper``). While
  c >= (k+1)/T (c = ``INFEDIT_CROSS_REPLACE`` = 0.7: k = 0..9 of 15) the target uses ref(P_s); the source and the
  mutual branch always use their own maps.
- **Store and local blend**: at the blend layers (level 2, non-mid; ``shared.blend_layers``) S_s = ref(P_s) and
  S_m = ref(P_m), both refined with the target's *own* maps, are summed over steps (head-averaged). After every
  step k >= 1 the target latent is blended: outside the mask of the local words on S_m (threshold
  max(0.15 / sqrt(a_k), thresh_e)) x_t takes x_m, on the mask of the mutual-only words on S_s it takes x_s, and
  at k = T - 2 it takes x_m on the mask of the words that are both. x_m is never changed.

Local words (``infedit.local_words``): ``*`` (the default), every token of every target phrase (``layout_prompt``
spans); or, as the app takes them, space-separated words, each naming its every occurrence as a word of the joined
target prompt; "" names none (no local blend). Mutual words (``infedit.mutual_words``): the same, none by default.
An edit that carries whole prompts (PIE-Bench) takes them for the three branches, the aligner and the word sets
(the target phrase at its marked position in the whole target prompt).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from ... import steps
from ...attention_maps import Recorder
from ...errors import EditInputError
from ...options import Options, option
from ...processors import (
    THREE_BRANCHES, AttentionProcessor, Layer, attention, cross_attention_qkv, from_heads, probabilities,
    self_attention_qkv,
)
from ...sampler import StepState
from ...steps import StepController
from ...text import edit_layouts, edit_texts
from ..base import EditBatch, Method, MethodRun, register
from ..seq_aligner import ALIGNER_ORDERS, MAX_LENGTH, infedit_refinement_mapper, prompt_ids, split_words, word_tokens
from ..shared import (
    BOTH_HALVES, BlendLayerCrossAttention, LocalBlend, blend_layers, joined_conditioning, layer_processors, on_grid,
    take_source_maps_of_chunks, upsample,
)

INFEDIT_CROSS_REPLACE = 0.7  # the app's cross_replace_steps slider
INFEDIT_THRESH_E = 0.6  # the app's local-blend threshold (LocalBlend's constructor default 0.3 is overridden)
INFEDIT_THRESH_M = 0.6  # the app's mutual-blend threshold
INFEDIT_TEMPERATURE = 0.15  # hard-coded in LocalBlend: tau_e = max(0.15 / sqrt(a_k), thresh_e)
INFEDIT_BLEND_START = 1  # the local blend runs after steps k >= 1
INFEDIT_ALIGNER = "reference"  # the reference's swapped cosine indices; "intended" compares target[p], source[q]
ALL_PHRASE_WORDS = "*"  # the local words by default: every token of every target phrase


def self_inject_active(schedule, step_index: int, num_steps: int) -> bool:
    """InfEdit's (and ALE's) self-attention injection at step k: s > (k + 1) / T (exactly: ``steps.exceeds``)."""
    return step_index in steps.exceeds(schedule, num_steps)


def cross_replace_active(fraction, step_index: int, num_steps: int) -> bool:
    """InfEdit's cross-attention replacement at step k: c >= (k + 1) / T (exactly: ``steps.reaches``)."""
    return step_index in steps.reaches(fraction, num_steps)


def blend_active(step_index: int) -> bool:
    """InfEdit's local blend runs after every step but the first (``steps.from_step(INFEDIT_BLEND_START, T)``)."""
    return step_index in steps.from_step(INFEDIT_BLEND_START, step_index + 1)


def blend_threshold(alpha: float, thresh_e: float = INFEDIT_THRESH_E,
                    temperature: float = INFEDIT_TEMPERATURE) -> float:
    """tau_e(k) = max(temperature / sqrt(a_k), thresh_e), a_k the cumulative alpha of the current timestep."""
    return max(temperature / alpha**0.5, thresh_e)


def word_mask(maps: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor, threshold: float, height: int,
              width: int) -> torch.Tensor:
    """InfEdit's ``LocalBlend`` mask, (B, 1, height, width) bool.

    ``maps`` (B, N, 77): stored cross maps averaged over layers and heads; ``words`` (B, 77) 0/1; ``lengths`` (B,)
    the target prompt's token count with BOS/EOS. Tokens outside 1 .. L_t - 2 or off the word set are zeroed, the
    rest reduced by a max over tokens, nearest-upsampled, divided by the edit's spatial maximum and thresholded
    (> threshold). An empty word set (the reference's 0/0 = NaN) gives an all-False mask.
    """
    positions = torch.arange(maps.shape[-1], device=maps.device)
    in_prompt = (positions[None] >= 1) & (positions[None] <= lengths.to(maps.device)[:, None] - 2)  # (B, 77)
    weights = words.to(maps.device, maps.dtype) * in_prompt.to(maps.dtype)
    reduced = (maps * weights[:, None, :]).amax(dim=-1)  # (B, N)
    grid = upsample(on_grid(reduced[:, None], height, width), height, width)
    peak = grid.amax(dim=(-2, -1), keepdim=True)
    normalised = grid / torch.where(peak > 0, peak, torch.ones_like(peak))
    return (normalised > threshold) & (peak > 0)


def target_phrase_words(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = MAX_LENGTH,
                        prompts: tuple[str, str] | None = None) -> torch.Tensor:
    """(77,) 0/1: every token of every target phrase in the target prompt (the default local words w_e): the joined
    target phrases, or the whole target prompt when the edit has one."""
    words = torch.zeros(max_length)
    for start, end in edit_layouts(tokenizer, pairs, prompts)[1].spans:
        words[start:end] = 1.0
    return words


def blend_word_vector(tokenizer, pairs: Sequence[tuple[str, str]], spec: str,
                      max_length: int = MAX_LENGTH, prompts: tuple[str, str] | None = None) -> torch.Tensor:
    """(77,) 0/1 in target token positions: ``*`` every target phrase's tokens; else the tokens of every occurrence
    of each space-separated word of ``spec`` among the target prompt's words (the app's blend words)."""
    if spec.strip() == ALL_PHRASE_WORDS:
        return target_phrase_words(tokenizer, pairs, max_length, prompts)
    target = edit_texts(pairs, prompts)[1]
    prompt_words, tokens = split_words(target), word_tokens(tokenizer, target)
    vector = torch.zeros(max_length)
    for word in split_words(spec):
        if word not in prompt_words:
            raise EditInputError(f"blend word {word!r} is not a word of the target prompt {target!r}")
        start = 1  # after BOS
        for w, ids in zip(prompt_words, tokens):
            if w == word:
                vector[start : start + len(ids)] = 1.0
            start += len(ids)
    return vector


class InfEditBlend(LocalBlend):
    """InfEdit's local blend after every step k >= 1 (module docstring): S_s = ref(P_s) and S_m = ref(P_m) summed
    over steps; x_t takes x_m outside the local words' mask, x_s on the mutual-only words' mask, and x_m on the
    mask of the words that are both at k = T - 2."""

    def __init__(self, local_words: torch.Tensor, mutual_words: torch.Tensor, target_lengths: torch.Tensor,
                 num_steps: int, thresh_e: float = INFEDIT_THRESH_E, thresh_m: float = INFEDIT_THRESH_M,
                 temperature: float = INFEDIT_TEMPERATURE):
        super().__init__(steps.from_step(INFEDIT_BLEND_START, num_steps))
        self.local_words, self.mutual_words, self.target_lengths = local_words, mutual_words, target_lengths
        self.thresh_e, self.thresh_m, self.temperature = thresh_e, thresh_m, temperature

    def reduce(self, s_source: torch.Tensor, s_mutual: torch.Tensor) -> torch.Tensor:
        """The refined maps (B, heads, N, 77) averaged over heads: (B, 2, N, 77). The mask averages over layers x
        heads before its max over tokens; averaging heads here and layers in the store is the same (sums are
        linear, and the blend layers of one level share their head count)."""
        return torch.stack([s_source.float().mean(dim=1), s_mutual.float().mean(dim=1)], dim=1)

    def blend(self, state: StepState, maps: torch.Tensor) -> torch.Tensor:
        x_s, x_t, x_m = state.x_s, state.x_t, state.x_m
        h, w = x_t.shape[-2:]
        s_source, s_mutual = maps[:, 0], maps[:, 1]
        w_e, w_m = self.local_words.to(x_t.device), self.mutual_words.to(x_t.device)
        w_me = w_e * w_m
        lengths = self.target_lengths
        tau_e = blend_threshold(state.alpha, self.thresh_e, self.temperature)
        mask_e = word_mask(s_mutual, w_e, lengths, tau_e, h, w)
        mask_m = word_mask(s_source, w_m - w_me, lengths, self.thresh_m, h, w)
        has_local = (w_e > 0).any(dim=-1)[:, None, None, None]
        # Outside the local words' mask the target takes the mutual (source-prompt) latent, not x_s.
        x_t = torch.where(mask_e | ~has_local, x_t, x_m)
        x_t = torch.where(mask_m, x_s, x_t)
        if state.step == state.num_steps - 2:  # the reference's "use_xm" step
            mask_me = word_mask(s_mutual, w_me, lengths, self.thresh_e, h, w)
            x_t = torch.where(mask_me, x_m, x_t)
        return x_t


@dataclass
class InfEditController(StepController):
    """InfEdit's policy and state for B edits: step rules and each edit's refinement mapper; its local blend (the
    controller's ``blend``) reads the word sets. ``recorder``, when set, receives a dict per conditional
    cross-attention call (tests)."""

    schedules: torch.Tensor | list = field(default_factory=list)  # (B,) self-attention injection fraction
    mappers: torch.Tensor | None = None  # (B, 77) long: the source position each target position reads (-1: none)
    alphas: torch.Tensor | None = None  # (B, 77) float: 1 where the target position takes the mapped map
    local_words: torch.Tensor | None = None  # (B, 77) w_e
    mutual_words: torch.Tensor | None = None  # (B, 77) w_m
    target_lengths: torch.Tensor | None = None  # (B,) target token count with BOS/EOS
    cross_replace: float = INFEDIT_CROSS_REPLACE
    thresh_e: float = INFEDIT_THRESH_E
    thresh_m: float = INFEDIT_THRESH_M
    temperature: float = INFEDIT_TEMPERATURE
    recorder: Recorder | None = None
    injection_steps: steps.StepSets = field(init=False, repr=False)
    cross_steps: frozenset = field(init=False, repr=False)

    def __post_init__(self):
        b = len(self.schedules)
        for name in ("mappers", "alphas", "local_words", "mutual_words"):
            value = getattr(self, name)
            if value is None or tuple(value.shape) != (b, MAX_LENGTH):
                raise ValueError(f"{name} of shape {None if value is None else tuple(value.shape)} for {b} edits")
        # Every step rule computed once, exactly, before the loop.
        self.injection_steps = steps.StepSets(steps.per_edit(steps.exceeds, self.schedules, self.num_steps))
        self.cross_steps = steps.reaches(self.cross_replace, self.num_steps)
        if self.blend is None:
            self.blend = InfEditBlend(self.local_words, self.mutual_words, self.target_lengths, self.num_steps,
                                      self.thresh_e, self.thresh_m, self.temperature)

    @classmethod
    def from_pairs(cls, tokenizer, pairs: Sequence[Sequence[tuple[str, str]]], num_steps: int, schedules,
                   source_embeds: torch.Tensor, target_embeds: torch.Tensor, *, aligner: str = INFEDIT_ALIGNER,
                   local_words: str = ALL_PHRASE_WORDS, mutual_words: str = "",
                   prompts: Sequence[tuple[str, str] | None] | None = None, **kwargs) -> "InfEditController":
        """The controller of B edits given by their (source, target) phrase pairs, optionally their whole marked
        prompts (``prompts``, None per edit that has none), and the text-encoder outputs (B, 77, D) of their source
        and target prompts (for the aligner's cosine extension)."""
        if not len(pairs) == len(schedules) == source_embeds.shape[0] == target_embeds.shape[0]:
            raise ValueError(f"{len(pairs)} edits' pairs, {len(schedules)} schedules, {source_embeds.shape[0]} "
                             f"source and {target_embeds.shape[0]} target encodings")
        prompts = list(prompts) if prompts else [None] * len(pairs)
        mappers, alphas, lengths = [], [], []
        for p, w, src, tgt in zip(pairs, prompts, source_embeds, target_embeds):
            source_text, target_text = edit_texts(p, w)
            source_ids = prompt_ids(tokenizer, source_text)
            target_ids = prompt_ids(tokenizer, target_text)
            mapper, alpha = infedit_refinement_mapper(source_ids, target_ids, src.float().cpu(), tgt.float().cpu(),
                                                      order=aligner)
            mappers.append(mapper)
            alphas.append(alpha)
            lengths.append(len(target_ids))
        return cls(num_steps, schedules=schedules, mappers=torch.stack(mappers), alphas=torch.stack(alphas),
                   local_words=torch.stack([blend_word_vector(tokenizer, p, local_words, prompts=w)
                                            for p, w in zip(pairs, prompts)]),
                   mutual_words=torch.stack([blend_word_vector(tokenizer, p, mutual_words, prompts=w)
                                             for p, w in zip(pairs, prompts)]),
                   target_lengths=torch.tensor(lengths), **kwargs)

    def cross_replacing(self) -> bool:
        return self.step_index in self.cross_steps

    def injection_mask(self, device) -> torch.Tensor | bool:
        """``True``/``False`` when every edit agrees, else a (B, 1, 1, 1) bool tensor on ``device``."""
        return self.injection_steps.mask(self.step_index, device)

    def refine(self, p_branch: torch.Tensor, p_target: torch.Tensor) -> torch.Tensor:
        """ref(P_x) = a * P_x[..., mapper] + (1 - a) * P_t for (B, heads, N, 77) maps."""
        mappers = self.on("mappers", self.mappers.clamp(min=0), p_branch.device)
        alphas = self.on("alphas", self.alphas, p_branch.device, p_branch.dtype)[:, None, None, :]
        index = mappers[:, None, None, :].expand(*p_branch.shape[:-1], -1)
        return alphas * torch.gather(p_branch, -1, index) + (1 - alphas) * p_target


class InfEditSelfAttention(AttentionProcessor):
    """Self-attention of the three branches with InfEdit's Q/K/V substitution in both triples."""

    layout = THREE_BRANCHES

    def __init__(self, controller: InfEditController):
        self.controller = controller

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        inject = self.controller.injection_mask(q.device)
        qs, ks, vs = self.layout.chunks(q), self.layout.chunks(k), self.layout.chunks(v)
        # target: the source's maps while injecting, else its own; always its own values
        take_source_maps_of_chunks(self.layout, qs, ks, inject)
        for conditional in BOTH_HALVES:
            s, t, m = (self.layout.chunk(b, conditional) for b in ("source", "target", "mutual"))
            # mutual: the source's keys and values, the target's queries (the source's while injecting)
            qs[m], ks[m], vs[m] = qs[t], ks[s], vs[s]
        return attention(torch.cat(qs), torch.cat(ks), torch.cat(vs))


class InfEditCrossAttention(BlendLayerCrossAttention):
    """Cross-attention whose conditional target chunk, while replacing, uses ref(P_s); stores ref(P_s) and ref(P_m)
    at blend layers."""

    layout = THREE_BRANCHES
    controller: InfEditController

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = cross_attention_qkv(attn, hidden_states, encoder_hidden_states)
        ctl = self.controller
        replace = ctl.cross_replacing()
        if not (replace or self.store or ctl.recorder is not None):
            return attention(q, k, v)
        b = self.layout.edits(q)
        split = b * self.layout.first_conditional
        plain = F.scaled_dot_product_attention(q[:split], k[:split], v[:split])  # the unconditional triple
        p_source, p_target, p_mutual = (probabilities(attn, q[split + i * b: split + (i + 1) * b],
                                                      k[split + i * b: split + (i + 1) * b]) for i in range(3))
        refined_source = ctl.refine(p_source, p_target)
        p_used = refined_source if replace else p_target
        if self.store:
            # Both stored maps are refined with the target's own maps, whatever the replacement state.
            ctl.blend.add(self.layer, refined_source, ctl.refine(p_mutual, p_target))
        if ctl.recorder is not None:
            ctl.recorder({"step": ctl.step_index, "layer": self.layer, "replacing": replace, "source": p_source,
                          "target": p_target, "mutual": p_mutual, "used": p_used})
        cond = torch.cat([p_source, p_used, p_mutual]).to(v.dtype) @ v[split:]
        return from_heads(torch.cat([plain, cond]))


def infedit_processors(controller: InfEditController, blocks: Sequence[Layer]):
    """InfEdit's processors on every attention layer; the blend layers are P2P's (level 2, non-mid)."""
    store = blend_layers(blocks)
    return layer_processors(lambda layer: InfEditCrossAttention(controller, layer.index, store=layer.index in store),
                            InfEditSelfAttention(controller))


@dataclass(frozen=True)
class InfEditOptions(Options):
    """InfEdit's published app defaults (params.yaml section ``infedit``); its self-attention schedule is the
    per-type one."""

    section = "infedit"

    cross_replace: float = option(INFEDIT_CROSS_REPLACE, "Cross-attention refinement while c >= (k+1)/T.",
                                  minimum=0.0, maximum=1.0)
    thresh_e: float = option(INFEDIT_THRESH_E, "Local-blend threshold: tau_e = max(0.15 / sqrt(alpha_t), "
                             "thresh_e).", minimum=0.0, maximum=1.0)
    thresh_m: float = option(INFEDIT_THRESH_M, "Mutual-blend threshold.", minimum=0.0, maximum=1.0)
    local_words: str = option(ALL_PHRASE_WORDS, "Local blend words: * = every target phrase's words; else "
                              "space-separated words of the target prompt; '' = none.")
    mutual_words: str = option("", "Mutual blend words, as local_words; '' = none (the app's default).")
    aligner: str = option(INFEDIT_ALIGNER, "The aligner's cosine step: reference (its swapped indices) or intended.",
                          choices=ALIGNER_ORDERS)


@register
class InfEdit(Method):
    name = "infedit"
    label = "InfEdit"
    Options = InfEditOptions

    def prepare(self, batch: EditBatch) -> MethodRun:
        opt = self.options
        conditioning = joined_conditioning(batch, mutual=True)
        controller = InfEditController.from_pairs(
            batch.tokenizer, [list(p) for p in batch.pairs], batch.num_steps, list(batch.schedules),
            conditioning.source, conditioning.target, aligner=opt.aligner, local_words=opt.local_words,
            mutual_words=opt.mutual_words, cross_replace=opt.cross_replace, thresh_e=opt.thresh_e,
            thresh_m=opt.thresh_m, prompts=batch.edit_prompts())
        return MethodRun(conditioning, controller, infedit_processors(controller, batch.blocks),
                         records=[{"background_blending": False}] * len(batch))
