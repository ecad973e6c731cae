"""Plain (``plain``): the virtual-inversion sampler with no attention control, no masks and no blending.

Every other method is this sampler plus its processors and blends, so ``plain`` is the reference they are measured
against (``benchmarks/edit_speed.py``) and the baseline of what the sampler alone does to an image.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...options import Options, option
from ...processors import PlainAttention
from ...steps import StepController
from ..base import EditBatch, Method, MethodRun, register
from ..shared import joined_conditioning, layer_processors


@dataclass(frozen=True)
class PlainOptions(Options):
    """Options of the plain sampler (params.yaml section ``plain``)."""

    section = "plain"

    source_prompt: bool = option(True, "Condition the source branch on the source prompt (the joined source "
                                 "phrases, or an edit's whole source prompt) (else on the empty prompt).")


@register
class Plain(Method):
    name = "plain"
    label = "Plain LCM"
    Options = PlainOptions

    def prepare(self, batch: EditBatch) -> MethodRun:
        attention = PlainAttention()
        return MethodRun(joined_conditioning(batch, source=self.options.source_prompt), StepController(batch.num_steps),
                         layer_processors(attention, attention), records=[{"background_blending": False}] * len(batch))
