"""ALE-Bench metrics, as pure functions: attribute leakage (TE, TI), edit alignment, structure distance and
background fidelity. Nothing here loads files or models; ``scorer.Scorer`` feeds them.

Per edit, with edited image I_e, source image I_s, target phrases y_1..y_N, ground-truth masks m_j of the edited
objects and M their union (the published PIE-Bench / ALE-Bench conventions, ``ml-postech/ALE`` ``evaluate/``):

- ``CLIP(I, y)`` = 100 * max(cos(CLIP image feature, CLIP text feature), 0), CLIP ViT-L/14 (torchmetrics'
  ``CLIPScore``). ``I x w`` means ``np.uint8(I * w)`` on the full canvas, no crop: the pixels outside a binary
  mask black, as the authors' ``np.uint8(img * mask)``.
- ``te_leakage`` (target-external, the paper's eq. 6) = mean_i CLIP(I_e x (1 - M), y_i);
  ``te_leakage_joined`` (the authors' code) = CLIP(I_e x (1 - M), " and ".join(y)). Both are always computed;
  which one a run reports as "TE" is its ``te_variant`` (``"mean"`` / ``"joined"``, see ``settings``).
- ``ti_leakage`` (target-internal) = mean over ordered pairs i != j of CLIP(I_e x m_j, y_i); NaN for one object.
- ``edited_clip`` = CLIP(I_e x M, y_1) for one object, else mean_i CLIP(I_e x m_i, y_i). On PIE-Bench the text
  is the whole target prompt instead of the target phrase (its ``clip_similarity_target_image_edit_part``:
  ``evaluation/evaluate.py``, the edited image times the annotation mask against the editing prompt).
- ``structure_distance``: MSE between the cosine self-similarity matrices of the last DINO ViT-B/8 layer's keys
  (heads concatenated, CLS included) of I_s and I_e, each resized to 224 on the short side (at most 480 on the
  long side) and ImageNet-normalised. ``dino_input="published"`` (default) feeds 0-255 pixel values to that
  normalisation, as the published code does; ``"corrected"`` feeds 0-1 values, as was meant.
- ``bg_psnr``, ``bg_ssim``, ``bg_lpips``, ``bg_mse``: both images (float32 / 255) multiplied by the background
  weight w = 1 - M (cast to float32) and scored over the whole image (published): PSNR and SSIM (torchmetrics,
  data range 1), MSE on [0, 1], LPIPS (SqueezeNet) on [-1, 1].
- The ``*_region`` variants score the background only, as weighted means over the pixels of the same masked
  images: ``sum(w * map) / (channels * sum(w))``, ``map`` being the per-pixel map of the masked images (squared
  error for MSE, and PSNR = 10 log10(1 / that MSE); SSIM's map; LPIPS' spatial map, one channel). For a binary
  mask that is the plain mean over the background pixels. The object region is zero in both masked images, so
  windows that straddle its edge compare zeros with zeros and an edit inside M never counts as background damage.

Mask weights (``mask_weights``):

- ``"binary"`` (default): masks binarised at 0.5 (``ale_edit.io.load_mask``), M their union (logical or), so
  w is 0 or 1.
- ``"soft"`` (the authors' evaluation): ALE-Bench's antialiased masks are continuous weights, each mask
  ``np.array(Image.open(p).convert("L")) / 255.0`` (float64), M their per-pixel maximum (``ImageChops.lighter``),
  w = 1 - M; TI and Edited use each object's soft mask. For a mask file holding only 0 and 255 both modes give
  identical numbers.

Conventions where the papers are silent:

- SSIM runs in float32, as published. On images with large flat areas float32 cancellation leaves the SSIM of
  an image with itself short of 1 by up to ~1e-4 (measured: 1.2e-4 on natural_img10; float64 gives 1 - 6e-14).
- Identical backgrounds give ``bg_psnr`` = +inf (torchmetrics' value); it is kept, not capped. Aggregate means
  that include it are +inf, and ``metrics.json`` writes it as the string ``"inf"`` (JSON has no infinity).
- An empty background (the weights 1 - M sum to 0) makes every ``bg_*`` metric and both TE leakages NaN: there is
  nothing outside the edit to score.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.image.lpips import _normalize_tensor, _resize_tensor, _spatial_average, _upsample
from torchmetrics.functional.image.psnr import _psnr_compute
from torchmetrics.functional.regression import mean_squared_error

from .metric_models import dino_key_projection

from .names import (  # noqa: F401  (the names of what is measured live apart: no torch needed to read them)
    BACKGROUND, CLIP_METRICS, DINO_INPUTS, MASK_WEIGHTS, METRIC_COLUMNS, PIXEL_METRICS, TE_VARIANT_LABELS,
    TE_VARIANTS, Region,
)

# SSIM's map in strips of rows of at most this many pixels (the batch's), each with the rows its window reads:
# torchmetrics' Gaussian window is 2 * int(3.5 * sigma + 0.5) + 1 = 11 rows for sigma 1.5, 5 either side.
SSIM_STRIP_PIXELS = 1 << 18
SSIM_HALO = 5

DINO_SIZE = 224
DINO_MAX_SIZE = 480
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ClipScoreFn = Callable[[Region, str], float]


# ----------------------------------------------------------------------------------------------------------------
# CLIP


def weighted_pixels(image: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``image x w``: uint8 HxWx3 pixels times HxW weights in [0, 1], truncated to uint8 as the authors'
    ``np.uint8(img * mask)`` (float64 product). A 0/1 weight keeps a pixel or makes it black."""
    return np.uint8(image * np.asarray(weight, dtype=np.float64)[..., None])


def clip_score_matrix(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """[images x texts] of 100 * max(cos, 0), computed as torchmetrics' ``CLIPScore`` does, in float32."""
    image_features = image_features.float()
    text_features = text_features.float()
    image_features = image_features / image_features.norm(p=2, dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(p=2, dim=-1, keepdim=True)
    return (100 * image_features @ text_features.T).clamp(min=0)


def joined_prompt(targets: Sequence[str]) -> str:
    """The authors' joined target prompt, TE's text in the ``joined`` variant."""
    return " and ".join(targets)


def clip_region_metrics(targets: Sequence[str], score: ClipScoreFn, *, has_background: bool = True,
                        edited_texts: Sequence[str] | None = None) -> dict:
    """TE (both variants), TI and edited-region CLIP scores of one edit from a CLIP score function.

    ``score(region, text)`` is CLIP(I_e x region, text), ``region`` being ``BACKGROUND`` (1 - M) or the index j of
    an edited object (m_j). Keeping this free of models lets the pairing be checked with known per-pair values.
    ``edited_texts``: the text each object's region is read against for "Edited" (default: its target phrase;
    PIE-Bench: the whole target prompt).
    """
    targets = list(targets)
    n = len(targets)
    nan = float("nan")
    if has_background:
        te = float(np.mean([score(BACKGROUND, y) for y in targets]))
        te_joined = float(score(BACKGROUND, joined_prompt(targets)))
    else:
        te = te_joined = nan
    # TI: the target of object i, read on the region of every other object j.
    ti = float(np.mean([score(j, targets[i]) for i in range(n) for j in range(n) if i != j])) if n > 1 else nan
    # One object: M = m_1, so CLIP(I_e x M, y_1) is region 0 with its own target.
    edited_texts = targets if edited_texts is None else list(edited_texts)
    edited = float(np.mean([score(i, edited_texts[i]) for i in range(n)]))
    return {"edited_clip": edited, "te_leakage": te, "te_leakage_joined": te_joined, "ti_leakage": ti}


# ----------------------------------------------------------------------------------------------------------------
# Background fidelity


def ssim_with_map(
    preds: torch.Tensor, target: torch.Tensor, *, strip_pixels: int | None = SSIM_STRIP_PIXELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image SSIM (torchmetrics, Gaussian 11x11, sigma 1.5, data range 1) and its full-size map (B,C,H,W).

    torchmetrics reflect-pads and averages the map over the whole image, borders included; scikit-image's
    ``structural_similarity`` averages the interior only (the map cropped by 5 pixels). The published numbers
    are torchmetrics'.

    The map is computed in strips of rows, at most ``strip_pixels`` pixels of the batch each (``None``: in one
    call): torchmetrics' 11x11 convolution unfolds 121 values per pixel and channel (480 MB for one 1000x1000
    image at once). Each strip is given with the 5 real rows on either side that its Gaussian window reads, so
    only the image's own borders are reflect-padded, and the map is the one-call map bit for bit.
    """
    height, width = preds.shape[-2:]
    rows = height if strip_pixels is None else max(SSIM_HALO + 1, strip_pixels // max(1, len(preds) * width))
    maps = []
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        start, stop = max(0, top - SSIM_HALO), min(height, bottom + SSIM_HALO)
        _, strip = structural_similarity_index_measure(
            preds[..., start:stop, :], target[..., start:stop, :], data_range=1.0, reduction="none",
            return_full_image=True,
        )
        maps.append(strip[..., top - start : bottom - start, :])
    full = maps[0] if len(maps) == 1 else torch.cat(maps, dim=-2)
    # torchmetrics' per-image value: the mean of the whole map.
    return full.reshape(full.shape[0], -1).mean(-1), full


def lpips_with_map(
    net: torch.nn.Module, preds: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image LPIPS of [-1, 1] images (torchmetrics' value) and its spatial map (B,1,H,W), from one pass.

    The map is what LPIPS' own ``spatial`` mode returns: each layer's distance (the output of its linear head)
    upsampled to the input size and summed; its mean is close to, not exactly, the value.

    The pass is torchmetrics' ``_LPIPS.forward`` taken layer by layer: its modules (scaling, optional resize, the
    backbone's slices, the linear heads) and helpers in its order, so both numbers are its own bit for bit. Its
    forward holds every layer's features of both images, their normalised copies and differences at once (about
    800 MB for one 1000x1000 pair on SqueezeNet); here one layer's are alive at a time (about 360 MB).
    """
    x0, x1 = net.scaling_layer(preds), net.scaling_layer(target)
    if net.resize is not None:
        x0, x1 = _resize_tensor(x0, size=net.resize), _resize_tensor(x1, size=net.resize)
    values, spatial = 0, 0  # summed layer by layer from 0, as LPIPS' sum() of its per-layer results
    for layer, (backbone_slice, head) in enumerate(zip(net.net.slices, net.lins)):
        x0, x1 = backbone_slice(x0), backbone_slice(x1)
        distance = head((_normalize_tensor(x0) - _normalize_tensor(x1)) ** 2)
        values = values + _spatial_average(distance, keep_dim=True)
        spatial = spatial + _upsample(distance, out_hw=tuple(preds.shape[2:]))
    return values.reshape(-1), spatial


def _weighted_region_mean(maps: torch.Tensor, weight: torch.Tensor, weight_sum: torch.Tensor) -> torch.Tensor:
    """sum(w * map) / (channels * sum(w)) per image of (B,C,H,W) maps and (B,1,H,W) weights (sum(w) > 0)."""
    return (maps * weight).flatten(1).sum(1) / (maps.shape[1] * weight_sum)


def _weighted_mse_and_psnr(
    edited: torch.Tensor, source: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region MSE (weighted mean of the squared-error map) and its PSNR, for one (C,H,W) image pair.

    Over the pixels with w > 0 only, in their order: for a 0/1 weight the sums are torchmetrics'
    ``mean_squared_error`` / ``peak_signal_noise_ratio`` of the selected pixels, bit for bit.
    """
    selected = (weight > 0).expand_as(source)
    if not selected.any():
        nan = torch.tensor(float("nan"), device=source.device)
        return nan, nan
    w = weight.expand_as(source)[selected]
    diff = edited[selected] - source[selected]
    mse = torch.sum(w * (diff * diff)) / w.sum()
    # torchmetrics' PSNR of that MSE (sum of squares / count with count 1).
    psnr = _psnr_compute(mse, torch.tensor(1, device=mse.device), torch.tensor(1.0, device=mse.device), base=10.0,
                         reduction="none")
    return mse, psnr


def background_metrics(
    source: torch.Tensor,
    edited: torch.Tensor,
    background: torch.Tensor,
    lpips: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Background fidelity of a batch: ``source``/``edited`` (B,3,H,W) in [0, 1], ``background`` (B,1,H,W) the
    background weight w = 1 - M, bool (binary masks) or float in [0, 1] (soft masks).

    Returns per-image float64 tensors for ``PIXEL_METRICS`` (LPIPS ones NaN without ``lpips``), NaN for images
    whose background weights sum to 0.
    """
    weight = background.to(source.dtype)
    # contiguous: torchmetrics' MSE flattens with view().
    src = (source * weight).contiguous()
    edt = (edited * weight).contiguous()
    weight_sum = weight.flatten(1).sum(1)  # the number of background pixels, for a binary mask
    empty = weight_sum == 0
    safe_sum = torch.where(empty, torch.ones_like(weight_sum), weight_sum)
    out: dict[str, torch.Tensor] = {}
    out["bg_psnr"] = peak_signal_noise_ratio(edt, src, data_range=1.0, reduction="none", dim=(1, 2, 3))
    out["bg_mse"] = torch.stack([mean_squared_error(edt[i], src[i]) for i in range(len(src))])
    ssim, ssim_map = ssim_with_map(edt, src)
    out["bg_ssim"] = ssim
    out["bg_ssim_region"] = _weighted_region_mean(ssim_map, weight, safe_sum)
    regions = [_weighted_mse_and_psnr(edt[i], src[i], weight[i]) for i in range(len(src))]
    out["bg_mse_region"] = torch.stack([mse for mse, _ in regions])
    out["bg_psnr_region"] = torch.stack([psnr for _, psnr in regions])
    if lpips is not None:
        values, spatial = lpips_with_map(lpips, edt * 2 - 1, src * 2 - 1)
        out["bg_lpips"] = values
        out["bg_lpips_region"] = _weighted_region_mean(spatial, weight, safe_sum)
    else:
        out["bg_lpips"] = out["bg_lpips_region"] = torch.full((len(src),), float("nan"), device=src.device)
    return {
        k: torch.where(empty, torch.full_like(v, float("nan")), v).detach().double().cpu()
        for k, v in ((k, out[k].reshape(-1)) for k in PIXEL_METRICS)
    }


# ----------------------------------------------------------------------------------------------------------------
# DINO structure distance


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
