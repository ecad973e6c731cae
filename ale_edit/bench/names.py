"""The names of what ALE-Bench measures and of the scoring settings' choices, apart from the code that computes
them: stages, the report and params.yaml's schema read them without importing torch."""

from __future__ import annotations

from typing import Union

CLIP_METRICS = ("edited_clip", "te_leakage", "te_leakage_joined", "ti_leakage")
PIXEL_METRICS = (
    "bg_psnr", "bg_ssim", "bg_lpips", "bg_mse",
    "bg_psnr_region", "bg_ssim_region", "bg_lpips_region", "bg_mse_region",
)
METRIC_COLUMNS = CLIP_METRICS + ("structure_distance",) + PIXEL_METRICS

MASK_WEIGHTS = ("binary", "soft")
# The reported TE: the per-edit column each variant reads, and how tables and logs name it.
TE_VARIANTS = {"mean": "te_leakage", "joined": "te_leakage_joined"}
TE_VARIANT_LABELS = {"mean": "eq. 6", "joined": "joined prompt"}
DINO_INPUTS = ("published", "corrected")

BACKGROUND = "background"
Region = Union[str, int]  # BACKGROUND, or the index of an edited object
