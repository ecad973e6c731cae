"""ALE-Bench metrics: attribute leakage (TE, TI), edit alignment, structure distance and background fidelity.

Per edit, with edited image I_e, source image I_s, target phrases y_1..y_N, ground-truth masks m_j of the edited
objects and M their union (the published PIE-Bench / ALE-Bench conventions, ``ml-postech/ALE`` ``evaluate/``):

- ``CLIP(I, y)`` = 100 * max(cos(CLIP image feature, CLIP text feature), 0), CLIP ViT-L/14 (torchmetrics'
  ``CLIPScore``). ``I x m`` means the pixels outside ``m`` set to black on the full canvas, no crop.
- ``te_leakage`` (target-external, the paper's eq. 6) = mean_i CLIP(I_e x (1 - M), y_i);
  ``te_leakage_joined`` (the authors' code) = CLIP(I_e x (1 - M), " and ".join(y)).
- ``ti_leakage`` (target-internal) = mean over ordered pairs i != j of CLIP(I_e x m_j, y_i); NaN for one object.
- ``edited_clip`` = CLIP(I_e x M, y_1) for one object, else mean_i CLIP(I_e x m_i, y_i).
- ``structure_distance``: MSE between the cosine self-similarity matrices of the last DINO ViT-B/8 layer's keys
  (heads concatenated, CLS included) of I_s and I_e, each resized to 224 on the short side (at most 480 on the
  long side) and ImageNet-normalised. ``dino_input="published"`` (default) feeds 0-255 pixel values to that
  normalisation, as the published code does; ``"corrected"`` feeds 0-1 values, as was meant.
- ``bg_psnr``, ``bg_ssim``, ``bg_lpips``, ``bg_mse``: both images multiplied by (1 - M) and scored over the whole
  image (published): PSNR and SSIM (torchmetrics, data range 1), MSE on [0, 1], LPIPS (SqueezeNet) on [-1, 1].
  The ``*_region`` variants score background pixels only: MSE and PSNR over the background pixels; SSIM's map
  (of the same masked images) averaged over background pixels; LPIPS' spatial map averaged over background pixels.
  The object region is zero in both masked images, so windows that straddle its edge compare zeros with zeros
  and an edit inside M never counts as background damage.

Conventions where the papers are silent:

- SSIM runs in float32, as published. On images with large flat areas float32 cancellation leaves the SSIM of
  an image with itself short of 1 by up to ~1e-4 (measured: 1.2e-4 on natural_img10; float64 gives 1 - 6e-14).
- Identical backgrounds give ``bg_psnr`` = +inf (torchmetrics' value); it is kept, not capped. Aggregate means
  that include it are +inf, and ``metrics.json`` writes it as the string ``"inf"`` (JSON has no infinity).
- An empty background (M covers the image) makes every ``bg_*`` metric and both TE leakages NaN: there is
  nothing outside the edit to score.
- The edited image is resized (PIL bicubic, as the authors' ``Image.resize`` default) to the source's size;
  masks are binarised at 0.5 (``ale_edit.io.load_mask``).
- Bad input (a missing or unreadable image, no mask for an edited phrase, an empty mask, a mask of another size
  than the source, an unknown edit type, a number of edits that is not the folder's number of objects) makes
  that edit's metrics NaN with the reason in the ``error`` column; the rest of the run is scored.

The models are batched: ``Scorer.score_records`` loads ``batch_size`` edits at a time and runs every masked CLIP
region, every DINO input and every LPIPS pair of them through the models in batches of ``batch_size``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterable, Mapping, Sequence, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.image.lpips import _lpips_update
from torchmetrics.functional.regression import mean_squared_error
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_json
from ..errors import EditInputError
from ..io import load_image, load_mask
from . import dataset
from .dataset import EDIT_TYPES, OBJECT_COUNTS
from .metric_models import MetricModels, dino_key_projection, load_metric_models

log = logging.getLogger(__name__)

CLIP_METRICS = ("edited_clip", "te_leakage", "te_leakage_joined", "ti_leakage")
PIXEL_METRICS = (
    "bg_psnr", "bg_ssim", "bg_lpips", "bg_mse",
    "bg_psnr_region", "bg_ssim_region", "bg_lpips_region", "bg_mse_region",
)
METRIC_COLUMNS = CLIP_METRICS + ("structure_distance",) + PIXEL_METRICS
INFO_COLUMNS = (
    "edit_id", "image", "n_objects", "edit_type", "index", "edits", "source_image", "edited_image", "bg_fraction",
)
COLUMNS = INFO_COLUMNS + METRIC_COLUMNS + ("error",)

DINO_INPUTS = ("published", "corrected")
DINO_SIZE = 224
DINO_MAX_SIZE = 480
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKGROUND = "background"
LAYOUTS = ("authors",)

Region = Union[str, int]  # BACKGROUND, or the index of an edited object
ClipScoreFn = Callable[[Region, str], float]


# ----------------------------------------------------------------------------------------------------------------
# Edit records and loading


@dataclass(frozen=True)
class EditRecord:
    """One edit to score: where its images and masks are, and what was asked.

    ``masks`` maps phrases to mask files; it must hold every source phrase of ``edits`` (it may hold more: only the
    edited objects' masks are used). ``input_error``, when set, is a problem found while building the record (for
    example a benchmark folder with two masks for one phrase); the edit is then recorded as failed with it.
    """

    edit_id: str
    source_image: Path
    edited_image: Path
    masks: Mapping[str, Path]
    edits: tuple[tuple[str, str], ...]
    edit_type: str
    n_objects: int
    image: str = ""
    index: int = -1
    input_error: str | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.edits)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t for _, t in self.edits)


@dataclass
class PreparedEdit:
    """An edit's pixels, loaded and checked: uint8 HxWx3 images of equal size, boolean HxW masks in edit order."""

    record: EditRecord
    source: np.ndarray
    edited: np.ndarray
    object_masks: tuple[np.ndarray, ...]
    union: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.union = np.logical_or.reduce(np.stack(self.object_masks), axis=0)

    @property
    def background(self) -> np.ndarray:
        return ~self.union

    @property
    def has_background(self) -> bool:
        return not bool(self.union.all())


class _LRU(OrderedDict):
    """A small least-recently-used cache: sources and masks repeat across the edits of one image."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or(self, key: Hashable, make: Callable[[], object]):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)
        return value


def _check_record(record: EditRecord) -> None:
    if record.input_error:
        raise EditInputError(record.input_error)
    if record.edit_type not in EDIT_TYPES:
        raise EditInputError(f"unknown edit type {record.edit_type!r}; known: {', '.join(EDIT_TYPES)}")
    if not record.edits:
        raise EditInputError("the edit has no (source, target) pairs")
    if len(record.edits) != record.n_objects:
        raise EditInputError(f"{len(record.edits)} edits filed under {record.n_objects} objects")
    if len(set(record.sources)) != len(record.sources):
        raise EditInputError(f"a source phrase is edited twice: {list(record.sources)}")


def prepare_edit(record: EditRecord, *, cache: _LRU | None = None) -> PreparedEdit:
    """Load and check an edit's source, edited image and object masks; raise ``EditInputError`` naming the problem."""
    cache = cache if cache is not None else _LRU(0)
    _check_record(record)
    source = cache.get_or(("image", str(record.source_image)), lambda: np.array(load_image(record.source_image)))
    edited_im = load_image(record.edited_image)
    height, width = source.shape[:2]
    if edited_im.size != (width, height):
        edited_im = edited_im.resize((width, height), Image.BICUBIC)
    masks = []
    for phrase in record.sources:
        path = record.masks.get(phrase)
        if path is None:
            raise EditInputError(f"no mask for edited phrase {phrase!r} (masks: {sorted(record.masks)})")
        mask = cache.get_or(("mask", str(path)), lambda: load_mask(path, name=phrase))
        if mask.shape != (height, width):
            raise EditInputError(
                f"mask for {phrase!r} is {mask.shape[1]}x{mask.shape[0]}, the source image is {width}x{height}: {path}"
            )
        masks.append(mask)
    return PreparedEdit(record, source, np.array(edited_im), tuple(masks))


def masked_pixels(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image x mask``: pixels outside ``mask`` black, on the full canvas (uint8, as the authors' ``np.uint8``)."""
    return np.where(mask[..., None], image, 0).astype(np.uint8)


def clip_regions(edit: PreparedEdit) -> list[tuple[Region, np.ndarray]]:
    """The masked edited images CLIP scores: I_e x (1 - M) (when the background is not empty) and each I_e x m_j."""
    regions: list[tuple[Region, np.ndarray]] = []
    if edit.has_background:
        regions.append((BACKGROUND, masked_pixels(edit.edited, edit.background)))
    regions += [(j, masked_pixels(edit.edited, m)) for j, m in enumerate(edit.object_masks)]
    return regions


# ----------------------------------------------------------------------------------------------------------------
# Metric definitions (pure, testable without models)


def clip_score_matrix(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """[images x texts] of 100 * max(cos, 0), computed as torchmetrics' ``CLIPScore`` does, in float32."""
    image_features = image_features.float()
    text_features = text_features.float()
    image_features = image_features / image_features.norm(p=2, dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(p=2, dim=-1, keepdim=True)
    return (100 * image_features @ text_features.T).clamp(min=0)


def clip_region_metrics(targets: Sequence[str], score: ClipScoreFn, *, has_background: bool = True) -> dict:
    """TE (both variants), TI and edited-region CLIP scores of one edit from a CLIP score function.

    ``score(region, text)`` is CLIP(I_e x region, text), ``region`` being ``BACKGROUND`` (1 - M) or the index j of
    an edited object (m_j). Keeping this free of models lets the pairing be checked with known per-pair values.
    """
    targets = list(targets)
    n = len(targets)
    nan = float("nan")
    if has_background:
        te = float(np.mean([score(BACKGROUND, y) for y in targets]))
        te_joined = float(score(BACKGROUND, " and ".join(targets)))
    else:
        te = te_joined = nan
    # TI: the target of object i, read on the region of every other object j.
    ti = float(np.mean([score(j, targets[i]) for i in range(n) for j in range(n) if i != j])) if n > 1 else nan
    # One object: M = m_1, so CLIP(I_e x M, y_1) is region 0 with its own target.
    edited = float(np.mean([score(i, targets[i]) for i in range(n)]))
    return {"edited_clip": edited, "te_leakage": te, "te_leakage_joined": te_joined, "ti_leakage": ti}


def ssim_with_map(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image SSIM (torchmetrics, Gaussian 11x11, sigma 1.5, data range 1) and its full-size map (B,C,H,W).

    torchmetrics reflect-pads and averages the map over the whole image, borders included; scikit-image's
    ``structural_similarity`` averages the interior only (the map cropped by 5 pixels). The published numbers
    are torchmetrics'.
    """
    values, full = structural_similarity_index_measure(
        preds, target, data_range=1.0, reduction="none", return_full_image=True
    )
    return values, full


def lpips_with_map(
    net: torch.nn.Module, preds: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image LPIPS of [-1, 1] images (torchmetrics' value) and its spatial map (B,1,H,W).

    The map is LPIPS' own ``spatial`` output (each layer's distance upsampled to the input size and summed); its
    mean is close to, not exactly, the per-image value, so both are computed.
    """
    values = _lpips_update(preds, target, net, normalize=False).reshape(-1)
    previous = net.spatial
    net.spatial = True
    try:
        spatial = net(preds, target)
    finally:
        net.spatial = previous
    return values, spatial


def background_metrics(
    source: torch.Tensor,
    edited: torch.Tensor,
    background: torch.Tensor,
    lpips: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Background fidelity of a batch: ``source``/``edited`` (B,3,H,W) in [0, 1], ``background`` (B,1,H,W) bool.

    Returns per-image float64 tensors for ``PIXEL_METRICS`` (LPIPS ones NaN without ``lpips``), NaN for images
    whose background is empty.
    """
    bg = background.to(source.dtype)
    # contiguous: torchmetrics' MSE flattens with view().
    src = (source * bg).contiguous()
    edt = (edited * bg).contiguous()
    n_bg = background.flatten(1).sum(1)
    channels = source.shape[1]
    out: dict[str, torch.Tensor] = {}
    out["bg_psnr"] = peak_signal_noise_ratio(edt, src, data_range=1.0, reduction="none", dim=(1, 2, 3))
    out["bg_mse"] = torch.stack([mean_squared_error(edt[i], src[i]) for i in range(len(src))])
    ssim, ssim_map = ssim_with_map(edt, src)
    out["bg_ssim"] = ssim
    out["bg_ssim_region"] = (ssim_map * bg).flatten(1).sum(1) / (channels * n_bg).clamp(min=1)
    mse_region, psnr_region = [], []
    for i in range(len(src)):
        sel = background[i].expand_as(src[i])
        if sel.any():
            mse_region.append(mean_squared_error(edt[i][sel], src[i][sel]))
            psnr_region.append(peak_signal_noise_ratio(edt[i][sel], src[i][sel], data_range=1.0))
        else:
            mse_region.append(torch.tensor(float("nan"), device=src.device))
            psnr_region.append(torch.tensor(float("nan"), device=src.device))
    out["bg_mse_region"] = torch.stack(mse_region)
    out["bg_psnr_region"] = torch.stack(psnr_region)
    if lpips is not None:
        values, spatial = lpips_with_map(lpips, edt * 2 - 1, src * 2 - 1)
        out["bg_lpips"] = values
        out["bg_lpips_region"] = (spatial * bg).flatten(1).sum(1) / n_bg.clamp(min=1)
    else:
        out["bg_lpips"] = out["bg_lpips_region"] = torch.full((len(src),), float("nan"), device=src.device)
    empty = n_bg == 0
    return {
        k: torch.where(empty, torch.full_like(v, float("nan")), v).detach().double().cpu()
        for k, v in ((k, out[k].reshape(-1)) for k in PIXEL_METRICS)
    }


def dino_preprocess(images: torch.Tensor, dino_input: str = "published") -> torch.Tensor:
    """uint8 (B,3,H,W) -> DINO input: short side 224 (long side at most 480), bilinear, ImageNet-normalised.

    ``"published"`` normalises 0-255 values (what the authors' code does); ``"corrected"`` 0-1 values.
    """
    if dino_input not in DINO_INPUTS:
        raise ValueError(f"unknown dino_input {dino_input!r}; choose one of {DINO_INPUTS}")
    x = images.float()
    if dino_input == "corrected":
        x = x / 255.0
    x = TF.resize(x, [DINO_SIZE], max_size=DINO_MAX_SIZE, antialias=True)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def keys_self_similarity(keys: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine self-similarity (B,T,T) of keys (B,T,D), as the published ``attn_cosine_sim``."""
    keys = keys.float()
    norm = keys.norm(dim=2, keepdim=True)
    factor = torch.clamp(norm @ norm.transpose(1, 2), min=eps)
    return (keys @ keys.transpose(1, 2)) / factor


def dino_self_similarity(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Self-similarity of the last layer's keys (all heads concatenated, CLS token included) for a batch."""
    captured: list[torch.Tensor] = []
    handle = dino_key_projection(model).register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        dtype = next(model.parameters()).dtype
        model(pixel_values=pixel_values.to(dtype), interpolate_pos_encoding=True)
    finally:
        handle.remove()
    return keys_self_similarity(captured[-1])


# ----------------------------------------------------------------------------------------------------------------
# The scorer


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _features(output) -> torch.Tensor:
    # transformers 4.x returns the projected features; 5.x a model output whose pooler_output they are.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def empty_row(record: EditRecord) -> dict:
    """The per-edit row of ``record`` with every metric NaN and no error."""
    row = {
        "edit_id": record.edit_id,
        "image": record.image,
        "n_objects": int(record.n_objects),
        "edit_type": record.edit_type,
        "index": int(record.index),
        "edits": json.dumps([list(e) for e in record.edits], ensure_ascii=False),
        "source_image": str(record.source_image),
        "edited_image": str(record.edited_image),
        "bg_fraction": float("nan"),
    }
    row.update({m: float("nan") for m in METRIC_COLUMNS})
    row["error"] = None
    return row


class Scorer:
    """Holds the metric models and scores lists of edits in batches.

    ``batch_size`` is both the number of edits loaded at a time and the batch size of each model. Text features
    and the sources' DINO self-similarities are cached (sources repeat across the edits of an image).
    """

    def __init__(
        self,
        models: MetricModels,
        *,
        dino_input: str = "published",
        batch_size: int = 16,
        progress: bool = True,
        cache_size: int = 32,
    ) -> None:
        if dino_input not in DINO_INPUTS:
            raise ValueError(f"unknown dino_input {dino_input!r}; choose one of {DINO_INPUTS}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.models = models
        self.dino_input = dino_input
        self.batch_size = batch_size
        self.progress = progress
        self._text_cache: dict[str, torch.Tensor] = {}
        self._source_sim_cache = _LRU(cache_size)
        self._load_cache = _LRU(4 * cache_size)

    @property
    def device(self) -> torch.device:
        return self.models.device

    # -- CLIP ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def clip_image_features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """CLIP image features (N, P) of uint8 HxWx3 images, through the CLIP image processor, batched."""
        out = []
        for batch in _batches(list(images), self.batch_size):
            pixels = self.models.clip_processor(images=[Image.fromarray(a) for a in batch], return_tensors="pt")
            pixel_values = pixels["pixel_values"].to(self.device, self.models.dtype)
            out.append(_features(self.models.clip.get_image_features(pixel_values=pixel_values)).float())
        return torch.cat(out) if out else torch.empty(0)

    @torch.no_grad()
    def clip_text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP text features (N, P), cached per text. Longer than 77 tokens is truncated (keeping the EOS token)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for batch in _batches(missing, self.batch_size):
            tokens = self.models.clip_tokenizer(
                list(batch), padding=True, truncation=True, max_length=77, return_tensors="pt"
            )
            feats = _features(
                self.models.clip.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )
            ).float()
            for text, feat in zip(batch, feats):
                self._text_cache[text] = feat
        return torch.stack([self._text_cache[t] for t in texts])

    def clip_scores(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """CLIP score [images x texts] = 100 * max(cos, 0)."""
        return clip_score_matrix(self.clip_image_features(images), self.clip_text_features(texts)).cpu().numpy()

    # -- DINO ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def self_similarities(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """DINO key self-similarity matrices of uint8 HxWx3 images, batched among images of equal size."""
        result: list[torch.Tensor | None] = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for indices in by_shape.values():
            for batch in _batches(indices, self.batch_size):
                stacked = torch.stack([torch.from_numpy(np.ascontiguousarray(images[i])) for i in batch])
                pixels = dino_preprocess(stacked.permute(0, 3, 1, 2).to(self.device), self.dino_input)
                for i, sim in zip(batch, dino_self_similarity(self.models.dino, pixels)):
                    result[i] = sim
        return result  # type: ignore[return-value]

    def structure_distance(self, source: np.ndarray, edited: np.ndarray) -> float:
        """MSE between the DINO key self-similarities of two uint8 HxWx3 images."""
        sim_s, sim_e = self.self_similarities([source, edited])
        return float(F.mse_loss(sim_e, sim_s))

    # -- a batch of edits ------------------------------------------------------------------------------------
    def _pixel_metrics(self, batch: list[tuple[dict, PreparedEdit]]) -> None:
        by_shape: dict[tuple, list[int]] = {}
        for k, (_, edit) in enumerate(batch):
            by_shape.setdefault(edit.source.shape, []).append(k)
        for indices in by_shape.values():
            for sub in _batches(indices, self.batch_size):
                def stack(get):
                    return torch.stack([torch.from_numpy(np.ascontiguousarray(get(batch[k][1]))) for k in sub])

                # float32 / 255, as the published code (np.float32 / 255).
                source = stack(lambda e: e.source).permute(0, 3, 1, 2).to(self.device, torch.float32) / 255
                edited = stack(lambda e: e.edited).permute(0, 3, 1, 2).to(self.device, torch.float32) / 255
                background = stack(lambda e: e.background)[:, None].to(self.device)
                with torch.no_grad():
                    values = background_metrics(source, edited, background, self.models.lpips)
                for j, k in enumerate(sub):
                    row = batch[k][0]
                    for name, tensor in values.items():
                        row[name] = float(tensor[j])

    def _clip_metrics(self, batch: list[tuple[dict, PreparedEdit]]) -> None:
        owners, images = [], []
        for k, (_, edit) in enumerate(batch):
            for region, pixels in clip_regions(edit):
                owners.append((k, region))
                images.append(pixels)
        texts = list(dict.fromkeys(
            t for _, edit in batch for t in (*edit.record.targets, " and ".join(edit.record.targets))
        ))
        scores = self.clip_scores(images, texts)
        row_of = {owner: i for i, owner in enumerate(owners)}
        col_of = {t: i for i, t in enumerate(texts)}
        for k, (row, edit) in enumerate(batch):
            def score(region: Region, text: str, k=k) -> float:
                return float(scores[row_of[(k, region)], col_of[text]])

            row.update(clip_region_metrics(edit.record.targets, score, has_background=edit.has_background))

    def _structure_metrics(self, batch: list[tuple[dict, PreparedEdit]]) -> None:
        keys = [(str(edit.record.source_image), edit.source.shape) for _, edit in batch]
        missing = {key: edit.source for key, (_, edit) in zip(keys, batch) if key not in self._source_sim_cache}
        new_sources = list(missing)
        sims = self.self_similarities([missing[key] for key in new_sources] + [edit.edited for _, edit in batch])
        for key, sim in zip(new_sources, sims[: len(new_sources)]):
            self._source_sim_cache[key] = sim
        for key, (row, _), sim_e in zip(keys, batch, sims[len(new_sources) :]):
            sim_s = self._source_sim_cache.get_or(key, lambda: None)
            row["structure_distance"] = float(F.mse_loss(sim_e, sim_s))
        while len(self._source_sim_cache) > self._source_sim_cache.size:
            self._source_sim_cache.popitem(last=False)

    def score_prepared(self, batch: list[tuple[dict, PreparedEdit]]) -> None:
        """Fill the metric columns of each (row, prepared edit) pair in place."""
        if not batch:
            return
        for row, edit in batch:
            row["bg_fraction"] = float(edit.background.mean())
        self._pixel_metrics(batch)
        self._clip_metrics(batch)
        self._structure_metrics(batch)

    def score_records(
        self, records: Sequence[EditRecord], *, batch_size: int | None = None, progress: bool | None = None
    ) -> pd.DataFrame:
        """Score edits; one row per record, in order, with ``COLUMNS``. Bad input gives NaNs and an ``error``.

        ``batch_size`` and ``progress`` override the scorer's settings for this call.
        """
        saved = self.batch_size
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"batch_size must be at least 1, got {batch_size}")
            self.batch_size = batch_size
        rows: list[dict] = []
        show = self.progress if progress is None else progress
        try:
            with tqdm(total=len(records), desc="scoring", unit="edit", disable=not show) as bar:
                for chunk in _batches(list(records), self.batch_size):
                    prepared = []
                    for record in chunk:
                        row = empty_row(record)
                        rows.append(row)
                        try:
                            prepared.append((row, prepare_edit(record, cache=self._load_cache)))
                        except EditInputError as exc:
                            row["error"] = str(exc)
                    self.score_prepared(prepared)
                    bar.update(len(chunk))
        finally:
            self.batch_size = saved
        return per_edit_frame(rows)


def per_edit_frame(rows: list[dict]) -> pd.DataFrame:
    """The per-edit table with a fixed column order and types (also when empty)."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for name in ("n_objects", "index"):
        frame[name] = frame[name].astype("int64")
    for name in ("bg_fraction",) + METRIC_COLUMNS:
        frame[name] = frame[name].astype("float64")
    frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
    return frame


# ----------------------------------------------------------------------------------------------------------------
# Aggregates


def _group_stats(frame: pd.DataFrame) -> dict:
    stats: dict = {"count": int(len(frame)), "errors": int(frame["error"].notna().sum())}
    for name in METRIC_COLUMNS:
        values = frame[name].astype("float64")
        values = values[values.notna()]
        stats[name] = float(values.mean()) if len(values) else None
    stats["n"] = {name: int(frame[name].notna().sum()) for name in METRIC_COLUMNS}
    return stats


def aggregate(per_edit: pd.DataFrame) -> dict:
    """Means over all edits, by edit type, by number of objects and by both, NaN skipped, with counts.

    Keys are stable: every known edit type and the benchmark's object counts (1-3) are always present (count 0,
    metrics ``None`` when nothing was scored), plus any others the table holds; ``by_type_objects`` keys read
    ``"<type>/<n>"``. Each group holds ``count`` (edits), ``errors`` (edits with an error), one mean per metric
    and ``n`` (how many values each mean is over). Use ``to_jsonable`` before writing JSON.
    """
    types = list(EDIT_TYPES) + sorted(set(per_edit["edit_type"]) - set(EDIT_TYPES))
    counts = sorted(set(OBJECT_COUNTS) | {int(n) for n in per_edit["n_objects"]})
    return {
        "overall": _group_stats(per_edit),
        "by_type": {t: _group_stats(per_edit[per_edit["edit_type"] == t]) for t in types},
        "by_objects": {str(n): _group_stats(per_edit[per_edit["n_objects"] == n]) for n in counts},
        "by_type_objects": {
            f"{t}/{n}": _group_stats(per_edit[(per_edit["edit_type"] == t) & (per_edit["n_objects"] == n)])
            for t in types
            for n in counts
        },
    }


def to_jsonable(obj):
    """Plain JSON values: NaN -> null, +-inf -> "inf"/"-inf" (JSON has no infinity), numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    return obj


# ----------------------------------------------------------------------------------------------------------------
# Runs over a results folder


def records_from_results(
    results_dir: str | os.PathLike,
    bench_dir: str | os.PathLike,
    *,
    layout: str = "authors",
    require_all: bool = False,
    n_objects: int | list[int] | None = None,
    edit_types: str | list[str] | None = None,
    images: str | list[str] | None = None,
) -> list[EditRecord]:
    """The edits to score: the benchmark's prompt instances matched with their edited images in ``results_dir``.

    By default only instances whose result folder (``<n>/<type>/<image>/``) exists are taken, so a method run on
    part of the benchmark is scored on that part; inside such a folder a missing ``edit_<i>.png`` is an error row.
    ``require_all`` takes every instance of the benchmark (a missing folder then gives error rows too).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown results layout {layout!r}; choose one of {LAYOUTS}")
    results_dir, bench_dir = Path(results_dir), Path(bench_dir)
    instances = dataset.load_prompt_instances(bench_dir, n_objects=n_objects, edit_types=edit_types, images=images)
    masks: dict[str, tuple[dict, str | None]] = {}
    records = []
    for inst in instances:
        folder = dataset.result_folder(results_dir, inst.n_objects, inst.edit_type, inst.image)
        if not require_all and not folder.is_dir():
            continue
        if inst.image not in masks:
            try:
                masks[inst.image] = (dataset.masks_for_image(bench_dir, inst.image), None)
            except EditInputError as exc:
                masks[inst.image] = ({}, str(exc))
        image_masks, problem = masks[inst.image]
        records.append(EditRecord(
            edit_id=inst.key,
            source_image=dataset.image_path(bench_dir, inst.image),
            edited_image=dataset.edited_image_path(results_dir, inst),
            masks=image_masks,
            edits=inst.edits,
            edit_type=inst.edit_type,
            n_objects=inst.n_objects,
            image=inst.image,
            index=inst.index,
            input_error=problem,
        ))
    _warn_unmatched_folders(results_dir, {(i.n_objects, i.edit_type, i.image) for i in instances})
    return records


def _warn_unmatched_folders(results_dir: Path, known: set) -> None:
    # A result folder no prompt instance points to is never scored: say so rather than drop it silently.
    unmatched = []
    if results_dir.is_dir():
        for n_dir in (p for p in results_dir.iterdir() if p.is_dir() and p.name.isdigit()):
            for type_dir in (p for p in n_dir.iterdir() if p.is_dir()):
                for image_dir in (p for p in type_dir.iterdir() if p.is_dir()):
                    if (int(n_dir.name), type_dir.name, image_dir.name) not in known:
                        unmatched.append(str(image_dir.relative_to(results_dir)))
    if unmatched:
        log.warning("%d result folders match no benchmark prompt and are not scored: %s%s", len(unmatched),
                    ", ".join(sorted(unmatched)[:5]), " ..." if len(unmatched) > 5 else "")


@dataclass
class ScoreRun:
    """A scored run: the per-edit table and the aggregate metrics (``aggregate``'s dict, JSON-ready)."""

    per_edit: pd.DataFrame
    metrics: dict


def score_results(
    results_dir: str | os.PathLike,
    bench_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    layout: str = "authors",
    models: MetricModels | str = "real",
    clip_model: str | None = None,
    dino_model: str | None = None,
    lpips_net: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "fp32",
    batch_size: int = 16,
    dino_input: str = "published",
    require_all: bool = False,
    progress: bool = True,
) -> ScoreRun:
    """Score a results folder against ALE-Bench; with ``out_dir``, write ``per_edit.parquet`` and ``metrics.json``.

    ``models`` is loaded ``MetricModels`` or a preset name (``"real"``/``"tiny"``), ``clip_model``/``dino_model``/
    ``lpips_net`` overriding one model each. This is what ``ale-edit score`` and the DVC stage run.
    """
    if dino_input not in DINO_INPUTS:
        raise ValueError(f"unknown dino_input {dino_input!r}; choose one of {DINO_INPUTS}")
    records = records_from_results(results_dir, bench_dir, layout=layout, require_all=require_all)
    if not records:
        raise EditInputError(
            f"no edits to score: no result folder <n objects>/<edit type>/<image>/ in {results_dir} matches a "
            f"prompt file of the benchmark at {bench_dir}"
        )
    if isinstance(models, str):
        models = load_metric_models(models, clip=clip_model, dino=dino_model, lpips=lpips_net, device=device,
                                    dtype=dtype)
    scorer = Scorer(models, dino_input=dino_input, batch_size=batch_size, progress=progress)
    per_edit = scorer.score_records(records)
    per_edit.attrs["settings"] = {
        "models": dict(models.names), "dino_input": dino_input, "dtype": str(models.dtype).replace("torch.", ""),
        "layout": layout, "results_dir": str(results_dir), "bench_dir": str(bench_dir),
    }
    metrics = to_jsonable(aggregate(per_edit))
    if out_dir is not None:
        write_outputs(per_edit, metrics, out_dir)
    return ScoreRun(per_edit, metrics)


def write_outputs(per_edit: pd.DataFrame, metrics: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out_dir/per_edit.parquet`` (pyarrow) and ``out_dir/metrics.json``, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet, metrics_json = out_dir / "per_edit.parquet", out_dir / "metrics.json"
    with atomic_path(parquet) as tmp:
        per_edit.to_parquet(tmp, engine="pyarrow", index=False)
    write_json(metrics_json, to_jsonable(metrics))
    return parquet, metrics_json
