"""Prompt-to-Prompt (``p2p``) on the virtual-inversion sampler (docs/baselines.md §2).

The source branch is conditioned on the joined source phrases, the target branch on the joined target phrases
(" and " between phrases). Only the *conditional* chunks are edited, as in P2P, whose controller sees the second
half of the batch; the unconditional chunks and the source branch always run plain attention.

- **Cross-attention** (every cross-attention layer, target-conditional chunk): while k < floor((T + 1) c) (P2P's
  time-word alphas have T + 1 rows; c = ``P2P_CROSS_REPLACE`` = 0.8, i.e. k = 0..11 of 15), the target's
  probabilities become the source-conditional chunk's, carried into the target's token order:
  - *replace* (every (source, target) pair has the same number of space-separated words; P2P's own check on the
    prompts, made per pair so that words line up): P~_t = P_s M with P2P's replacement matrix;
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
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..attention import (
    BRANCHES, TARGET_COND, _chunks, _from_heads, _ProcessorBase, block_levels, install_processors,
    transformer_blocks_in_call_order,
)
from .. import steps
from ..text import JOINER, layout_prompt
from .seq_aligner import (
    MAX_LENGTH, prompt_ids, refinement_mapper, replacement_mapper, split_words, word_tokens,
)

P2P_CROSS_REPLACE = 0.8  # the notebook's cross_replace_steps (Replace and Refine examples)
P2P_SELF_MIN_LEVEL = 2  # "<= 16x16 queries" at 512^2
P2P_LOCAL_BLEND = False  # P2P's controllers default to local_blend=None
P2P_BLEND_THRESHOLD = 0.3  # LocalBlend's th[0]
P2P_BLEND_START = 0.2  # LocalBlend's start_blend: blend after step k iff k + 1 > floor(0.2 T)
P2P_BLEND_LEVEL = 2  # the maps LocalBlend reads: down_cross[2:4] + up_cross[:3], the 16x16 layers at 512^2
P2P_BLEND_POOL = 1  # LocalBlend's k: a (2k+1) x (2k+1) max pool
SOURCE_COND = BRANCHES.index("source_cond")

Recorder = Callable[[dict], None]


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


def uses_replacement(pairs: Sequence[tuple[str, str]]) -> bool:
    """Replace iff every (source, target) pair has the same number of space-separated words."""
    return all(len(split_words(s)) == len(split_words(t)) for s, t in pairs)


def align_prompts(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = MAX_LENGTH) -> PromptAlignment:
    """P2P's mapper between the joined source and the joined target prompt of one edit."""
    source = JOINER.join(s for s, _ in pairs)
    target = JOINER.join(t for _, t in pairs)
    if uses_replacement(pairs):
        matrix = replacement_mapper(word_tokens(tokenizer, source), word_tokens(tokenizer, target), max_length)
        return PromptAlignment("replace", source, target, matrix, torch.zeros(max_length))
    mapper, alphas = refinement_mapper(prompt_ids(tokenizer, source), prompt_ids(tokenizer, target), max_length)
    matrix = torch.zeros(max_length, max_length)
    positions = torch.arange(max_length)
    matrix[mapper.clamp(min=0), positions] = alphas  # unaligned targets (mapper -1, alpha 0) add nothing
    return PromptAlignment("refine", source, target, matrix, 1.0 - alphas, mapper, alphas)


def blend_words(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = MAX_LENGTH) -> torch.Tensor:
    """(2, 77) 0/1: the tokens of every source phrase in the source prompt, of every target phrase in the target."""
    words = torch.zeros(2, max_length)
    for row, phrases in enumerate(([s for s, _ in pairs], [t for _, t in pairs])):
        for start, end in layout_prompt(tokenizer, phrases).spans:
            words[row, start:end] = 1.0
    return words


@dataclass
class PromptToPromptController:
    """P2P's policy for B edits: which steps replace cross- and self-attention, each edit's mapper, and the
    optional local blend's store. ``recorder``, when set, receives a dict per cross-attention call (tests)."""

    num_steps: int
    schedules: torch.Tensor  # (B,) self-replacement fraction of each edit
    matrices: torch.Tensor  # (B, 77, 77)
    keep: torch.Tensor  # (B, 77)
    cross_replace: float = P2P_CROSS_REPLACE
    min_level: int = P2P_SELF_MIN_LEVEL
    words: torch.Tensor | None = None  # (B, 2, 77) local-blend words; None: no local blend
    blend_threshold: float = P2P_BLEND_THRESHOLD
    blend_start: float = P2P_BLEND_START
    modes: tuple[str, ...] = ()
    step_index: int = 0
    recorder: Recorder | None = None
    self_steps: steps.StepSets = field(init=False, repr=False)
    cross_steps: frozenset = field(init=False, repr=False)
    blend_steps: frozenset = field(init=False, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)
    _store: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        b = self.schedules.shape[0]
        if self.matrices.shape != (b, MAX_LENGTH, MAX_LENGTH) or self.keep.shape != (b, MAX_LENGTH):
            raise ValueError(f"mappers of shape {tuple(self.matrices.shape)} / {tuple(self.keep.shape)} for {b} edits")
        # Every step rule computed once, exactly, before the loop.
        self.self_steps = steps.StepSets(steps.per_edit(steps.below_floor, self.schedules, self.num_steps))
        self.cross_steps = steps.below_floor(self.cross_replace, self.num_steps + 1, self.num_steps)
        self.blend_steps = steps.after_floor(self.blend_start, self.num_steps)
        self.begin_step(self.step_index)

    @classmethod
    def from_pairs(cls, tokenizer, pairs: Sequence[Sequence[tuple[str, str]]], num_steps: int,
                   schedules: torch.Tensor, *, cross_replace: float = P2P_CROSS_REPLACE,
                   local_blend: bool = P2P_LOCAL_BLEND, **kwargs) -> "PromptToPromptController":
        """The controller of B edits, each given by its (source phrase, target phrase) pairs."""
        if len(pairs) != schedules.shape[0]:
            raise ValueError(f"{len(pairs)} edits' pairs for {schedules.shape[0]} schedules")
        alignments = [align_prompts(tokenizer, p) for p in pairs]
        return cls(
            num_steps=num_steps,
            schedules=schedules,
            matrices=torch.stack([a.matrix for a in alignments]),
            keep=torch.stack([a.keep for a in alignments]),
            cross_replace=cross_replace,
            words=torch.stack([blend_words(tokenizer, p) for p in pairs]) if local_blend else None,
            modes=tuple(a.mode for a in alignments),
            **kwargs,
        )

    # -- step policy -------------------------------------------------------------------------------------------
    def begin_step(self, step_index: int) -> None:
        self.step_index = step_index
        if step_index == 0:
            self._store = {}

    def cross_replacing(self) -> bool:
        return self.step_index in self.cross_steps

    def self_replacing(self) -> torch.Tensor:
        """(B,) bool on the CPU: which edits take the source's self-attention maps at the current step."""
        return self.self_steps.tensor(self.step_index)

    def self_replace_mask(self, device) -> torch.Tensor | bool:
        """``True``/``False`` when every edit agrees, else a (B, 1, 1, 1) bool tensor on ``device``."""
        return self.self_steps.mask(self.step_index, device)

    @property
    def blending(self) -> bool:
        return self.words is not None

    # -- cross-attention edit -------------------------------------------------------------------------------------
    def _on(self, name: str, tensor: torch.Tensor, device, dtype) -> torch.Tensor:
        key = (name, device, dtype)
        if key not in self._cache:
            self._cache[key] = tensor.to(device=device, dtype=dtype)
        return self._cache[key]

    def edited_cross(self, p_source: torch.Tensor, p_target: torch.Tensor) -> torch.Tensor:
        """P~_t = P_s M + keep * P_t for (B, heads, N, 77) maps of the source- and target-conditional chunks."""
        matrices = self._on("matrices", self.matrices, p_source.device, p_source.dtype)
        keep = self._on("keep", self.keep, p_source.device, p_source.dtype)
        return torch.einsum("bhnw,bwt->bhnt", p_source, matrices) + keep[:, None, None, :] * p_target

    # -- local blend ---------------------------------------------------------------------------------------------
    def accumulate(self, layer: int, p_source: torch.Tensor, p_target: torch.Tensor) -> None:
        """Add this step's maps of one blend layer to the store: per branch, the head-mean of the word-weighted sum
        over tokens, (B, 2, N) (all linear, so this equals P2P's store of full maps reduced at blend time)."""
        words = self._on("words", self.words, p_source.device, torch.float32)
        heads = p_source.shape[1]
        reduced = torch.stack([
            torch.einsum("bhnt,bt->bn", p_source.float(), words[:, 0]),
            torch.einsum("bhnt,bt->bn", p_target.float(), words[:, 1]),
        ], dim=1) / heads
        self._store[layer] = self._store[layer] + reduced if layer in self._store else reduced

    def blend_mask(self, height: int, width: int) -> torch.Tensor:
        """(B, 1, height, width) bool: the union of the source-word and the target-word masks."""
        if not self._store:
            raise RuntimeError("local blend without stored cross-attention maps (no blend layer ran)")
        maps = torch.stack(list(self._store.values())).mean(dim=0)  # (B, 2, N): mean over layers (and heads)
        b, _, n = maps.shape
        scale = (height * width / n) ** 0.5
        gh, gw = round(height / scale), round(width / scale)
        if gh * gw != n:
            raise ValueError(f"cannot place {n} attention queries on a {height}x{width} latent grid")
        k = P2P_BLEND_POOL
        grid = F.max_pool2d(maps.reshape(b, 2, gh, gw), (2 * k + 1, 2 * k + 1), (1, 1), padding=(k, k))
        grid = F.interpolate(grid, size=(height, width), mode="nearest")
        peak = grid.amax(dim=(-2, -1), keepdim=True)
        # An empty word set gives 0/0 in the reference, NaN > th = False: say so without dividing.
        masks = (grid > self.blend_threshold * peak) & (peak > 0)
        return masks.any(dim=1, keepdim=True)

    def after_step(self, k: int, x_s: torch.Tensor, x_t: torch.Tensor, alpha_next: float) -> torch.Tensor:
        """The sampler's hook: P2P's local blend keeps x_s outside the words' mask (when blending is on)."""
        if not self.blending or k not in self.blend_steps:
            return x_t
        mask = self.blend_mask(*x_t.shape[-2:]).to(x_t.device)
        return torch.where(mask, x_t, x_s)


def _probabilities(attn, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return (q.float() @ k.float().transpose(-1, -2) * attn.scale).softmax(dim=-1)


class PromptToPromptCrossAttention(_ProcessorBase):
    """Cross-attention whose target-conditional chunk, while replacing, uses P~_t = P_s M + keep * P_t."""

    def __init__(self, controller: PromptToPromptController, layer: int, store: bool = False):
        super().__init__(controller)
        self.layer = layer
        self.store = store  # a local-blend layer

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self.cross_attention_qkv(attn, hidden_states, encoder_hidden_states)
        ctl = self.controller
        replace, store = ctl.cross_replacing(), self.store and ctl.blending
        if not (replace or store or ctl.recorder is not None):
            return _from_heads(F.scaled_dot_product_attention(q, k, v))
        b = _chunks(q)[0].shape[0]
        split = b * TARGET_COND  # the chunks before the target-conditional one, plain in one SDPA call
        plain = F.scaled_dot_product_attention(q[:split], k[:split], v[:split])
        source = slice(b * SOURCE_COND, b * (SOURCE_COND + 1))
        p_source = _probabilities(attn, q[source], k[source])
        p_own = _probabilities(attn, q[split:], k[split:])
        p_used = ctl.edited_cross(p_source, p_own) if replace else p_own
        if ctl.recorder is not None:
            ctl.recorder({"step": ctl.step_index, "layer": self.layer, "replacing": replace, "source": p_source,
                          "own": p_own, "used": p_used})
        if store:
            ctl.accumulate(self.layer, p_source, p_used)
        target = p_used.to(v.dtype) @ v[split:]
        return _from_heads(torch.cat([plain, target]))


class PromptToPromptSelfAttention(_ProcessorBase):
    """Self-attention whose target-conditional chunk, while replacing at a deep enough block, takes the
    source-conditional chunk's maps: SDPA(Q_s, K_s, V_t)."""

    def __init__(self, controller: PromptToPromptController, level: int):
        super().__init__(controller)
        self.level = level

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self.self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        if self.level >= self.controller.min_level:
            inject = self.controller.self_replace_mask(q.device)
            if inject is not False:
                qs, ks = _chunks(q), _chunks(k)
                for x in (qs, ks):
                    x[TARGET_COND] = (x[SOURCE_COND] if inject is True
                                      else torch.where(inject, x[SOURCE_COND], x[TARGET_COND]))
                q, k = torch.cat(qs), torch.cat(ks)
        return _from_heads(F.scaled_dot_product_attention(q, k, v))


def blend_layers(unet) -> set[int]:
    """The local blend's layers: the non-mid transformer blocks of level ``P2P_BLEND_LEVEL`` (SD-1.5: blocks 4, 5,
    7, 8, 9), or of the deepest non-mid level of a shallower UNet (the tiny test UNet: blocks 1, 3, 4)."""
    names, levels = transformer_blocks_in_call_order(unet), block_levels(unet)
    candidates = [(i, lv) for i, (name, lv) in enumerate(zip(names, levels)) if not name.startswith("mid_block")]
    level = min(P2P_BLEND_LEVEL, max(lv for _, lv in candidates))
    return {i for i, lv in candidates if lv == level}


def install_p2p_processors(unet, controller: PromptToPromptController) -> dict:
    """P2P's processors on every attention layer; returns the previous processors."""
    levels, store = block_levels(unet), blend_layers(unet)
    return install_processors(
        unet,
        lambda is_cross, layer: (PromptToPromptCrossAttention(controller, layer, store=layer in store) if is_cross
                                 else PromptToPromptSelfAttention(controller, levels[layer])),
    )
