"""ALE-Edit: ORE, RGB-CAM and background blending on the virtual-inversion sampler, with Q,K injection.

- **Q,K injection** (every self-attention layer, ``SelfAttentionInjection``): while the edit's schedule says so
  (``steps.exceeds``: s > (k+1)/T), the target branch's queries and keys are the source branch's, in the
  unconditional and the conditional half; its values stay its own. Through SDPA.
- **ORE** (``ore.py``): the source branch is conditioned on the substituted source base; RGB-CAM's values inside
  object i are ORE_i, outside every object the substituted target base.
- **RGB-CAM** (``rgb_cam.py``, every cross-attention layer): object i's tokens attend only inside mask i.
- **BB** (``background_blending.py``): after each step, x_t takes x_s outside the objects.

An object without a mask (the detector missed it) is edited without masking, and its edit without background
blending; the record says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ...options import Options, option
from ...processors import TWO_BRANCHES, AttentionProcessor, attention, self_attention_qkv
from ...steps import StepController, StepSets, exceeds, from_step, per_edit
from ..base import Conditioning, EditBatch, Method, MethodRun, register
from ..shared import layer_processors, take_source_maps
from .background_blending import BB_MASKS, BackgroundBlend, foreground
from .ore import EOS_TREATMENTS, ORE_ZEROINGS, build_text_plan
from .rgb_cam import RegionGuidance, RegionGuidedCrossAttention, resize_masks_nearest


@dataclass(frozen=True)
class AleOptions(Options):
    """ALE-Edit's options (params.yaml section ``ale``); the defaults are the paper's method."""

    section = "ale"

    ore: bool = option(True, "Object-restricted embeddings (off: the plain prompts everywhere).")
    rgb_cam: bool = option(True, "Region-guided cross-attention masking.")
    bb: bool = option(True, "Background blending.")
    eos: str = option("ore", "ORE's treatment of the EOS/padding slots (the paper's Table 12).",
                      choices=EOS_TREATMENTS)
    ore_zeroing: str = option("other_phrases", "Which tokens ORE_i zeroes: other_phrases (Algorithm 1), "
                              "all_but_phrase (authors' code).", choices=ORE_ZEROINGS, compat="ale.ore_zeroing")
    ore_index_quirk: bool = option(False, "Read the substituted base as the authors' code does.",
                                   compat="ale.ore_index_quirk")
    bb_mask: str = option("nearest", "Background blending's foreground: one nearest resize, or the authors' OR "
                          "of four scales.", choices=BB_MASKS, compat="ale.bb_mask")
    bb_start: int = option(0, "The first step after which background blending runs (authors: 1).", minimum=0,
                           compat="ale.bb_start")
    final_blend: bool = option(False, "Also blend the returned pred_x0 with the source on the background.",
                               compat="ale.final_blend")


@dataclass
class AleController(StepController):
    """ALE-Edit's per-step policy: which edits inject Q,K at the current step; RGB-CAM's state (``guidance``, None
    when RGB-CAM is off) and background blending (the controller's ``blend``)."""

    schedules: torch.Tensor | list = field(default_factory=list)
    guidance: RegionGuidance | None = None
    self_injection: bool = True
    injection_steps: StepSets = field(init=False, repr=False)

    def __post_init__(self):
        # The steps of each edit's Q,K injection, computed once and exactly (never on float32 schedules).
        sets = per_edit(exceeds, self.schedules, self.num_steps)
        self.injection_steps = StepSets(sets if self.self_injection else [frozenset()] * len(sets))

    def injecting(self) -> torch.Tensor:
        """(B,) bool on the CPU: which edits inject the source's Q,K into the target branch at the current step."""
        return self.injection_steps.tensor(self.step_index)

    def injection_mask(self, device) -> torch.Tensor | bool:
        """``True``/``False`` when every edit agrees, else a (B, 1, 1, 1) bool tensor on ``device``."""
        return self.injection_steps.mask(self.step_index, device)


class SelfAttentionInjection(AttentionProcessor):
    """Self-attention where, while injecting, the target branch uses the source branch's queries and keys."""

    layout = TWO_BRANCHES

    def __init__(self, controller: AleController):
        self.controller = controller

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        q, k = take_source_maps(self.layout, q, k, self.controller.injection_mask(q.device))
        return attention(q, k, v).to(q.dtype)


@register
class AleEdit(Method):
    name = "ale"
    label = "ALE-Edit"
    Options = AleOptions
    uses_masks = True

    @classmethod
    def report_label(cls, options: Mapping[str, Any]) -> str:
        """ALE-Edit, or its ablation: the parts left on and a non-default EOS treatment."""
        parts = [name for key, name in (("ore", "ORE"), ("rgb_cam", "RGB-CAM"), ("bb", "BB"))
                 if options.get(key, True)]
        label = cls.label if len(parts) == 3 else f"ALE ({'+'.join(parts) or 'none'})"
        eos = options.get("eos", "ore")
        return label if eos == "ore" else f"{label}, EOS {eos}"

    def prepare(self, batch: EditBatch) -> MethodRun:
        opt = self.options
        plans = [build_text_plan(batch.tokenizer, batch.encode, pairs, use_ore=opt.ore, eos=opt.eos,
                                 zeroing=opt.ore_zeroing, index_quirk=opt.ore_index_quirk) for pairs in batch.pairs]
        b, k = len(batch), max(len(p) for p in batch.pairs)
        work_h, work_w = batch.work_size
        lat_h, lat_w = batch.latent_size
        object_masks = torch.zeros(b, k, work_h, work_w, dtype=torch.bool)
        restricted = torch.zeros(b, k, dtype=torch.bool)
        for e, (pairs, masks) in enumerate(zip(batch.pairs, batch.masks)):
            for i, (source, _) in enumerate(pairs):
                if masks.get(source) is not None:
                    object_masks[e, i] = torch.from_numpy(masks[source])
                    restricted[e, i] = True
        # An edit with an object the detector missed is not blended: there is no background to trust.
        complete = torch.tensor([all(m.get(s) is not None for s, _ in p) for p, m in zip(batch.pairs, batch.masks)])
        blended = complete & opt.bb
        region_values = torch.stack([
            torch.cat([p.background_values[None], p.ore, p.background_values[None].expand(k - p.n_objects, -1, -1)])
            for p in plans
        ])
        guidance = RegionGuidance(
            object_masks=resize_masks_nearest(object_masks, lat_h, lat_w),
            restricted=restricted,
            token_owner=torch.stack([p.token_owner() for p in plans]),
            region_values=region_values,
        ) if opt.rgb_cam else None
        blend = BackgroundBlend(foreground(object_masks, lat_h, lat_w, opt.bb_mask), blended,
                                from_step(opt.bb_start, batch.num_steps), final=opt.final_blend) if opt.bb else None
        controller = AleController(batch.num_steps, schedules=list(batch.schedules), guidance=guidance, blend=blend)
        self_attention, cross_attention = SelfAttentionInjection(controller), RegionGuidedCrossAttention(guidance)
        conditioning = Conditioning(uncond=torch.stack([p.uncond for p in plans]),
                                    source=torch.stack([p.source_cond for p in plans]),
                                    target=torch.stack([p.target_cond for p in plans]))
        return MethodRun(conditioning, controller, layer_processors(cross_attention, self_attention),
                         records=[{"background_blending": bool(x)} for x in blended])
