"""ALE-Edit: the one place that knows the whole order of an edit.

image + [(source, target), ...] + settings
  -> masks        given or detected (Grounded-SAM), binarised, dilated; a missed object is recorded
  -> text plan    joined prompts, phrase spans, substituted bases and ORE            (text.py)
  -> controller   schedule, per-resolution masks, ORE values                         (attention.py)
  -> sampler      virtual inversion with the processors installed, background blending (sampler.py)
  -> result       image + record (settings, mask sources, fallbacks, seconds)
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .attention import EditController, install_ale_processors, resize_masks_nearest
from .embeddings import TextEncoder, encoder_id
from .errors import EditInputError
from .masks import dilate_mask, dilation_radius
from .methods import BASELINES, METHODS
from .methods.baselines import FPE_SELF_REPLACE, MASACTRL_START_LAYER, MASACTRL_START_STEP
from .methods.infedit import INFEDIT_CROSS_REPLACE, INFEDIT_THRESH_E, INFEDIT_THRESH_M
from .methods.p2p import P2P_CROSS_REPLACE, P2P_LOCAL_BLEND
from .models import DiffusionModels
from .sampler import SamplerInputs, virtual_inversion
from .text import EOS_TREATMENTS, ORE_ZEROINGS, build_text_plan

MAX_OBJECTS = 3
SCHEDULES: dict[str, float] = {
    "color": 1.0,
    "object": 0.5,
    "material": 0.6,
    "color+object": 0.5,
    "object+material": 0.5,
}
"""The fraction of steps with self-attention Q,K injection, per edit type (the paper's settings)."""
DEFAULT_SCHEDULE = 0.5  # when neither a type nor a schedule is given: the value of most types
SIZE_MULTIPLE = 64  # the VAE's 8x and the UNet's three 2x downsamplings

Detector = Callable[[Image.Image, Sequence[str]], Mapping[str, "np.ndarray | None"]]


@dataclass(frozen=True)
class EditSettings:
    """Every knob of the method; the defaults reproduce the paper's setup on LCM_Dreamshaper_v7."""

    steps: int = 15
    size: int = 768  # the working image's longer side
    guidance_source: float = 1.0
    guidance_target: float = 2.0
    eta: float = 1.0
    dilation: float = 0.04  # mask dilation radius as a fraction of `size` (the authors' code; the paper says ~1%)
    ore: bool = True
    rgb_cam: bool = True
    bb: bool = True
    eos: str = "ore"
    ore_zeroing: str = "other_phrases"
    ore_index_quirk: bool = False  # True reproduces the authors' code's substituted-base indexing
    final_blend: bool = False  # also blend the returned pred_x0 with z0 on the background (authors: no)
    vae_latent: str = "mode"  # "sample" reproduces the authors' code
    method: str = "ale"  # or a baseline on the same sampler: fpe, masactrl, p2p, infedit
    masactrl_start_step: int = MASACTRL_START_STEP
    masactrl_start_layer: int = MASACTRL_START_LAYER
    fpe_self_replace: float = FPE_SELF_REPLACE  # FPE's own fraction (the per-type schedule is ALE's, P2P's, InfEdit's)
    p2p_cross_replace: float = P2P_CROSS_REPLACE
    p2p_local_blend: bool = P2P_LOCAL_BLEND
    infedit_cross_replace: float = INFEDIT_CROSS_REPLACE
    infedit_thresh_e: float = INFEDIT_THRESH_E
    infedit_thresh_m: float = INFEDIT_THRESH_M

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.size < SIZE_MULTIPLE or self.size % SIZE_MULTIPLE:
            raise ValueError(f"size must be a positive multiple of {SIZE_MULTIPLE}, got {self.size}")
        if self.dilation < 0:
            raise ValueError(f"dilation must be >= 0, got {self.dilation}")
        if self.eos not in EOS_TREATMENTS:
            raise ValueError(f"eos must be one of {EOS_TREATMENTS}, got {self.eos!r}")
        if self.ore_zeroing not in ORE_ZEROINGS:
            raise ValueError(f"ore_zeroing must be one of {ORE_ZEROINGS}, got {self.ore_zeroing!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.vae_latent not in ("mode", "sample"):
            raise ValueError(f"vae_latent must be 'mode' or 'sample', got {self.vae_latent!r}")


@dataclass
class EditRequest:
    """One edit: a source image, 1-3 (source phrase, target phrase) pairs, optional masks per source phrase."""

    image: Image.Image
    pairs: Sequence[tuple[str, str]]
    masks: Mapping[str, np.ndarray] = field(default_factory=dict)
    edit_type: str | None = None
    schedule: float | None = None
    seed: int = 42

    def resolved_schedule(self) -> float:
        if self.schedule is not None:
            return float(self.schedule)
        if self.edit_type is not None:
            return SCHEDULES[self.edit_type]
        return DEFAULT_SCHEDULE


@dataclass
class EditResult:
    image: Image.Image
    masks: dict[str, np.ndarray | None]  # the masks used, at the working resolution, dilated
    record: dict


def validate_request(request: EditRequest) -> None:
    """Raise ``EditInputError`` naming what is wrong with the pairs, masks or edit type."""
    pairs = list(request.pairs)
    if not pairs:
        raise EditInputError("an edit needs at least one (source, target) pair")
    if len(pairs) > MAX_OBJECTS:
        raise EditInputError(f"{len(pairs)} pairs given; ALE-Edit edits at most {MAX_OBJECTS} objects at once")
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(p, str) and p.strip() for p in pair):
            raise EditInputError(f"malformed pair {pair!r}: expected (source phrase, target phrase), both non-empty")
    sources = [s for s, _ in pairs]
    duplicates = sorted({s for s in sources if sources.count(s) > 1})
    if duplicates:
        raise EditInputError(f"duplicate source phrases {duplicates}: each object is named once")
    unknown = sorted(set(request.masks) - set(sources))
    if unknown:
        raise EditInputError(f"masks given for {unknown}, which are not source phrases of this edit ({sources})")
    if request.edit_type is not None and request.edit_type not in SCHEDULES:
        raise EditInputError(f"unknown edit type {request.edit_type!r}; choose one of {sorted(SCHEDULES)}")
    if request.schedule is not None and not 0.0 <= request.schedule <= 1.0:
        raise EditInputError(f"schedule must lie in [0, 1], got {request.schedule}")


def working_size(image: Image.Image, size: int) -> tuple[int, int]:
    """(width, height): the longer side scaled to ``size``, both sides multiples of 64, aspect kept."""
    w, h = image.size
    scale = size / max(w, h)
    return (max(SIZE_MULTIPLE, round(w * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE),
            max(SIZE_MULTIPLE, round(h * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE))


def _fit_mask(mask: np.ndarray, phrase: str, original: tuple[int, int], work: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise EditInputError(f"mask for {phrase!r} has shape {mask.shape}; expected (height, width)")
    if (mask.shape[1], mask.shape[0]) != original:
        warnings.warn(
            f"mask for {phrase!r} is {mask.shape[1]}x{mask.shape[0]}, the image is {original[0]}x{original[1]}: "
            f"resized (nearest)", stacklevel=3,
        )
    mask = mask.astype(np.float32) >= 0.5 if mask.dtype != bool else mask
    if (mask.shape[1], mask.shape[0]) != work:
        mask = np.asarray(Image.fromarray(mask).resize(work, Image.NEAREST))
    return mask


class Editor:
    """Edits images with ALE-Edit on loaded diffusion models; ``detector`` finds masks not given."""

    def __init__(self, models: DiffusionModels, settings: EditSettings = EditSettings(),
                 detector: Detector | None = None, *, text_encoder: TextEncoder | None = None,
                 progress: bool = True):
        self.models = models
        self.settings = settings
        self.detector = detector
        self.text_encoder = text_encoder or TextEncoder(
            models.tokenizer, models.text_encoder, encoder_id(models.name, models.dtype))
        self.progress = progress

    # -- masks ------------------------------------------------------------------------------------------------
    def resolve_masks(self, request: EditRequest, image: Image.Image) -> tuple[dict, dict]:
        """Masks at the working resolution, dilated; and where each came from (given / detected / missing)."""
        work = image.size
        sources = [s for s, _ in request.pairs]
        masks: dict[str, np.ndarray | None] = {}
        origin: dict[str, str] = {}
        for phrase in sources:
            if phrase in request.masks:
                masks[phrase] = _fit_mask(request.masks[phrase], phrase, request.image.size, work)
                origin[phrase] = "given"
        wanted = [p for p in sources if p not in masks]
        if wanted:
            found = self.detector(image, wanted) if self.detector is not None else {}
            for phrase in wanted:
                mask = found.get(phrase)
                masks[phrase] = None if mask is None else _fit_mask(mask, phrase, work, work)
                origin[phrase] = "detected" if mask is not None else "missing"
        radius = dilation_radius(self.settings.dilation, self.settings.size)
        for phrase, mask in masks.items():
            if mask is not None:
                if not mask.any():
                    warnings.warn(f"mask for {phrase!r} is empty: the object's tokens attend nowhere", stacklevel=2)
                masks[phrase] = dilate_mask(mask, radius)
        missing = [p for p in sources if masks[p] is None]
        if missing:
            reason = "no detector was given" if self.detector is None else "the detector found no match"
            warnings.warn(
                f"no mask for {missing} ({reason}): edited without masking, and without background blending",
                stacklevel=2,
            )
        return masks, origin

    # -- the edit ---------------------------------------------------------------------------------------------
    def edit(self, request: EditRequest) -> EditResult:
        return self.edit_batch([request])[0]

    def edit_batch(self, requests: Sequence[EditRequest]) -> list[EditResult]:
        """Edit several requests in one UNet batch; they must share the working size. Results equal those of
        editing them one by one (per-edit noise generators), within float tolerance."""
        start = time.perf_counter()
        st, m = self.settings, self.models
        for r in requests:
            validate_request(r)
        images = [r.image.convert("RGB").resize(working_size(r.image, st.size), Image.BICUBIC) for r in requests]
        if len({im.size for im in images}) != 1:
            raise EditInputError(f"a batch needs one working size, got {sorted({im.size for im in images})}")
        generators = [torch.Generator().manual_seed(r.seed) for r in requests]
        if st.method == "ale":
            resolved = [self.resolve_masks(r, im) for r, im in zip(requests, images)]
        else:  # the baselines use no masks
            resolved = [({}, {}) for _ in requests]
        z0 = torch.cat([self.encode(im, g) for im, g in zip(images, generators)])
        if st.method == "ale":
            controller, inputs, install = self._ale_setup(requests, resolved, z0, generators)
        else:
            controller, inputs, install = self._baseline_setup(requests, z0, generators)
        previous = install(m.unet, controller)
        try:
            latents = virtual_inversion(
                m.unet, m.scheduler, inputs, controller, num_steps=st.steps, guidance_source=st.guidance_source,
                guidance_target=st.guidance_target, eta=st.eta, final_blend=st.final_blend, progress=self.progress,
            )
        finally:
            m.unet.set_attn_processor(previous)
        edited = self.decode(latents)
        seconds = (time.perf_counter() - start) / len(requests)
        return [
            EditResult(out, masks, self._record(r, origin, images[0].size, seconds))
            for r, (masks, origin), out in zip(requests, resolved, edited)
        ]

    def _ale_setup(self, requests, resolved, z0, generators):
        """ALE-Edit's controller and sampler inputs: ORE text plans, masks per layer, background blending."""
        st, m = self.settings, self.models
        plans = [
            build_text_plan(m.tokenizer, self.text_encoder, r.pairs, use_ore=st.ore, eos=st.eos,
                            zeroing=st.ore_zeroing, index_quirk=st.ore_index_quirk)
            for r in requests
        ]
        lat_h, lat_w = z0.shape[-2:]
        work_h, work_w = lat_h * m.vae_scale_factor, lat_w * m.vae_scale_factor
        b, k = len(requests), max(len(r.pairs) for r in requests)
        object_masks = torch.zeros(b, k, work_h, work_w, dtype=torch.bool)
        restricted = torch.zeros(b, k, dtype=torch.bool)
        background = torch.zeros(b, 1, lat_h, lat_w, dtype=torch.bool)
        for e, (r, (masks, _)) in enumerate(zip(requests, resolved)):
            for i, (source, _) in enumerate(r.pairs):
                if masks[source] is not None:
                    object_masks[e, i] = torch.from_numpy(masks[source])
                    restricted[e, i] = True
            if st.bb and all(masks[s] is not None for s, _ in r.pairs):
                union = resize_masks_nearest(object_masks[e], lat_h, lat_w).any(dim=0)
                background[e, 0] = ~union
        region_values = torch.stack([
            torch.cat([p.background_values[None], p.ore, p.background_values[None].expand(k - p.n_objects, -1, -1)])
            for p in plans
        ])
        controller = EditController(
            num_steps=st.steps,
            schedules=torch.tensor([r.resolved_schedule() for r in requests]),
            object_masks=resize_masks_nearest(object_masks, lat_h, lat_w),
            restricted=restricted,
            token_owner=torch.stack([p.token_owner() for p in plans]),
            region_values=region_values,
            rgb_cam=st.rgb_cam,
        )
        inputs = SamplerInputs(
            z0=z0,
            uncond=torch.stack([p.uncond for p in plans]),
            source_cond=torch.stack([p.source_cond for p in plans]),
            target_cond=torch.stack([p.target_cond for p in plans]),
            generators=generators,
            background=background if st.bb else None,
        )
        return controller, inputs, install_ale_processors

    def _baseline_setup(self, requests, z0, generators):
        """A baseline's controller and inputs: the plain joined prompts (the source one only if the method takes
        it, else the empty prompt), no masks, no blending. InfEdit also runs the mutual branch on the source
        prompt and reads both prompts' encodings for its aligner."""
        st = self.settings
        baseline = BASELINES[st.method]
        sources = [" and ".join(s for s, _ in r.pairs) if baseline.uses_source_prompt else "" for r in requests]
        targets = [" and ".join(t for _, t in r.pairs) for r in requests]
        embeds = self.text_encoder(["", *sources, *targets])
        n = len(requests)
        controller = baseline.controller(st.steps, torch.tensor([r.resolved_schedule() for r in requests]),
                                         masactrl_start_step=st.masactrl_start_step,
                                         masactrl_start_layer=st.masactrl_start_layer,
                                         fpe_self_replace=st.fpe_self_replace, tokenizer=self.models.tokenizer,
                                         pairs=[list(r.pairs) for r in requests],
                                         p2p_cross_replace=st.p2p_cross_replace, p2p_local_blend=st.p2p_local_blend,
                                         source_embeds=embeds[1 : 1 + n], target_embeds=embeds[1 + n :],
                                         infedit_cross_replace=st.infedit_cross_replace,
                                         infedit_thresh_e=st.infedit_thresh_e, infedit_thresh_m=st.infedit_thresh_m)
        inputs = SamplerInputs(z0=z0, uncond=embeds[:1].expand(n, -1, -1), source_cond=embeds[1 : 1 + n],
                               target_cond=embeds[1 + n :], generators=generators,
                               mutual_cond=embeds[1 : 1 + n] if st.method == "infedit" else None)
        return controller, inputs, baseline.install

    def _record(self, r: EditRequest, origin: dict, work_size: tuple[int, int], seconds: float) -> dict:
        st, m = self.settings, self.models
        fallbacks = [f"no mask for {p!r}: edited without masking and without background blending"
                     for p, o in origin.items() if o == "missing"]
        return {
            "method": st.method,
            "pairs": [list(p) for p in r.pairs],
            "source_prompt": " and ".join(s for s, _ in r.pairs),
            "target_prompt": " and ".join(t for _, t in r.pairs),
            "edit_type": r.edit_type,
            "schedule": r.resolved_schedule(),
            "seed": r.seed,
            "model": m.name,
            "device": str(m.device),
            "dtype": str(m.dtype).replace("torch.", ""),
            "input_size": list(r.image.size),
            "working_size": list(work_size),
            "settings": dataclasses.asdict(st),
            "mask_sources": origin,
            "fallbacks": fallbacks,
            "background_blending": bool(st.method == "ale" and st.bb and not fallbacks),
            "seconds": round(seconds, 3),
        }

    # -- VAE --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        vae = self.models.vae
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        dist = vae.encode(x.to(vae.device, vae.dtype)).latent_dist
        if self.settings.vae_latent == "sample":
            noise = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32).to(vae.device, vae.dtype)
            latent = dist.mean + dist.std * noise
        else:
            latent = dist.mode()
        return (latent * vae.config.scaling_factor).float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        vae = self.models.vae
        images = []
        for z in latents:  # one at a time: the VAE decoder dominates memory at 768^2
            x = vae.decode((z[None] / vae.config.scaling_factor).to(vae.device, vae.dtype)).sample
            x = ((x[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            images.append(Image.fromarray(x))
        return images
