"""Pictures of results: edit grids (source | masks | edited, with the prompts written on them)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..io import resize_mask

MASK_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48))


def mask_overlay(image: Image.Image, masks: Sequence[np.ndarray | None], alpha: float = 0.5,
                 colors: Sequence[tuple[int, int, int]] = MASK_COLORS) -> Image.Image:
    """The image with each mask tinted in its own color (``colors[i]`` for mask i; a ``None`` mask keeps its color
    unused)."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for i, mask in enumerate(masks):
        if mask is None:
            continue
        m = resize_mask(mask, image.size)
        base[m] = (1 - alpha) * base[m] + alpha * np.array(colors[i % len(colors)], np.float32)
    return Image.fromarray(base.round().astype(np.uint8))


def _caption(draw: ImageDraw.ImageDraw, xy, text: str, width: int, font) -> None:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) > width and line:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    x, y = xy
    for ln in lines[:3]:
        draw.text((x, y), ln, fill=(0, 0, 0), font=font)
        y += 12


def edit_grid(rows: Sequence[Mapping], tile: int = 256) -> Image.Image:
    """One row per edit: source, source with its masks, edited; ``rows`` hold ``source`` (PIL), ``masks`` (list of
    bool arrays), ``edited`` (PIL) and ``caption`` (text)."""
    caption_h = 40
    font = ImageFont.load_default()
    grid = Image.new("RGB", (3 * tile, max(1, len(rows)) * (tile + caption_h)), "white")
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        y = r * (tile + caption_h)
        panels = [row["source"], mask_overlay(row["source"], row["masks"]), row["edited"]]
        for c, panel in enumerate(panels):
            grid.paste(panel.convert("RGB").resize((tile, tile), Image.BICUBIC), (c * tile, y + caption_h))
        _caption(draw, (4, y + 2), row["caption"], 3 * tile - 8, font)
    return grid


def method_grid(rows: Sequence[Mapping], methods: Sequence[str], tile: int = 192) -> Image.Image:
    """One row per edit: the source, then each method's edited image (a grey tile where a method has none).

    ``rows`` hold ``source`` (PIL), ``edited`` ({method: PIL}) and ``caption``; the method names head the columns.
    """
    header, caption_h = 20, 28
    font = ImageFont.load_default()
    columns = ["source", *methods]
    grid = Image.new("RGB", (len(columns) * tile, header + max(1, len(rows)) * (tile + caption_h)), "white")
    draw = ImageDraw.Draw(grid)
    for c, name in enumerate(columns):
        draw.text((c * tile + 4, 4), name, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        y = header + r * (tile + caption_h)
        _caption(draw, (4, y + 2), row["caption"], len(columns) * tile - 8, font)
        panels = [row["source"], *(row["edited"].get(m) for m in methods)]
        for c, panel in enumerate(panels):
            tile_image = Image.new("RGB", (tile, tile), (200, 200, 200)) if panel is None else \
                panel.convert("RGB").resize((tile, tile), Image.BICUBIC)
            grid.paste(tile_image, (c * tile, y + caption_h))
    return grid
