"""Prompt-to-Prompt (``p2p``) on the virtual-inversion sampler (docs/baselines.md §2).

The source branch is conditioned on the joined source phrases, the target branch on the joined target phrases
(" and " between phrases); an edit that carries whole prompts (PIE-Bench) is conditioned, aligned and blended on
those, as P2P is run on PIE-Bench. Only the *conditional* chunks are edited, as in P2P, whose controller sees the second
half of the batch; the unconditional chunks and the source branch always run plain attention.

- **Cross-attention** (every cross-attention layer, target-conditional chunk): while k < floor((T + 1) c) (P2P's
  time-word alphas have T + 1 rows; c = ``P2P_CROSS_REPLACE`` = 0.8, i.e. k = 0..11 of 15), the target's
  probabilities become the source-conditional chunk's, carried into the target's token order:
  - *replace* (every (source, target) pair has the same number of space-separated words; P2P's own check on the
    prompts, made per pair so that words line up; on whole prompts, P2P's check itself): P~_t = P_s M with P2P's
    replacement matrix;
  - *refine* (otherwise): P~_t[..., n] = a[n] P_s[..., mapper[n]] + (1 - a[n]) P_t[..., n] with P2P's global
    token alignment (unaligned target tokens keep their own maps).
  Both are one form here, P~_t = P_s M + keep * P_t (refine: M[mapper[n], n] = a[n], keep = 1 - a; replace:
  keep = 0), so a batch may mix them. The output is P~_t V_t with the target's own values. Probabilities are
  computed in fp32 (77 keys) and only while something needs them.
- **Self-attention** (target-conditional chunk, blocks of level >= ``P2P_SELF_MIN_LEVEL`` = 2, which is P2P's
  "<= 16x16 queries" at 512^2; see the level rule in docs/baselines.md §0): while k < floor(T s) (P2P's
  ``int(num_steps * self_replace_steps)``; s = the edit's per-type schedule, shared with ALE and InfEdit), the
  target's maps are the source's: softmax(Q_s K_s^T) V_t = SDPA(Q_s, K_s, V_t). No probabilities materialised.
- **Local blend** (optional, off by default as in P2P, ``P2P_LOCAL_BLEND``): the running sum over steps of the
  cross maps (source: P_s, target: the post-edit P~_t) at the non-mid blocks of level 2 (SD-1.5 blocks 4, 5, 7,
  8, 9; on a shallower UNet its deepest non-mid level), weighted-summed over the phrase tokens (source phrases in
  the source prompt, target phrases in the target prompt), averaged over layers and heads, 3x3 max-pooled,
  nearest-upsampled, divided by its maximum and thresholded at ``P2P_BLEND_THRESHOLD`` = 0.3; the union M of
  both masks keeps the target: x_t <- x_s outside M, after each step k with k + 1 > floor(0.2 T) (k >= 3).

Not implemented: P2P's per-word cross-replace dictionaries and the equalizer (ALE-Bench needs neither), and the
literal pixel-count layer rule (only the level rule). Guidance is the sampler's (1 / 2), not P2P's CFG 7.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from ... import steps
from ...attention_maps import Recorder
from ...options import Options, option
from ...processors import (
    TWO_BRANCHES, AttentionProcessor, Layer, attention, cross_attention_qkv, from_heads, probabilities,
    self_attention_qkv,
)
from ...sampler import StepState
from ...steps import StepController
from ...text import edit_layouts, edit_texts
from ..base import EditBatch, Method, MethodRun, register
from ..seq_aligner import MAX_LENGTH, prompt_ids, refinement_mapper, replacement_mapper, split_words, word_tokens
from ..shared import (
    CONDITIONAL, BlendLayerCrossAttention, LocalBlend, blend_layers, joined_conditioning, layer_processors, on_grid,
    take_source_maps, upsample,
)

P2P_CROSS_REPLACE = 0.8  # the notebook's cross_replace_steps (Replace and Refine examples)
P2P_SELF_MIN_LEVEL = 2  # "<= 16x16 queries" at 512^2
P2P_LOCAL_BLEND = False  # P2P's controllers default to local_blend=None
P2P_BLEND_THRESHOLD = 0.3  # LocalBlend's th[0]
P2P_BLEND_START = 0.2  # LocalBlend's start_blend: blend after step k iff k + 1 > floor(0.2 T)
P2P_BLEND_POOL = 1  # LocalBlend's k: a (2k+1) x (2k+1) max pool


def cross_replace_active(fraction, step_index: int, num_steps: int) -> bool:
    """P2P's cross replacement at step k: k < floor((T + 1) * fraction) (exactly: ``steps.below_floor``)."""
    return step_index in steps.below_floor(fraction, num_steps + 1, num_steps)


def self_replace_active(fraction, step_index: int, num_steps: int) -> bool:
    """P2P's self replacement at step k: k < floor(T * fraction), on the fraction's decimal value exactly, so a
    float32 schedule (0.6 -> 0.60000002) gives the step count of the 0.6 P2P would see."""
    return step_index in steps.below_floor(fraction, num_steps)


def blend_active(start, step_index: int, num_steps: int) -> bool:
    """P2P's local blend after step k: k + 1 > floor(start * T) (exactly: ``steps.after_floor``)."""
    return step_index in steps.after_floor(start, num_steps)


@dataclass(frozen=True)
class PromptAlignment:
    """How one edit's target cross-attention maps are built from the source's: P~ = P_s @ matrix + keep * P_t."""

    mode: str  # "replace" or "refine"
    source_prompt: str
    target_prompt: str
    matrix: torch.Tensor  # (77, 77), [source position, target position]
    keep: torch.Tensor  # (77,), weight of the target's own map
    mapper: torch.Tensor | None = None  # refine: (77,) source position per target position, -1 for none
    alphas: torch.Tensor | None = None  # refine: (77,) 1 where aligned


def uses_replacement(pairs: Sequence[tuple[str, str]], prompts: tuple[str, str] | None = None) -> bool:
    """Replace iff every (source, target) pair has the same number of space-separated words; for an edit with
    whole prompts, iff its two prompts have (P2P's own check)."""
    if prompts is not None:
        source, target = edit_texts(pairs, prompts)
        return len(split_words(source)) == len(split_words(target))
    return all(len(split_words(s)) == len(split_words(t)) for s, t in pairs)


def align_prompts(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = MAX_LENGTH,
                  prompts: tuple[str, str] | None = None) -> PromptAlignment:
    """P2P's mapper between the source and the target prompt of one edit: its joined phrases, or its whole
    prompts when it has them."""
    source, target = edit_texts(pairs, prompts)
    if uses_replacement(pairs, prompts):
        matrix = replacement_mapper(word_tokens(tokenizer, source), word_tokens(tokenizer, target), max_length)
        return PromptAlignment("replace", source, target, matrix, torch.zeros(max_length))
    mapper, alphas = refinement_mapper(prompt_ids(tokenizer, source), prompt_ids(tokenizer, target), max_length)
    matrix = torch.zeros(max_length, max_length)
    positions = torch.arange(max_length)
    matrix[mapper.clamp(min=0), positions] = alphas  # unaligned targets (mapper -1, alpha 0) add nothing
    return PromptAlignment("refine", source, target, matrix, 1.0 - alphas, mapper, alphas)


def blend_words(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = MAX_LENGTH,
                prompts: tuple[str, str] | None = None) -> torch.Tensor:
    """(2, 77) 0/1: the tokens of every source phrase in the source prompt, of every target phrase in the target
    (the phrases' own positions, in the whole prompts when the edit has them)."""
    words = torch.zeros(2, max_length)
    for row, layout in enumerate(edit_layouts(tokenizer, pairs, prompts)):
        for start, end in layout.spans:
            words[row, start:end] = 1.0
    return words


class PromptToPromptBlend(LocalBlend):
    """P2P's ``LocalBlend``: x_t <- x_s outside the union M of the source words' mask (on the source maps) and the
    target words' mask (on the edited target maps), after the steps k + 1 > floor(start T)."""

    def __init__(self, words: torch.Tensor, num_steps: int, threshold: float = P2P_BLEND_THRESHOLD,
                 start: float = P2P_BLEND_START):
        super().__init__(steps.after_floor(start, num_steps))
        self.words = words  # (B, 2, 77)
        self.threshold = threshold

    def reduce(self, p_source: torch.Tensor, p_target: torch.Tensor) -> torch.Tensor:
        """Per branch, the head-mean of the word-weighted sum over tokens, (B, 2, N)."""
        words = self.words.to(p_source.device, torch.float32)
        heads = p_source.shape[1]
        return torch.stack([
            torch.einsum("bhnt,bt->bn", p_source.float(), words[:, 0]),
            torch.einsum("bhnt,bt->bn", p_target.float(), words[:, 1]),
        ], dim=1) / heads

    def mask(self, height: int, width: int, maps: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, height, width) bool: the union of the source-word and the target-word masks."""
        maps = self.store.mean() if maps is None else maps  # (B, 2, N): mean over layers (and heads)
        k = P2P_BLEND_POOL
        grid = F.max_pool2d(on_grid(maps, height, width), (2 * k + 1, 2 * k + 1), (1, 1), padding=(k, k))
        grid = upsample(grid, height, width)
        peak = grid.amax(dim=(-2, -1), keepdim=True)
        # An empty word set gives 0/0 in the reference, NaN > th = False: say so without dividing.
        masks = (grid > self.threshold * peak) & (peak > 0)
        return masks.any(dim=1, keepdim=True)

    def blend(self, state: StepState, maps: torch.Tensor) -> torch.Tensor:
        mask = self.mask(*state.x_t.shape[-2:], maps).to(state.x_t.device)
        return torch.where(mask, state.x_t, state.x_s)


@dataclass
class PromptToPromptController(StepController):
    """P2P's policy for B edits: which steps replace cross- and self-attention, and each edit's mapper; the local
    blend is the controller's ``blend``. ``recorder``, when set, receives a dict per cross-attention call."""

    schedules: torch.Tensor | list = field(default_factory=list)  # (B,) self-replacement fraction of each edit
    matrices: torch.Tensor | None = None  # (B, 77, 77)
    keep: torch.Tensor | None = None  # (B, 77)
    cross_replace: float = P2P_CROSS_REPLACE
    min_level: int = P2P_SELF_MIN_LEVEL
    modes: tuple[str, ...] = ()
    recorder: Recorder | None = None
    self_steps: steps.StepSets = field(init=False, repr=False)
    cross_steps: frozenset = field(init=False, repr=False)

    def __post_init__(self):
        b = len(self.schedules)
        if self.matrices is None or self.keep is None or self.matrices.shape != (b, MAX_LENGTH, MAX_LENGTH) \
                or self.keep.shape != (b, MAX_LENGTH):
            shapes = [None if t is None else tuple(t.shape) for t in (self.matrices, self.keep)]
            raise ValueError(f"mappers of shapes {shapes[0]} / {shapes[1]} for {b} edits")
        # Every step rule computed once, exactly, before the loop.
        self.self_steps = steps.StepSets(steps.per_edit(steps.below_floor, self.schedules, self.num_steps))
        self.cross_steps = steps.below_floor(self.cross_replace, self.num_steps + 1, self.num_steps)

    @classmethod
    def from_pairs(cls, tokenizer, pairs: Sequence[Sequence[tuple[str, str]]], num_steps: int, schedules, *,
                   cross_replace: float = P2P_CROSS_REPLACE, local_blend: bool = P2P_LOCAL_BLEND,
                   blend_threshold: float = P2P_BLEND_THRESHOLD,
                   prompts: Sequence[tuple[str, str] | None] | None = None, **kwargs) -> "PromptToPromptController":
        """The controller of B edits, each given by its (source phrase, target phrase) pairs and, optionally, its
        whole marked prompts (``prompts``, None per edit that has none)."""
        if len(pairs) != len(schedules):
            raise ValueError(f"{len(pairs)} edits' pairs for {len(schedules)} schedules")
        prompts = list(prompts) if prompts else [None] * len(pairs)
        alignments = [align_prompts(tokenizer, p, prompts=w) for p, w in zip(pairs, prompts)]
        blend = None
        if local_blend:
            blend = PromptToPromptBlend(torch.stack([blend_words(tokenizer, p, prompts=w)
                                                     for p, w in zip(pairs, prompts)]), num_steps, blend_threshold)
        return cls(num_steps, schedules=schedules, matrices=torch.stack([a.matrix for a in alignments]),
                   keep=torch.stack([a.keep for a in alignments]), cross_replace=cross_replace,
                   modes=tuple(a.mode for a in alignments), blend=blend, **kwargs)

    def cross_replacing(self) -> bool:
        return self.step_index in self.cross_steps

    def self_replacing(self) -> torch.Tensor:
        """(B,) bool on the CPU: which edits take the source's self-attention maps at the current step."""
        return self.self_steps.tensor(self.step_index)

    def self_replace_mask(self, device) -> torch.Tensor | bool:
        """``True``/``False`` when every edit agrees, else a (B, 1, 1, 1) bool tensor on ``device``."""
        return self.self_steps.mask(self.step_index, device)

    def edited_cross(self, p_source: torch.Tensor, p_target: torch.Tensor) -> torch.Tensor:
        """P~_t = P_s M + keep * P_t for (B, heads, N, 77) maps of the source- and target-conditional chunks."""
        matrices = self.on("matrices", self.matrices, p_source.device, p_source.dtype)
        keep = self.on("keep", self.keep, p_source.device, p_source.dtype)
        return torch.einsum("bhnw,bwt->bhnt", p_source, matrices) + keep[:, None, None, :] * p_target


class PromptToPromptCrossAttention(BlendLayerCrossAttention):
    """Cross-attention whose target-conditional chunk, while replacing, uses P~_t = P_s M + keep * P_t; at a blend
    layer (``store``) the maps feed the local blend."""

    layout = TWO_BRANCHES
    controller: PromptToPromptController

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = cross_attention_qkv(attn, hidden_states, encoder_hidden_states)
        ctl = self.controller
        replace, store = ctl.cross_replacing(), self.store and ctl.blend is not None
        if not (replace or store or ctl.recorder is not None):
            return attention(q, k, v)
        b = self.layout.edits(q)
        split = b * self.layout.chunk("target", conditional=True)  # the chunks before it: plain, one SDPA call
        plain = F.scaled_dot_product_attention(q[:split], k[:split], v[:split])
        source = slice(b * self.layout.chunk("source", True), b * (self.layout.chunk("source", True) + 1))
        p_source = probabilities(attn, q[source], k[source])
        p_own = probabilities(attn, q[split:], k[split:])
        p_used = ctl.edited_cross(p_source, p_own) if replace else p_own
        if ctl.recorder is not None:
            ctl.recorder({"step": ctl.step_index, "layer": self.layer, "replacing": replace, "source": p_source,
                          "own": p_own, "used": p_used})
        if store:
            ctl.blend.add(self.layer, p_source, p_used)
        target = p_used.to(v.dtype) @ v[split:]
        return from_heads(torch.cat([plain, target]))


class PromptToPromptSelfAttention(AttentionProcessor):
    """Self-attention whose target-conditional chunk, while replacing at a deep enough block, takes the
    source-conditional chunk's maps: SDPA(Q_s, K_s, V_t)."""

    layout = TWO_BRANCHES

    def __init__(self, controller: PromptToPromptController, level: int):
        self.controller = controller
        self.level = level

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        if self.level >= self.controller.min_level:
            q, k = take_source_maps(self.layout, q, k, self.controller.self_replace_mask(q.device), CONDITIONAL)
        return attention(q, k, v)


def p2p_processors(controller: PromptToPromptController, blocks: Sequence[Layer]):
    """The processor of each layer: P2P's cross-attention (storing at the blend layers) and self-attention."""
    store = blend_layers(blocks)
    return layer_processors(
        lambda layer: PromptToPromptCrossAttention(controller, layer.index, store=layer.index in store),
        lambda layer: PromptToPromptSelfAttention(controller, layer.level))


@dataclass(frozen=True)
class PromptToPromptOptions(Options):
    """Prompt-to-Prompt's published defaults (params.yaml section ``p2p``); its self-attention schedule is the
    per-type one."""

    section = "p2p"

    cross_replace: float = option(P2P_CROSS_REPLACE, "Fraction of steps with cross-attention map replacement.",
                                  minimum=0.0, maximum=1.0)
    local_blend: bool = option(P2P_LOCAL_BLEND, "P2P's optional local blend on the phrases' words.")
    blend_threshold: float = option(P2P_BLEND_THRESHOLD, "The local blend's mask threshold (of the map's peak).",
                                    minimum=0.0, maximum=1.0)


@register
class PromptToPrompt(Method):
    name = "p2p"
    label = "P2P"
    Options = PromptToPromptOptions

    def prepare(self, batch: EditBatch) -> MethodRun:
        opt = self.options
        controller = PromptToPromptController.from_pairs(
            batch.tokenizer, [list(p) for p in batch.pairs], batch.num_steps, list(batch.schedules),
            cross_replace=opt.cross_replace, local_blend=opt.local_blend, blend_threshold=opt.blend_threshold,
            prompts=batch.edit_prompts())
        return MethodRun(joined_conditioning(batch), controller, p2p_processors(controller, batch.blocks),
                         records=[{"background_blending": False, "p2p_mode": m} for m in controller.modes])
