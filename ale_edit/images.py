"""The working image: the size the editor (and Grounded-SAM, in the masks stage) works at."""

from __future__ import annotations

from PIL import Image

SIZE_MULTIPLE = 64  # the VAE's 8x and the UNet's three 2x downsamplings


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
