"""The masks of a benchmark's edits: refined masks imported, Grounded-SAM for the rest, one file per phrase and
phrase set, each with where it came from (``manual``, ``detected``, ``missing``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ..io import load_mask, resize_mask, save_mask
from ..paths import safe_file_name

MASK_SOURCES = ("manual", "auto", "manual-then-auto")


def phrase_set_key(phrases: Sequence[str]) -> str:
    """A short, stable folder name for an ordered tuple of source phrases."""
    return hashlib.sha1("\x1f".join(phrases).encode()).hexdigest()[:12]


def mask_phrase_sets(table: pd.DataFrame) -> dict[str, list[tuple[str, ...]]]:
    """``{image: [ordered source tuple, ...]}``: the detector prompts the edits need (the order matters to it)."""
    sets: dict[str, dict[tuple[str, ...], None]] = {}
    for row in table.itertuples(index=False):
        sets.setdefault(row.image, {})[tuple(row.sources)] = None
    return {image: list(s) for image, s in sorted(sets.items())}


def build_edit_masks(
    image: Image.Image,
    image_name: str,
    phrase_sets: Sequence[tuple[str, ...]],
    out_dir: Path,
    *,
    source: str,
    manual: Mapping[str, Path],
    detect: Callable[[Image.Image, Sequence[str]], Mapping[str, np.ndarray | None]] | None,
) -> list[dict]:
    """Masks at ``image``'s size for each phrase set of one image; one record per (set, phrase).

    ``source``: ``manual`` (the refined masks, ``manual[phrase]``), ``auto`` (Grounded-SAM on the set's phrases,
    one prompt per set, as the authors run it per edit) or ``manual-then-auto`` (refined where there is one).
    """
    if source not in MASK_SOURCES:
        raise ValueError(f"masks.source must be one of {', '.join(MASK_SOURCES)}, not {source!r}")
    records = []
    for phrases in phrase_sets:
        key = phrase_set_key(phrases)
        use_manual = {p: manual[p] for p in phrases if source != "auto" and p in manual}
        wanted = [p for p in phrases if p not in use_manual] if source != "manual" else []
        found = detect(image, wanted) if wanted and detect is not None else {}
        for phrase in phrases:
            if phrase in use_manual:
                # Refined masks are drawn on the full-size image: brought to the working size on purpose, silently.
                mask = load_mask(use_manual[phrase], name=phrase)
                mask = resize_mask(mask, image.size)
                origin = "manual"
            elif found.get(phrase) is not None:
                mask, origin = np.asarray(found[phrase], dtype=bool), "detected"
            else:
                mask, origin = None, "missing"
            file = None
            if mask is not None:
                path = out_dir / image_name / key / safe_file_name(phrase, "_mask.png")
                save_mask(path, mask)
                file = str(path.relative_to(out_dir))
            records.append({"image": image_name, "phrases": list(phrases), "set": key, "phrase": phrase,
                            "origin": origin, "file": file})
    return records
