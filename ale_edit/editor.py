"""ALE-Edit's editor: the one place that knows the whole order of an edit, and no method's name or options.

image + [(source, target), ...] + settings
  -> image        the working size, once (longer side ``size``, sides multiples of 64)
  -> masks        given or detected (Grounded-SAM), binarised, dilated; a missed object is recorded
                  (only for a method that uses masks)
  -> method       looked up by name (``methods``): from the edit batch it builds the branches' conditionings, the
                  controller and the processors (ALE: ORE, Q,K injection, RGB-CAM, background blending)
  -> sampler      virtual inversion with the processors installed; the controller's blend after each step
  -> result       image + record (settings, compat profile, mask sources, fallbacks, seconds)
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .edit_types import DEFAULT_SCHEDULE, edit_type
from .embeddings import TextEncoder, encoder_id
from .errors import EditInputError
from .io import resize_mask
from .masks import dilate_mask, dilation_radius
from .methods import EditBatch, check_run, method_class
from .models import DiffusionModels
from .processors import blocks, install_processors
from .prompts import check_marked_prompt
from .sampler import SamplerInputs, virtual_inversion
from .images import aspect_warning, working_image, working_size  # noqa: F401  (working_size: the editor's API)
from .settings import EditSettings
from .steps import exact
from .text import edit_texts

MAX_OBJECTS = 3
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit integer

Detector = Callable[[Image.Image, Sequence[str]], Mapping[str, "np.ndarray | None"]]


@dataclass
class EditRequest:
    """One edit: a source image, 1-3 (source phrase, target phrase) pairs, optional masks per source phrase.

    ``prompts``, when given, are the whole (source, target) prompts the pairs come from, each pair's phrase in []
    (``ale_edit.prompts``; PIE-Bench's prompts): the methods that condition on whole prompts read them, ALE-Edit
    keeps to its phrases.
    """

    image: Image.Image
    pairs: Sequence[tuple[str, str]]
    masks: Mapping[str, np.ndarray] = field(default_factory=dict)
    edit_type: str | None = None  # either spelling: "color+object" or "color_object"
    schedule: float | None = None
    seed: int = 42
    prompts: tuple[str, str] | None = None

    def resolved_schedule(self) -> float:
        if self.schedule is not None:
            # Through its decimal: float(np.float32(0.6)) would be 0.6000000238, one injected step too many.
            return float(exact(self.schedule))
        if self.edit_type is not None:
            return edit_type(self.edit_type).schedule
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
    if request.edit_type is not None:
        edit_type(request.edit_type)  # raises, naming the known types
    if request.schedule is not None and not 0.0 <= request.schedule <= 1.0:
        raise EditInputError(f"schedule must lie in [0, 1], got {request.schedule}")
    if request.prompts is not None:
        if len(request.prompts) != 2:
            raise EditInputError(f"prompts must be (source prompt, target prompt), got {request.prompts!r}")
        check_marked_prompt(request.prompts[0], sources, "source")
        check_marked_prompt(request.prompts[1], [t for _, t in pairs], "target")


def _fit_mask(mask: np.ndarray, phrase: str, original: tuple[int, int], work: tuple[int, int]) -> np.ndarray:
    """A mask at the working size. Masks drawn on the original image or at the working size are expected; any
    other size is resized (nearest) with a warning."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise EditInputError(f"mask for {phrase!r} has shape {mask.shape}; expected (height, width)")
    size = (mask.shape[1], mask.shape[0])
    if size not in (original, work):
        warnings.warn(
            f"mask for {phrase!r} is {size[0]}x{size[1]}, the image is {original[0]}x{original[1]}: "
            f"resized (nearest)", stacklevel=3,
        )
    mask = mask.astype(np.float32) >= 0.5 if mask.dtype != bool else mask
    return resize_mask(mask, work)


class Editor:
    """Edits images on loaded diffusion models with the method the settings name; ``detector`` finds the masks not
    given (for methods that use masks)."""

    def __init__(self, models: DiffusionModels, settings: EditSettings = EditSettings(),
                 detector: Detector | None = None, *, text_encoder: TextEncoder | None = None,
                 progress: bool = True):
        self.models = models
        self.settings = settings
        # LCM picks its steps among the model's original ones: more would be the scheduler's error at the first
        # edit (every edit of a stage an error row); named once, here, before any work.
        original = getattr(models.scheduler.config, "original_inference_steps", None)
        if original is not None and settings.steps > original:
            raise EditInputError(f"edit.steps (--steps) is {settings.steps}, more than the {original} original steps "
                                 f"the LCM scheduler of {models.name} chooses its steps from; give at most {original}")
        self.method = method_class(settings.method)(settings.options)
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
        images = [working_image(r.image, st.size) for r in requests]
        notes = [[w] if (w := aspect_warning(r.image.size, im.size)) else [] for r, im in zip(requests, images)]
        for note in (n for ns in notes for n in ns):
            warnings.warn(note, stacklevel=2)
        if len({im.size for im in images}) != 1:
            raise EditInputError(f"a batch needs one working size, got {sorted({im.size for im in images})}")
        generators = [torch.Generator().manual_seed(r.seed) for r in requests]
        if self.method.uses_masks:
            resolved = [self.resolve_masks(r, im) for r, im in zip(requests, images)]
        else:
            resolved = [({}, {}) for _ in requests]
        z0 = torch.cat([self.encode(im, g) for im, g in zip(images, generators)])
        batch = EditBatch(
            pairs=[list(r.pairs) for r in requests], schedules=[r.resolved_schedule() for r in requests],
            masks=[masks for masks, _ in resolved], num_steps=st.steps, latent_size=tuple(z0.shape[-2:]),
            vae_scale_factor=m.vae_scale_factor, tokenizer=m.tokenizer, encode=self.text_encoder,
            blocks=blocks(m.unet), prompts=[r.prompts for r in requests],
        )
        run = check_run(self.method, self.method.prepare(batch), batch)
        c = run.conditioning
        inputs = SamplerInputs(z0=z0, uncond=c.uncond, source_cond=c.source, target_cond=c.target,
                               generators=generators, mutual_cond=c.mutual)
        previous = install_processors(m.unet, run.processor)
        try:
            latents = virtual_inversion(
                m.unet, m.scheduler, inputs, run.controller, num_steps=st.steps, guidance_source=st.guidance_source,
                guidance_target=st.guidance_target, eta=st.eta, last_alpha=st.last_alpha, progress=self.progress,
            )
        finally:
            m.unet.set_attn_processor(previous)
        edited = self.decode(latents)
        seconds = (time.perf_counter() - start) / len(requests)
        return [
            EditResult(out, masks, self._record(r, origin, images[0].size, seconds, extra, note))
            for r, (masks, origin), out, extra, note in zip(requests, resolved, edited, run.records, notes)
        ]

    def _record(self, r: EditRequest, origin: dict, work_size: tuple[int, int], seconds: float, extra: dict,
                notes: list[str]) -> dict:
        st, m = self.settings, self.models
        fallbacks = [f"no mask for {p!r}: edited without masking and without background blending"
                     for p, o in origin.items() if o == "missing"]
        source_prompt, target_prompt = edit_texts(r.pairs)
        return {
            "method": st.method,
            "pairs": [list(p) for p in r.pairs],
            "source_prompt": source_prompt,
            "target_prompt": target_prompt,
            # The whole prompts only when given: a phrase-only edit's record holds its phrases alone.
            **({"prompts": list(r.prompts)} if r.prompts is not None else {}),
            "edit_type": r.edit_type,
            "schedule": r.resolved_schedule(),
            "seed": r.seed,
            "model": m.name,
            "device": str(m.device),
            "dtype": str(m.dtype).replace("torch.", ""),
            "input_size": list(r.image.size),
            "working_size": list(work_size),
            "settings": st.as_dict(),
            "compat": st.compat_record(),
            "mask_sources": origin,
            "fallbacks": fallbacks,
            "warnings": notes,
            "background_blending": False,
            **extra,
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
