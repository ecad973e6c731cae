"""Baselines on the shared sampler: Free-Prompt-Editing, MasaCtrl, Prompt-to-Prompt and InfEdit.

- ``fpe`` (Free-Prompt-Editing): in the conditional branch, the target's self-attention uses the source's queries
  and keys with its own values (the source's self-attention *maps*), in the blocks below the highest resolution
  (the reference's "<= 32x32 queries" at 512^2, i.e. level >= 1) and for steps k < floor(0.8 T) (its published
  real-image fraction; the per-type schedule is shared with P2P and InfEdit only); cross-attention is plain.
  Only the target prompt: the source branch is conditioned on the empty prompt.
- ``masactrl`` (mutual self-attention control): from a start step and in transformer blocks from a start layer
  on (its defaults: step 4, layer 10 of SD-1.5's 16 blocks), the target's queries attend to the source branch's
  keys and values; cross-attention is plain. Only the target prompt.

- ``p2p`` (Prompt-to-Prompt, ``p2p.py``): the source branch takes the joined source phrases; the target's
  cross-attention maps are the source's (replaced or refined through P2P's token mapper) for k < floor(0.8 (T+1)),
  and its self-attention maps the source's at level >= 2 for k < floor(T s), s the per-type schedule. It needs the
  tokenizer and each edit's pairs to build its mappers.
- ``infedit`` (InfEdit, ``infedit.py``): a third, mutual branch on the source prompt; self-attention Q/K/V
  substitution in every layer and both triples, cross-attention refinement for c >= (k+1)/T (c = 0.7), and a local
  blend of x_t with the mutual latent after every step k >= 1. Besides the tokenizer and the pairs it needs the
  text-encoder outputs of both prompts (its aligner's cosine step), and the sampler's ``mutual_cond``.

None uses masks, object-restricted embeddings or background blending.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import steps
from ..attention import (
    SOURCE_TARGET_PAIRS, TARGET_COND, EditController, RegionGuidedCrossAttention, _chunks, _from_heads, _ProcessorBase,
    block_levels, install_processors,
)
from .infedit import (
    INFEDIT_ALIGNER, INFEDIT_CROSS_REPLACE, INFEDIT_THRESH_E, INFEDIT_THRESH_M, InfEditController,
    install_infedit_processors,
)
from .p2p import P2P_CROSS_REPLACE, P2P_LOCAL_BLEND, PromptToPromptController, install_p2p_processors

MASACTRL_START_STEP = 4
MASACTRL_START_LAYER = 10
FPE_SELF_REPLACE = 0.8
FPE_MIN_LEVEL = 1
SOURCE_COND = 2


@dataclass
class MasaCtrlController:
    """MasaCtrl's policy: mutual self-attention from ``start_step`` on, in blocks ``start_layer`` and later."""

    num_steps: int
    start_step: int = MASACTRL_START_STEP
    start_layer: int = MASACTRL_START_LAYER
    step_index: int = 0
    active_steps: frozenset = field(init=False, repr=False)

    def __post_init__(self):
        self.active_steps = steps.from_step(self.start_step, self.num_steps)

    def begin_step(self, step_index: int) -> None:
        self.step_index = step_index

    def active(self, layer: int) -> bool:
        return self.step_index in self.active_steps and layer >= self.start_layer


@dataclass
class FreePromptController:
    """FPE's policy: self-attention map replacement for steps k < floor(fraction * T), at levels >= ``min_level``."""

    num_steps: int
    fraction: float = FPE_SELF_REPLACE
    min_level: int = FPE_MIN_LEVEL
    step_index: int = 0
    active_steps: frozenset = field(init=False, repr=False)

    def __post_init__(self):
        self.active_steps = steps.below_floor(self.fraction, self.num_steps)

    def begin_step(self, step_index: int) -> None:
        self.step_index = step_index

    def active(self, level: int) -> bool:
        return self.step_index in self.active_steps and level >= self.min_level


class FreePromptSelfAttention(_ProcessorBase):
    """Self-attention whose conditional target chunk, when active, takes the conditional source chunk's Q and K."""

    def __init__(self, controller: FreePromptController, level: int):
        super().__init__(controller)
        self.level = level

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self.self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        if self.controller.active(self.level):
            qs, ks = _chunks(q), _chunks(k)
            qs[TARGET_COND], ks[TARGET_COND] = qs[SOURCE_COND], ks[SOURCE_COND]
            q, k = torch.cat(qs), torch.cat(ks)
        return _from_heads(F.scaled_dot_product_attention(q, k, v))


class MutualSelfAttention(_ProcessorBase):
    """Self-attention in which, when active, the target branch's queries attend to the source's keys and values."""

    def __init__(self, controller: MasaCtrlController, layer: int):
        super().__init__(controller)
        self.layer = layer

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self.self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        if self.controller.active(self.layer):
            ks, vs = _chunks(k), _chunks(v)
            for src, tgt in SOURCE_TARGET_PAIRS:
                ks[tgt], vs[tgt] = ks[src], vs[src]
            k, v = torch.cat(ks), torch.cat(vs)
        return _from_heads(F.scaled_dot_product_attention(q, k, v))


@dataclass(frozen=True)
class Baseline:
    """How a baseline conditions the two branches and which processors it installs."""

    name: str
    uses_source_prompt: bool

    def controller(self, num_steps: int, schedules: torch.Tensor, *, masactrl_start_step: int = MASACTRL_START_STEP,
                   masactrl_start_layer: int = MASACTRL_START_LAYER, fpe_self_replace: float = FPE_SELF_REPLACE,
                   tokenizer=None, pairs=None, p2p_cross_replace: float = P2P_CROSS_REPLACE,
                   p2p_local_blend: bool = P2P_LOCAL_BLEND, source_embeds=None, target_embeds=None,
                   infedit_cross_replace: float = INFEDIT_CROSS_REPLACE, infedit_thresh_e: float = INFEDIT_THRESH_E,
                   infedit_thresh_m: float = INFEDIT_THRESH_M, infedit_aligner: str = INFEDIT_ALIGNER):
        """``pairs``: each edit's (source phrase, target phrase) pairs; with ``tokenizer``, needed by p2p and
        infedit. ``source_embeds``/``target_embeds`` (B, 77, D): the encodings of the joined prompts (infedit)."""
        if self.name == "p2p":
            if tokenizer is None or pairs is None:
                raise ValueError("p2p builds its token mappers from the prompts: pass tokenizer= and pairs= (each "
                                 "edit's (source, target) phrase pairs)")
            return PromptToPromptController.from_pairs(tokenizer, pairs, num_steps, schedules,
                                                       cross_replace=p2p_cross_replace, local_blend=p2p_local_blend)
        if self.name == "infedit":
            if tokenizer is None or pairs is None or source_embeds is None or target_embeds is None:
                raise ValueError("infedit builds its token mappers from the prompts and their encodings: pass "
                                 "tokenizer=, pairs=, source_embeds= and target_embeds=")
            return InfEditController.from_pairs(tokenizer, pairs, num_steps, schedules, source_embeds, target_embeds,
                                                aligner=infedit_aligner, cross_replace=infedit_cross_replace,
                                                thresh_e=infedit_thresh_e, thresh_m=infedit_thresh_m)
        if self.name == "fpe":
            return FreePromptController(num_steps, fpe_self_replace)
        if self.name == "masactrl":
            return MasaCtrlController(num_steps, masactrl_start_step, masactrl_start_layer)
        raise ValueError(f"unknown baseline {self.name!r}")

    def install(self, unet, controller) -> dict:
        # Without masks RGB-CAM's processor is plain cross-attention (SDPA).
        plain_cross = RegionGuidedCrossAttention(EditController(num_steps=1, schedules=torch.zeros(1), rgb_cam=False))
        if self.name == "fpe":
            levels = block_levels(unet)
            return install_processors(
                unet, lambda is_cross, layer: plain_cross if is_cross else FreePromptSelfAttention(controller,
                                                                                                   levels[layer]))
        if self.name == "p2p":
            return install_p2p_processors(unet, controller)
        if self.name == "infedit":
            return install_infedit_processors(unet, controller)
        if self.name == "masactrl":
            return install_processors(
                unet, lambda is_cross, layer: plain_cross if is_cross else MutualSelfAttention(controller, layer))
        raise ValueError(f"unknown baseline {self.name!r}")


BASELINES: dict[str, Baseline] = {
    "fpe": Baseline("fpe", uses_source_prompt=False),
    "masactrl": Baseline("masactrl", uses_source_prompt=False),
    "p2p": Baseline("p2p", uses_source_prompt=True),
    "infedit": Baseline("infedit", uses_source_prompt=True),
}
