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
- **Store and local blend**: at the blend layers (level 2, non-mid; ``p2p.blend_layers``) S_s = ref(P_s) and
  S_m = ref(P_m), both refined with the target's *own* maps, are summed over steps (head-averaged). After every
  step k >= 1 the target latent is blended: outside the mask of the local words on S_m (threshold
  max(0.15 / sqrt(a_k), thresh_e)) x_t takes x_m, on the mask of the mutual-only words on S_s it takes x_s, and
  at k = T - 2 it takes x_m on the mask of the words that are both. x_m is never changed.

Local words: every token of every target phrase (``layout_prompt`` spans); mutual words: none by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..attention import _from_heads, _ProcessorBase, install_processors
from .. import steps
from ..text import JOINER, layout_prompt
from .p2p import blend_layers
from .seq_aligner import ALIGNER_ORDERS, MAX_LENGTH, infedit_refinement_mapper, prompt_ids

INFEDIT_CROSS_REPLACE = 0.7  # the app's cross_replace_steps slider
INFEDIT_THRESH_E = 0.6  # the app's local-blend threshold (LocalBlend's constructor default 0.3 is overridden)
INFEDIT_THRESH_M = 0.6  # the app's mutual-blend threshold
INFEDIT_TEMPERATURE = 0.15  # hard-coded in LocalBlend: tau_e = max(0.15 / sqrt(a_k), thresh_e)
INFEDIT_BLEND_START = 1  # the local blend runs after steps k >= 1
INFEDIT_ALIGNER = "reference"  # the reference's swapped cosine indices; "intended" compares target[p], source[q]
N_CHUNKS = 6
SOURCE, TARGET, MUTUAL = 0, 1, 2  # branch order inside a triple
TRIPLES = ((0, 1, 2), (3, 4, 5))  # (source, target, mutual) chunks: unconditional, conditional
COND = 3  # the first conditional chunk

Recorder = Callable[[dict], None]


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


def _split(x: torch.Tensor) -> list[torch.Tensor]:
    if x.shape[0] % N_CHUNKS:
        raise ValueError(f"batch of {x.shape[0]} is not {N_CHUNKS} chunks of equal size (InfEdit's three branches)")
    return list(x.chunk(N_CHUNKS, dim=0))


def word_mask(maps: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor, threshold: float, height: int,
              width: int) -> torch.Tensor:
    """InfEdit's ``LocalBlend`` mask, (B, 1, height, width) bool.

    ``maps`` (B, N, 77): stored cross maps averaged over layers and heads; ``words`` (B, 77) 0/1; ``lengths`` (B,)
    the target prompt's token count with BOS/EOS. Tokens outside 1 .. L_t - 2 or off the word set are zeroed, the
    rest reduced by a max over tokens, nearest-upsampled, divided by the edit's spatial maximum and thresholded
    (> threshold). An empty word set (the reference's 0/0 = NaN) gives an all-False mask.
    """
    b, n, t = maps.shape
    positions = torch.arange(t, device=maps.device)
    in_prompt = (positions[None] >= 1) & (positions[None] <= lengths.to(maps.device)[:, None] - 2)  # (B, 77)
    weights = words.to(maps.device, maps.dtype) * in_prompt.to(maps.dtype)
    reduced = (maps * weights[:, None, :]).amax(dim=-1)  # (B, N)
    scale = (height * width / n) ** 0.5
    gh, gw = round(height / scale), round(width / scale)
    if gh * gw != n:
        raise ValueError(f"cannot place {n} attention queries on a {height}x{width} latent grid")
    grid = F.interpolate(reduced.reshape(b, 1, gh, gw), size=(height, width), mode="nearest")
    peak = grid.amax(dim=(-2, -1), keepdim=True)
    normalised = grid / torch.where(peak > 0, peak, torch.ones_like(peak))
    return (normalised > threshold) & (peak > 0)


def target_phrase_words(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = MAX_LENGTH) -> torch.Tensor:
    """(77,) 0/1: every token of every target phrase in the joined target prompt (the local words w_e)."""
    words = torch.zeros(max_length)
    for start, end in layout_prompt(tokenizer, [t for _, t in pairs]).spans:
        words[start:end] = 1.0
    return words


@dataclass
class InfEditController:
    """InfEdit's policy and state for B edits: step rules, each edit's refinement mapper, the blend's word sets and
    the cross-map store. ``recorder``, when set, receives a dict per conditional cross-attention call (tests)."""

    num_steps: int
    schedules: torch.Tensor  # (B,) self-attention injection fraction
    mappers: torch.Tensor  # (B, 77) long: the source position each target position reads (-1: none)
    alphas: torch.Tensor  # (B, 77) float: 1 where the target position takes the mapped map
    local_words: torch.Tensor  # (B, 77) w_e
    mutual_words: torch.Tensor  # (B, 77) w_m
    target_lengths: torch.Tensor  # (B,) target token count with BOS/EOS
    cross_replace: float = INFEDIT_CROSS_REPLACE
    thresh_e: float = INFEDIT_THRESH_E
    thresh_m: float = INFEDIT_THRESH_M
    temperature: float = INFEDIT_TEMPERATURE
    step_index: int = 0
    recorder: Recorder | None = None
    injection_steps: steps.StepSets = field(init=False, repr=False)
    cross_steps: frozenset = field(init=False, repr=False)
    blend_steps: frozenset = field(init=False, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)
    _store: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        b = self.schedules.shape[0]
        for name in ("mappers", "alphas", "local_words", "mutual_words"):
            if tuple(getattr(self, name).shape) != (b, MAX_LENGTH):
                raise ValueError(f"{name} of shape {tuple(getattr(self, name).shape)} for {b} edits")
        # Every step rule computed once, exactly, before the loop.
        self.injection_steps = steps.StepSets(steps.per_edit(steps.exceeds, self.schedules, self.num_steps))
        self.cross_steps = steps.reaches(self.cross_replace, self.num_steps)
        self.blend_steps = steps.from_step(INFEDIT_BLEND_START, self.num_steps)
        self.begin_step(self.step_index)

    @classmethod
    def from_pairs(cls, tokenizer, pairs: Sequence[Sequence[tuple[str, str]]], num_steps: int,
                   schedules: torch.Tensor, source_embeds: torch.Tensor, target_embeds: torch.Tensor, *,
                   aligner: str = INFEDIT_ALIGNER, **kwargs) -> "InfEditController":
        """The controller of B edits given by their (source, target) phrase pairs and the text-encoder outputs
        (B, 77, D) of the joined source and target prompts (for the aligner's cosine extension)."""
        if not len(pairs) == schedules.shape[0] == source_embeds.shape[0] == target_embeds.shape[0]:
            raise ValueError(f"{len(pairs)} edits' pairs, {schedules.shape[0]} schedules, {source_embeds.shape[0]} "
                             f"source and {target_embeds.shape[0]} target encodings")
        mappers, alphas, words, lengths = [], [], [], []
        for p, src, tgt in zip(pairs, source_embeds, target_embeds):
            source_ids = prompt_ids(tokenizer, JOINER.join(s for s, _ in p))
            target_ids = prompt_ids(tokenizer, JOINER.join(t for _, t in p))
            mapper, alpha = infedit_refinement_mapper(source_ids, target_ids, src.float().cpu(), tgt.float().cpu(),
                                                      order=aligner)
            mappers.append(mapper)
            alphas.append(alpha)
            words.append(target_phrase_words(tokenizer, p))
            lengths.append(len(target_ids))
        local = torch.stack(words)
        return cls(num_steps=num_steps, schedules=schedules, mappers=torch.stack(mappers), alphas=torch.stack(alphas),
                   local_words=local, mutual_words=torch.zeros_like(local),
                   target_lengths=torch.tensor(lengths), **kwargs)

    # -- step policy -------------------------------------------------------------------------------------------
    def begin_step(self, step_index: int) -> None:
        self.step_index = step_index
        if step_index == 0:
            self._store = {}

    def cross_replacing(self) -> bool:
        return self.step_index in self.cross_steps

    def injection_mask(self, device) -> torch.Tensor | bool:
        """``True``/``False`` when every edit agrees, else a (B, 1, 1, 1) bool tensor on ``device``."""
        return self.injection_steps.mask(self.step_index, device)

    # -- cross-attention refinement ------------------------------------------------------------------------------
    def _on(self, name: str, tensor: torch.Tensor, device, dtype=None) -> torch.Tensor:
        key = (name, device, dtype)
        if key not in self._cache:
            self._cache[key] = tensor.to(device=device, dtype=dtype or tensor.dtype)
        return self._cache[key]

    def refine(self, p_branch: torch.Tensor, p_target: torch.Tensor) -> torch.Tensor:
        """ref(P_x) = a * P_x[..., mapper] + (1 - a) * P_t for (B, heads, N, 77) maps."""
        mappers = self._on("mappers", self.mappers.clamp(min=0), p_branch.device)
        alphas = self._on("alphas", self.alphas, p_branch.device, p_branch.dtype)[:, None, None, :]
        index = mappers[:, None, None, :].expand(*p_branch.shape[:-1], -1)
        return alphas * torch.gather(p_branch, -1, index) + (1 - alphas) * p_target

    # -- store and local blend -------------------------------------------------------------------------------------
    def accumulate(self, layer: int, s_source: torch.Tensor, s_mutual: torch.Tensor) -> None:
        """Add one blend layer's refined maps, (B, heads, N, 77) each, to the running sums over steps, averaged over
        heads. The mask averages over layers x heads before its max over tokens; averaging heads here and layers in
        ``stored_maps`` is the same (sums are linear, and the blend layers of one level share their head count)."""
        maps = torch.stack([s_source.float().mean(dim=1), s_mutual.float().mean(dim=1)], dim=1)  # (B, 2, N, 77)
        self._store[layer] = self._store[layer] + maps if layer in self._store else maps

    def stored_maps(self) -> torch.Tensor:
        """(B, 2, N, 77): S_s and S_m averaged over the blend layers."""
        if not self._store:
            raise RuntimeError("local blend without stored cross-attention maps (no blend layer ran)")
        return torch.stack(list(self._store.values())).mean(dim=0)

    def after_step(self, k: int, x_s: torch.Tensor, x_t: torch.Tensor, alpha_next: float, x_m: torch.Tensor,
                   alpha: float) -> torch.Tensor:
        """The three-branch sampler's hook: InfEdit's local blend of x_t after step k (``alpha`` = a_k)."""
        if k not in self.blend_steps:
            return x_t
        h, w = x_t.shape[-2:]
        maps = self.stored_maps().to(x_t.device)
        s_source, s_mutual = maps[:, 0], maps[:, 1]
        w_e, w_m = self.local_words.to(x_t.device), self.mutual_words.to(x_t.device)
        w_me = w_e * w_m
        lengths = self.target_lengths
        mask_e = word_mask(s_mutual, w_e, lengths, blend_threshold(alpha, self.thresh_e, self.temperature), h, w)
        mask_m = word_mask(s_source, w_m - w_me, lengths, self.thresh_m, h, w)
        has_local = (w_e > 0).any(dim=-1)[:, None, None, None]
        # Outside the local words' mask the target takes the mutual (source-prompt) latent, not x_s.
        x_t = torch.where(mask_e | ~has_local, x_t, x_m)
        x_t = torch.where(mask_m, x_s, x_t)
        if k == self.num_steps - 2:  # the reference's "use_xm" step
            mask_me = word_mask(s_mutual, w_me, lengths, self.thresh_e, h, w)
            x_t = torch.where(mask_me, x_m, x_t)
        return x_t


def _probabilities(attn, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    # fp32 softmax over the 77 keys, as ALE's masked probabilities
    return (q.float() @ k.float().transpose(-1, -2) * attn.scale).softmax(dim=-1)


class InfEditSelfAttention(_ProcessorBase):
    """Self-attention of the three branches with InfEdit's Q/K/V substitution in both triples."""

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self.self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        inject = self.controller.injection_mask(q.device)
        qs, ks, vs = _split(q), _split(k), _split(v)

        def pick(source, own):
            return source if inject is True else own if inject is False else torch.where(inject, source, own)

        for s, t, m in TRIPLES:
            q_t = qs[t]
            # target: the source's maps while injecting, else its own; always its own values
            qs[t], ks[t] = pick(qs[s], q_t), pick(ks[s], ks[t])
            # mutual: the source's keys and values; the source's queries while injecting, else the target's
            qs[m], ks[m], vs[m] = pick(qs[s], q_t), ks[s], vs[s]
        out = F.scaled_dot_product_attention(torch.cat(qs), torch.cat(ks), torch.cat(vs))
        return _from_heads(out)


class InfEditCrossAttention(_ProcessorBase):
    """Cross-attention whose conditional target chunk, while replacing, uses ref(P_s); stores ref(P_s) and ref(P_m)
    at blend layers."""

    def __init__(self, controller: InfEditController, layer: int, store: bool = False):
        super().__init__(controller)
        self.layer = layer
        self.store = store

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self.cross_attention_qkv(attn, hidden_states, encoder_hidden_states)
        ctl = self.controller
        replace = ctl.cross_replacing()
        if not (replace or self.store or ctl.recorder is not None):
            return _from_heads(F.scaled_dot_product_attention(q, k, v))
        b = _split(q)[0].shape[0]
        split = b * COND
        plain = F.scaled_dot_product_attention(q[:split], k[:split], v[:split])  # the unconditional triple
        p_source, p_target, p_mutual = (_probabilities(attn, q[split + i * b: split + (i + 1) * b],
                                                       k[split + i * b: split + (i + 1) * b]) for i in range(3))
        refined_source = ctl.refine(p_source, p_target)
        p_used = refined_source if replace else p_target
        if self.store:
            # Both stored maps are refined with the target's own maps, whatever the replacement state.
            ctl.accumulate(self.layer, refined_source, ctl.refine(p_mutual, p_target))
        if ctl.recorder is not None:
            ctl.recorder({"step": ctl.step_index, "layer": self.layer, "replacing": replace, "source": p_source,
                          "target": p_target, "mutual": p_mutual, "used": p_used})
        cond = torch.cat([p_source, p_used, p_mutual]).to(v.dtype) @ v[split:]
        return _from_heads(torch.cat([plain, cond]))


def install_infedit_processors(unet, controller: InfEditController) -> dict:
    """InfEdit's processors on every attention layer; the blend layers are P2P's (level 2, non-mid)."""
    store = blend_layers(unet)
    self_attention = InfEditSelfAttention(controller)
    return install_processors(
        unet, lambda is_cross, layer: (InfEditCrossAttention(controller, layer, store=layer in store) if is_cross
                                       else self_attention))


__all__ = ["ALIGNER_ORDERS", "INFEDIT_ALIGNER", "INFEDIT_CROSS_REPLACE", "INFEDIT_TEMPERATURE", "INFEDIT_THRESH_E",
           "INFEDIT_THRESH_M", "InfEditController", "InfEditCrossAttention", "InfEditSelfAttention",
           "blend_active", "blend_threshold", "cross_replace_active", "install_infedit_processors",
           "self_inject_active", "target_phrase_words", "word_mask"]
