"""MasaCtrl (``masactrl``): mutual self-attention control (docs/baselines.md §3).

From a start step and in transformer blocks from a start layer on (its defaults: step 4, layer 10 of SD-1.5's 16
blocks, counted in forward order), the target's queries attend to the source branch's keys and values, in the
unconditional and the conditional half; cross-attention is plain. Only the target prompt: the source branch is
conditioned on the empty prompt. No masks, no blending.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ... import steps
from ...options import Options, option
from ...processors import TWO_BRANCHES, AttentionProcessor, PlainAttention, attention, self_attention_qkv
from ...steps import StepController
from ..base import EditBatch, Method, MethodRun, register
from ..shared import joined_conditioning, layer_processors

MASACTRL_START_STEP = 4
MASACTRL_START_LAYER = 10


@dataclass
class MasaCtrlController(StepController):
    """MasaCtrl's policy: mutual self-attention from ``start_step`` on, in blocks ``start_layer`` and later."""

    start_step: int = MASACTRL_START_STEP
    start_layer: int = MASACTRL_START_LAYER
    active_steps: frozenset = field(init=False, repr=False)

    def __post_init__(self):
        self.active_steps = steps.from_step(self.start_step, self.num_steps)

    def active(self, layer: int) -> bool:
        return self.step_index in self.active_steps and layer >= self.start_layer


class MutualSelfAttention(AttentionProcessor):
    """Self-attention in which, when active, the target branch's queries attend to the source's keys and values."""

    layout = TWO_BRANCHES

    def __init__(self, controller: MasaCtrlController, layer: int):
        self.controller = controller
        self.layer = layer

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        if self.controller.active(self.layer):
            ks, vs = self.layout.chunks(k), self.layout.chunks(v)
            for src, tgt in self.layout.pairs("source", "target"):
                ks[tgt], vs[tgt] = ks[src], vs[src]
            k, v = torch.cat(ks), torch.cat(vs)
        return attention(q, k, v)


@dataclass(frozen=True)
class MasaCtrlOptions(Options):
    """MasaCtrl's published defaults (params.yaml section ``masactrl``; blocks counted in forward order)."""

    section = "masactrl"

    start_step: int = option(MASACTRL_START_STEP, "The first step of mutual self-attention.", minimum=0)
    start_layer: int = option(MASACTRL_START_LAYER, "The first transformer block (forward order) with it.",
                              minimum=0)


@register
class MasaCtrl(Method):
    name = "masactrl"
    label = "MasaCtrl"
    Options = MasaCtrlOptions

    def prepare(self, batch: EditBatch) -> MethodRun:
        controller = MasaCtrlController(batch.num_steps, self.options.start_step, self.options.start_layer)
        plain = PlainAttention()
        return MethodRun(joined_conditioning(batch, source=False), controller,
                         layer_processors(plain, lambda layer: MutualSelfAttention(controller, layer.index)),
                         records=[{"background_blending": False}] * len(batch))
