"""The working image: the size the editor (and Grounded-SAM, in the masks stage) works at."""

from __future__ import annotations

from PIL import Image

SIZE_MULTIPLE = 64  # the VAE's 8x and the UNet's three 2x downsamplings
ASPECT_TOLERANCE = 1.2  # a working size whose aspect ratio differs from the image's by more than this is named


def working_size(image: Image.Image, size: int) -> tuple[int, int]:
    """(width, height): the longer side scaled to ``size``, both sides multiples of 64, aspect kept."""
    w, h = image.size
    scale = size / max(w, h)
    return (max(SIZE_MULTIPLE, round(w * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE),
            max(SIZE_MULTIPLE, round(h * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE))


def working_image(image: Image.Image, size: int) -> Image.Image:
    """The image the editor works on: RGB at ``working_size`` (bicubic)."""
    image = image.convert("RGB")
    work = working_size(image, size)
    return image if image.size == work else image.resize(work, Image.BICUBIC)


def aspect_change(original: tuple[int, int], work: tuple[int, int]) -> float:
    """How much the aspect ratio changes from ``original`` to ``work`` (both (width, height)): >= 1, 1 = kept."""
    ratio = (work[0] / work[1]) / (original[0] / original[1])
    return max(ratio, 1 / ratio)


def aspect_warning(original: tuple[int, int], work: tuple[int, int]) -> str | None:
    """A sentence naming a squashed or stretched working image, or None when the aspect is kept (within
    ``ASPECT_TOLERANCE``): sides are multiples of 64, so a 5000x300 image cannot keep its shape at 64 px."""
    change = aspect_change(original, work)
    if change <= ASPECT_TOLERANCE:
        return None
    return (f"the {original[0]}x{original[1]} image is edited at {work[0]}x{work[1]}: its aspect ratio changes "
            f"by a factor of {change:.2f} (sides are multiples of 64; a larger --size keeps it closer)")
