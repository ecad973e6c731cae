"""Reading images and mask files, with errors that name the file and the problem."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import EditInputError

MASK_THRESHOLD = 0.5


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load an RGB image, or raise an ``EditInputError`` naming the file and why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise EditInputError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise EditInputError(f"image cannot be read (corrupt or not an image): {path}: {exc}") from exc


def mask_from_image(im: Image.Image) -> np.ndarray:
    """Binarise a mask picture at 0.5: grey level (times alpha, when there is one) / 255 >= 0.5.

    Hand-refined masks come as 8-bit L, RGB or RGBA with antialiased edges; the object is white.
    """
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        grey = (rgba[..., 0] * 0.299 + rgba[..., 1] * 0.587 + rgba[..., 2] * 0.114) * rgba[..., 3]
    else:
        grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return grey >= MASK_THRESHOLD


def load_mask(path: str | os.PathLike, size: tuple[int, int] | None = None, *, name: str | None = None) -> np.ndarray:
    """Load a mask file as a boolean array of shape (height, width).

    ``size`` is the (width, height) the mask must have; a mask of another size is resized (nearest) with a
    warning. An empty mask is an error: it would silently turn an object edit into a background edit.
    """
    path = Path(path)
    label = f"mask for {name!r}" if name else "mask"
    if not path.is_file():
        raise EditInputError(f"{label} not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if size is not None and im.size != tuple(size):
                warnings.warn(
                    f"{label} {path} is {im.size[0]}x{im.size[1]}, the image is {size[0]}x{size[1]}: resized (nearest)",
                    stacklevel=2,
                )
                im = im.resize(tuple(size), Image.NEAREST)
            mask = mask_from_image(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise EditInputError(f"{label} cannot be read: {path}: {exc}") from exc
    if not mask.any():
        raise EditInputError(f"{label} is empty (no pixel >= 0.5): {path}")
    return mask
