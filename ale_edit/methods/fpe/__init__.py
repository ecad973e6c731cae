"""Free-Prompt-Editing (``fpe``): self-attention map replacement (docs/baselines.md §4).

In the conditional branch, the target's self-attention uses the source's queries and keys with its own values
(the source's self-attention *maps*), in the blocks below the highest resolution (the reference's "<= 32x32
queries" at 512^2, i.e. level >= 1) and for steps k < floor(0.8 T) (its published real-image fraction; the
per-type schedule is shared with ALE, P2P and InfEdit only); cross-attention is plain. Only the target prompt: the
source branch is conditioned on the empty prompt. No masks, no blending.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ... import steps
from ...options import Options, option
from ...processors import TWO_BRANCHES, AttentionProcessor, PlainAttention, attention, self_attention_qkv
from ...steps import StepController
from ..base import EditBatch, Method, MethodRun, register
from ..shared import CONDITIONAL, joined_conditioning, layer_processors, take_source_maps

FPE_SELF_REPLACE = 0.8
FPE_MIN_LEVEL = 1


@dataclass
class FreePromptController(StepController):
    """FPE's policy: self-attention map replacement for steps k < floor(fraction * T), at levels >= ``min_level``."""

    fraction: float = FPE_SELF_REPLACE
    min_level: int = FPE_MIN_LEVEL
    active_steps: frozenset = field(init=False, repr=False)

    def __post_init__(self):
        self.active_steps = steps.below_floor(self.fraction, self.num_steps)

    def active(self, level: int) -> bool:
        return self.step_index in self.active_steps and level >= self.min_level


class FreePromptSelfAttention(AttentionProcessor):
    """Self-attention whose conditional target chunk, when active, takes the conditional source chunk's Q and K."""

    layout = TWO_BRANCHES

    def __init__(self, controller: FreePromptController, level: int):
        self.controller = controller
        self.level = level

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        if self.controller.active(self.level):
            q, k = take_source_maps(self.layout, q, k, True, CONDITIONAL)
        return attention(q, k, v)


@dataclass(frozen=True)
class FreePromptOptions(Options):
    """Free-Prompt-Editing's published real-image default (params.yaml section ``fpe``)."""

    section = "fpe"

    self_replace: float = option(FPE_SELF_REPLACE, "Fraction of steps with self-attention map replacement.",
                                 minimum=0.0, maximum=1.0)


@register
class FreePromptEditing(Method):
    name = "fpe"
    label = "FPE"
    Options = FreePromptOptions

    def prepare(self, batch: EditBatch) -> MethodRun:
        controller = FreePromptController(batch.num_steps, self.options.self_replace)
        plain = PlainAttention()
        return MethodRun(joined_conditioning(batch, source=False), controller,
                         layer_processors(plain, lambda layer: FreePromptSelfAttention(controller, layer.level)),
                         records=[{"background_blending": False}] * len(batch))
