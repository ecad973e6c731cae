"""Mask arithmetic shared by the editor and the detector: dilation by a disk."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt


def dilation_radius(fraction: float, size: int) -> int:
    """The dilation radius in pixels: ``fraction`` of the working size, floored (as the authors' code does)."""
    return int(fraction * size)


def dilate_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilate a boolean mask by a disk of ``radius`` pixels (every pixel within Euclidean distance ``radius`` of
    the mask). Exact for any radius in time linear in the pixels, unlike a structuring-element dilation."""
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0 or not mask.any():
        return mask.copy()
    return distance_transform_edt(~mask) <= radius
