"""Reading images and mask files, with errors that name the file and the problem.

Every mode PIL opens is brought to 8 bits by value, not by clipping: PIL's own ``convert`` clips the high-depth
grey modes (a 16-bit PNG would come out almost white). The rules, per mode:

- ``I;16``, ``I;16B``, ``I;16L``, ``I;16N`` (16-bit grey): ``round(v / 257)``, so 65535 -> 255.
- ``I`` (32-bit signed integer): PIL gives it for 16-bit data (16-bit PPM; 16-bit grey PNG in older Pillow), so
  it is read as 16-bit data when its values lie in [0, 65535]; other values are an error naming their range.
- ``F`` (32-bit float): values in [0, 1] are scaled by 255 (``round(255 v)``); other ranges (and NaN) are an error
  naming the range.
- The 8-bit modes PIL converts correctly (``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``,
  ``HSV``, and with alpha ``LA``, ``PA``, ``RGBA``, ``RGBa``, ``La``) are left to PIL's conversions.
- Any other mode is an ``EditInputError`` naming the file and the mode.

16-bit RGB, RGBA and LA PNGs never reach this code at 16 bits: PIL's PNG decoder gives them as 8-bit ``RGB``,
``RGBA``, ``LA`` keeping the high byte (``v >> 8``, at most 1 below ``round(v / 257)``).

Every picture (image or mask) is read in the orientation it displays in: a photo's EXIF Orientation tag (a phone's
portrait JPEG is stored sideways with Orientation 6) is applied on load (``ImageOps.exif_transpose``), and the
callers record it. A picture of more than ``max_image_pixels()`` pixels is refused from its header, before its
pixels are decoded (``ImageTooLargeError``): PIL's decompression-bomb guard, as a named error; the environment
variable ``ALE_EDIT_MAX_IMAGE_PIXELS`` raises (or lowers) the limit deliberately.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Mapping

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .atomic import save_image
from .errors import EditInputError

MASK_THRESHOLD = 0.5

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
SIXTEEN_BIT_MAX = 65535
# 8-bit modes whose conversions to RGB, RGBA and L in PIL are correct (checked value by value in the tests).
EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA", "RGBA", "RGBa")
# Modes with an alpha band; a ``P`` image with a "transparency" entry has one too.
ALPHA_MODES = ("LA", "PA", "RGBA", "RGBa")


def _sixteen_bit_to_l(values: np.ndarray) -> Image.Image:
    """An ``L`` image of 16-bit ``values`` (integers in [0, 65535]): round(v / 257).

    Integer arithmetic: v / 257 is never a tie (257 is odd), so floor((2 v + 257) / 514) is round(v / 257).
    """
    values = values.astype(np.int64)
    return Image.fromarray(((2 * values + 257) // 514).astype(np.uint8), "L")


def _value_range(values: np.ndarray) -> str:
    return f"[{values.min()}, {values.max()}]" if values.size else "[]"


def to_8bit(im: Image.Image, source: str | os.PathLike = "image") -> Image.Image:
    """``im`` in an 8-bit mode whose PIL conversions to RGB, RGBA and L are correct, scaled by value.

    The 16-bit, ``I`` and ``F`` grey modes become ``L`` by the rules in this module's docstring; ``La`` (alpha
    premultiplied, which PIL converts only to ``LA``) becomes ``LA``; the other 8-bit modes are returned as they
    are. ``source`` (the file) is named in the ``EditInputError`` raised for a mode or a range that has no
    8-bit reading.
    """
    mode = im.mode
    if mode in EIGHT_BIT_MODES:
        return im
    if mode == "La":
        return im.convert("LA")
    if mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_l(np.asarray(im))
    if mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > SIXTEEN_BIT_MAX):
            raise EditInputError(
                f"{source}: image mode 'I' (32-bit integer) with values in {_value_range(values)}; it is read as "
                f"16-bit data, which must lie in [0, {SIXTEEN_BIT_MAX}]"
            )
        return _sixteen_bit_to_l(values)
    if mode == "F":
        values = np.asarray(im, dtype=np.float64)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
            raise EditInputError(
                f"{source}: image mode 'F' (32-bit float) with values in {_value_range(values)}; float images "
                f"must lie in [0, 1]"
            )
        return Image.fromarray(np.floor(values * 255.0 + 0.5).astype(np.uint8), "L")  # round half up
    raise EditInputError(
        f"{source}: image mode {mode!r} is not supported (supported: "
        f"{', '.join(EIGHT_BIT_MODES + ('La',) + SIXTEEN_BIT_MODES + ('I', 'F'))})"
    )


class Files:
    """Where the loaders read a file: from this machine's disk (``DISK``), or from contents read on another
    machine and sent along (``ShippedFiles``). Either way the path names the file, in errors too."""

    def exists(self, path: Path) -> bool:
        return path.is_file()

    def open(self, path: Path) -> Path | BinaryIO:
        """What ``PIL.Image.open`` reads."""
        return path


DISK = Files()


class ShippedFiles(Files):
    """Files read where they are and sent with the work, e.g. to a Ray worker that shares no file system with the
    driver: ``{path: contents}``. A path that is not in it counts as a missing file (the sender found none there);
    the worker's own disk is never looked at."""

    def __init__(self, contents: Mapping[str, bytes]):
        self.contents = dict(contents)

    def exists(self, path: Path) -> bool:
        return str(path) in self.contents

    def open(self, path: Path) -> BinaryIO:
        return io.BytesIO(self.contents[str(path)])


MAX_PIXELS_VARIABLE = "ALE_EDIT_MAX_IMAGE_PIXELS"
BOMB_PIXELS = re.compile(r"Image size \((\d+) pixels\)")
# EXIF Orientation -> how the stored picture is turned to display it (the tag's meaning in the EXIF standard).
ORIENTATIONS = {1: "as stored", 2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom",
                5: "transposed", 6: "rotated 90 degrees clockwise", 7: "transversed",
                8: "rotated 90 degrees counter-clockwise"}


class ImageTooLargeError(EditInputError):
    """A picture with more pixels than ``max_image_pixels()``: a decompression bomb, or a deliberate giant."""


def max_image_pixels() -> int | None:
    """The most pixels a picture may have: ``ALE_EDIT_MAX_IMAGE_PIXELS`` when set (a whole number; ``none``: no
    limit), else PIL's ``Image.MAX_IMAGE_PIXELS`` (89,478,485, about 9459 x 9459, unless a program changed it). A
    bad value is an ``EditInputError`` naming the variable."""
    raw = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not raw:
        return Image.MAX_IMAGE_PIXELS
    if raw.lower() == "none":
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise EditInputError(f"{MAX_PIXELS_VARIABLE}={raw!r} must be a positive whole number of pixels (or none)")
    return int(raw)


def too_large(path, label: str, pixels: int | None, limit: int) -> ImageTooLargeError:
    count = f"{pixels:,} pixels" if pixels is not None else "more pixels"
    return ImageTooLargeError(
        f"{label} {path} has {count}, over the limit of {limit:,} (PIL's decompression-bomb guard); to read it "
        f"deliberately, raise the limit: {MAX_PIXELS_VARIABLE}={max(limit, pixels or 0) + 1} (or none)")


@contextmanager
def _open_checked(path: Path, label: str, files: Files, unreadable: str):
    """``Image.open`` under the pixel limit: PIL's guard (its warning above the limit, its error above twice the
    limit) as an ``ImageTooLargeError``; a file PIL cannot read as an ``EditInputError``."""
    limit = max_image_pixels()
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = limit  # the guard PIL applies inside open(), from the header alone
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(files.open(path))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = BOMB_PIXELS.search(str(exc))
        raise too_large(path, label, int(found.group(1)) if found else None, limit) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise EditInputError(f"{label} {unreadable}: {path}: {exc}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit  # the process's own PIL limit, as it was, for every other reader
    with im:
        yield im


def exif_orientation(im: Image.Image) -> int:
    """The EXIF Orientation of an opened picture (1 to 8; 1 when it has none or an unknown value)."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, TypeError):  # a malformed EXIF block: shown as stored, as viewers do
        return 1
    return value if value in ORIENTATIONS else 1


def orientation_note(path, orientation: int) -> str | None:
    """A sentence naming an applied EXIF orientation, or None for 1 (as stored)."""
    if orientation == 1:
        return None
    return (f"{path} has EXIF Orientation {orientation}: read as it displays ({ORIENTATIONS[orientation]} from "
            f"how it is stored)")


@contextmanager
def oriented_image(path: Path, label: str, files: Files = DISK, unreadable: str = "cannot be read"):
    """``(picture, orientation)`` for the ``with`` body: the picture in ``path``, loaded, in the orientation it
    displays in, and the EXIF orientation that was applied (1: none). A missing file, one over the pixel limit,
    or one PIL cannot read is an ``EditInputError`` naming ``label`` and the file (``unreadable`` says what a
    read failure means)."""
    if not files.exists(path):
        raise EditInputError(f"{label} not found: {path}")
    with _open_checked(path, label, files, unreadable) as im:
        try:
            im.load()
            orientation = exif_orientation(im)
            shown = ImageOps.exif_transpose(im) if orientation != 1 else im
        except (OSError, SyntaxError) as exc:
            raise EditInputError(f"{label} {unreadable}: {path}: {exc}") from exc
        yield shown, orientation


@contextmanager
def opened_image(path: Path, label: str, files: Files = DISK, unreadable: str = "cannot be read"):
    """The picture in ``path``, loaded, in the orientation it displays in, for the ``with`` body (see
    ``oriented_image``)."""
    with oriented_image(path, label, files, unreadable) as (im, _):
        yield im


IMAGE_UNREADABLE = "cannot be read (corrupt or not an image)"


def read_image(path: str | os.PathLike, *, files: Files = DISK) -> tuple[Image.Image, int]:
    """``(image, orientation)``: the RGB image as it displays and the EXIF orientation applied to it (1: none);
    errors as ``load_image``."""
    path = Path(path)
    with oriented_image(path, "image", files, IMAGE_UNREADABLE) as (im, orientation):
        return to_8bit(im, path).convert("RGB"), orientation


def load_image(path: str | os.PathLike, *, files: Files = DISK) -> Image.Image:
    """Load an RGB image, in the orientation it displays in (EXIF applied), or raise an ``EditInputError`` naming
    the file and why it cannot be read (``ImageTooLargeError`` over the pixel limit).

    Every mode is brought to 8 bits by value (see the module docstring); an alpha band is dropped. ``files``: where
    the file is read (see ``Files``).
    """
    return read_image(path, files=files)[0]


def mask_from_image(im: Image.Image, source: str | os.PathLike = "mask") -> np.ndarray:
    """Binarise a mask picture at 0.5: grey level (times alpha, when there is one) / full scale >= 0.5.

    Hand-refined masks come as 8-bit L, RGB or RGBA with antialiased edges; the object is white. Other modes are
    first brought to 8 bits by value (``to_8bit``), which keeps the decision: a 16-bit level v is >= 32768 exactly
    when round(v / 257) >= 128, and a float level f is >= 0.5 exactly when round(255 f) >= 128. The grey level is
    the luma of the picture's RGB (ITU-R 601-2, as PIL's ``L``).
    """
    im = to_8bit(im, source)
    if im.mode in ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        grey = (rgba[..., 0] * 0.299 + rgba[..., 1] * 0.587 + rgba[..., 2] * 0.114) * rgba[..., 3]
    else:
        grey = np.asarray(im.convert("RGB").convert("L"), dtype=np.float32) / 255.0
    return grey >= MASK_THRESHOLD


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D mask as a boolean array of ``size`` (width, height), nearest-resized; as it is when it has that size."""
    mask = np.asarray(mask, dtype=bool)
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return np.asarray(Image.fromarray(mask).resize(tuple(size), Image.NEAREST))


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a boolean mask as the mask files are (ALE-Bench's and the pipeline's): 8-bit grey, 0 or 255."""
    save_image(path, Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L"))


def mask_label(name: str | None) -> str:
    """How errors name a mask: by its phrase when known."""
    return f"mask for {name!r}" if name else "mask"


def load_mask(path: str | os.PathLike, size: tuple[int, int] | None = None, *, name: str | None = None,
              files: Files = DISK) -> np.ndarray:
    """Load a mask file as a boolean array of shape (height, width).

    ``size`` is the (width, height) the mask must have; a mask of another size is resized (nearest) with a
    warning. An empty mask is an error: it would silently turn an object edit into a background edit. ``files``:
    where the file is read (see ``Files``).
    """
    path = Path(path)
    label = mask_label(name)
    with opened_image(path, label, files) as im:
        if size is not None and im.size != tuple(size):
            warnings.warn(
                f"{label} {path} is {im.size[0]}x{im.size[1]}, the image is {size[0]}x{size[1]}: resized (nearest)",
                stacklevel=2,
            )
            im = im.resize(tuple(size), Image.NEAREST)
        mask = mask_from_image(im, f"{label} {path}")
    if not mask.any():
        raise EditInputError(f"{label} is empty (no pixel >= 0.5): {path}")
    return mask
