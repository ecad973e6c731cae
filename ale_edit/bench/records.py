"""The edits to score: ``EditRecord`` (where an edit's images and masks are, what was asked), the ways to build
them (a results folder in the authors' layout, or the edit stage's table), and loading them into pixels
(``prepare_edit``): images, and masks as binary masks or as the authors' soft weights.

An edited image of another size than its source is an error unless ``resize_edited`` is given; then it is resized
(PIL bicubic, as the authors' ``Image.resize`` default) and the edit records the size it had (``resized_from``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Mapping

import numpy as np
import pandas as pd
from PIL import Image

from ..edit_types import PIE_EDIT_TYPES
from ..errors import EditInputError
from ..io import DISK, Files, load_image, load_mask, mask_label, opened_image
from ..prompts import unmark
from . import dataset
from .dataset import EDIT_TYPES, EditPairs, PromptInstance
from .instances import ERROR_COLUMN, row_prompts
from .names import BACKGROUND, MASK_WEIGHTS, Region

log = logging.getLogger(__name__)

LAYOUTS = ("authors",)
SOFT_MASKS_KEY = "source_objects"  # manifest entry: {phrase: the source's own (antialiased) mask file}


@dataclass(frozen=True)
class EditRecord(EditPairs):
    """One edit to score: where its images and masks are, and what was asked.

    ``masks`` maps phrases to mask files; it must hold every source phrase of ``edits`` (it may hold more: only the
    edited objects' masks are used). ``input_error``, when set, is a problem found while building the record (for
    example a benchmark folder with two masks for one phrase, or a PIE-Bench entry without a pair); the edit is
    then recorded as failed with it. ``target_prompt`` (PIE-Bench): the whole target prompt, which its "Edited"
    score reads the edited region against, as PIE-Bench's ``clip_similarity_target_image_edit_part``.
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
    target_prompt: str | None = None

    @classmethod
    def for_instance(cls, instance: PromptInstance, *, source_image: Path, edited_image: Path,
                     masks: Mapping[str, Path], edit_id: str | None = None,
                     input_error: str | None = None, target_prompt: str | None = None) -> "EditRecord":
        """The record of a benchmark instance (its key is the edit id unless ``edit_id`` says otherwise)."""
        return cls(
            edit_id=edit_id or instance.key, source_image=Path(source_image), edited_image=Path(edited_image),
            masks=masks, edits=instance.edits, edit_type=instance.edit_type, n_objects=instance.n_objects,
            image=instance.image, index=instance.index, input_error=input_error, target_prompt=target_prompt,
        )


# ----------------------------------------------------------------------------------------------------------------
# Masks as weights


def load_mask_levels(path: str | os.PathLike, *, name: str | None = None, files: Files = DISK) -> np.ndarray:
    """A mask file's grey levels (uint8 HxW) as the authors' evaluation reads them: ``Image.open(p).convert("L")``
    (an alpha channel is ignored, as there). An all-black mask is an error, as an empty binary mask is."""
    path = Path(path)
    label = mask_label(name)
    with opened_image(path, label, files) as im:
        levels = np.array(im.convert("L"))
    if not levels.any():
        raise EditInputError(f"{label} is empty (every pixel is 0): {path}")
    return levels


def load_mask_weights(path: str | os.PathLike, *, name: str | None = None) -> np.ndarray:
    """A mask as the authors' continuous weights: grey level / 255.0, float64 HxW in [0, 1]."""
    return mask_weight(load_mask_levels(path, name=name))


def mask_weight(mask: np.ndarray) -> np.ndarray:
    """Float64 weights of a stored mask: a boolean mask as 0/1, grey levels (uint8) as level / 255.0.

    Soft masks are kept as their uint8 levels (a quarter of the memory of the weights, and exact: the weights,
    their per-pixel maximum and 1 - weight are all recomputed from them as the authors compute them).
    """
    if mask.dtype == np.bool_:
        return mask.astype(np.float64)
    if mask.dtype == np.uint8:
        return mask / 255.0
    raise TypeError(f"a mask is stored as bool or uint8 grey levels, not {mask.dtype}")


def load_object_mask(path: str | os.PathLike, mask_weights: str, *, name: str | None = None,
                     files: Files = DISK) -> np.ndarray:
    """An object's mask as ``mask_weights`` stores it: bool (``"binary"``) or uint8 grey levels (``"soft"``)."""
    if mask_weights == "binary":
        return load_mask(path, name=name, files=files)
    if mask_weights == "soft":
        return load_mask_levels(path, name=name, files=files)
    raise ValueError(f"unknown mask_weights {mask_weights!r}; choose one of {MASK_WEIGHTS}")


# ----------------------------------------------------------------------------------------------------------------
# Loading an edit's pixels


@dataclass
class PreparedEdit:
    """An edit's pixels, loaded and checked: uint8 HxWx3 images of equal size and the edited objects' masks in
    edit order, each bool (binary weights) or uint8 grey levels (soft weights, see ``mask_weight``).

    ``union`` is M: the logical or of binary masks, the per-pixel maximum of grey levels (``ImageChops.lighter``).
    ``resized_from`` is the edited image's (width, height) when it was resized to the source's size.
    """

    record: EditRecord
    source: np.ndarray
    edited: np.ndarray
    object_masks: tuple[np.ndarray, ...]
    resized_from: tuple[int, int] | None = None
    union: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.union = functools.reduce(np.maximum, self.object_masks)

    @property
    def background_weight(self) -> np.ndarray:
        """1 - M, float64 HxW (for binary masks: 1 on the background, 0 on the edited objects)."""
        return 1.0 - mask_weight(self.union)

    @property
    def has_background(self) -> bool:
        return not bool((mask_weight(self.union) == 1.0).all())

    def region_weight(self, region: Region) -> np.ndarray:
        """The weight CLIP sees a region through: 1 - M for ``BACKGROUND``, else object ``region``'s mask."""
        return self.background_weight if region == BACKGROUND else mask_weight(self.object_masks[region])


class LRUCache(OrderedDict):
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


def check_record(record: EditRecord) -> None:
    """Raise ``EditInputError`` when a record cannot be scored whatever its files hold."""
    if record.input_error:
        raise EditInputError(record.input_error)
    if record.edit_type not in EDIT_TYPES + PIE_EDIT_TYPES:
        raise EditInputError(f"unknown edit type {record.edit_type!r}; known: {', '.join(EDIT_TYPES)} (ALE-Bench), "
                             f"{', '.join(PIE_EDIT_TYPES)} (PIE-Bench)")
    if not record.edits:
        raise EditInputError("the edit has no (source, target) pairs")
    if len(record.edits) != record.n_objects:
        raise EditInputError(f"{len(record.edits)} edits filed under {record.n_objects} objects")
    if len(set(record.sources)) != len(record.sources):
        raise EditInputError(f"a source phrase is edited twice: {list(record.sources)}")


def record_files(record: EditRecord) -> list[Path]:
    """The files ``prepare_edit`` reads for ``record``: source, edited image, the edited objects' masks."""
    return [Path(record.source_image), Path(record.edited_image),
            *(Path(record.masks[p]) for p in record.sources if p in record.masks)]


def prepare_edit(
    record: EditRecord,
    *,
    cache: LRUCache | None = None,
    mask_weights: str = "binary",
    resize_edited: bool = False,
    files: Files = DISK,
) -> PreparedEdit:
    """Load and check an edit's source, edited image and object masks; raise ``EditInputError`` naming the problem.

    ``mask_weights``: ``"binary"`` masks (binarised at 0.5) or ``"soft"`` (grey levels, the authors' weights).
    ``resize_edited``: resize an edited image of another size than the source's (bicubic) instead of failing.
    ``files``: where the files are read (``ale_edit.io.Files``: this disk, or contents sent to a Ray worker).
    """
    if mask_weights not in MASK_WEIGHTS:
        raise ValueError(f"unknown mask_weights {mask_weights!r}; choose one of {MASK_WEIGHTS}")
    cache = cache if cache is not None else LRUCache(0)
    check_record(record)
    source = cache.get_or(("image", str(record.source_image)),
                          lambda: np.array(load_image(record.source_image, files=files)))
    edited_im = load_image(record.edited_image, files=files)
    height, width = source.shape[:2]
    resized_from = None
    if edited_im.size != (width, height):
        if not resize_edited:
            raise EditInputError(
                f"the edited image is {edited_im.size[0]}x{edited_im.size[1]}, the source image is {width}x{height}: "
                f"{record.edited_image} (resize_edited / --resize-edited resizes it bicubically, as the authors' "
                f"evaluation does)"
            )
        resized_from = edited_im.size
        edited_im = edited_im.resize((width, height), Image.BICUBIC)
    masks = []
    for phrase in record.sources:
        path = record.masks.get(phrase)
        if path is None:
            raise EditInputError(f"no mask for edited phrase {phrase!r} (masks: {sorted(record.masks)})")
        mask = cache.get_or(("mask", mask_weights, str(path)),
                            lambda: load_object_mask(path, mask_weights, name=phrase, files=files))
        if mask.shape != (height, width):
            raise EditInputError(
                f"mask for {phrase!r} is {mask.shape[1]}x{mask.shape[0]}, the source image is {width}x{height}: {path}"
            )
        masks.append(mask)
    return PreparedEdit(record, source, np.array(edited_im), tuple(masks), resized_from)


# ----------------------------------------------------------------------------------------------------------------
# Building records


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
        records.append(EditRecord.for_instance(
            inst, source_image=dataset.image_path(bench_dir, inst.image),
            edited_image=dataset.edited_image_path(results_dir, inst), masks=image_masks, input_error=problem,
        ))
    _warn_unmatched_folders(results_dir, {(i.n_objects, i.edit_type, i.image) for i in instances})
    return records


def records_from_edit_table(
    results_dir: str | os.PathLike, bench_dir: str | os.PathLike, *, mask_weights: str = "binary"
) -> list[EditRecord]:
    """The edits the edit stage made (``results_dir/edits.parquet``) against the materialised benchmark
    (``bench_dir/manifest.json``): edited image, source, ground-truth masks.

    The materialised benchmark's masks (``objects``) are binarised; soft weights need the source's own masks,
    which its manifest lists under ``source_objects``. Without them ``"soft"`` is an error rather than a silent
    binary score.

    An edit the edit stage recorded as failed (its ``error`` column; it has no image) becomes a record carrying
    that error, so it is scored as an error row; so does a PIE-Bench table's row with an ``error`` (no pair), whose
    whole target prompt, without the marks, is the record's ``target_prompt``.
    """
    results_dir, bench_dir = Path(results_dir), Path(bench_dir)
    manifest = json.loads((bench_dir / "manifest.json").read_text())
    entries = {e["image"]: e for e in manifest["images"]}
    masks_key = SOFT_MASKS_KEY if mask_weights == "soft" else "objects"
    missing = sorted(image for image, e in entries.items() if masks_key not in e)
    if missing:
        raise EditInputError(
            f"the benchmark manifest {bench_dir / 'manifest.json'} lists no {masks_key!r} for {', '.join(missing)}: "
            f"soft mask weights need the source's antialiased masks (the materialised ones are binarised)"
        )
    table = pd.read_parquet(results_dir / "edits.parquet")
    records = []
    for row in table.itertuples(index=False):
        entry = entries[row.image]
        instance = PromptInstance(row.image, int(row.n_objects), row.edit_type, int(row.index),
                                  tuple((str(s), str(t)) for s, t in zip(row.sources, row.targets)))
        prompts = row_prompts(row)
        error = getattr(row, ERROR_COLUMN, None)  # a string; None, NaN or absent (older tables) for a good edit
        if isinstance(error, str) and isinstance(getattr(row, "fingerprint", None), str):
            error = f"the edit failed: {error}"  # the edit stage's; a row without a fingerprint was never edited
        records.append(EditRecord.for_instance(
            instance, edit_id=row.edit_id, source_image=bench_dir / entry["file"],
            # An error row has no image: its record fails with its error before any is read.
            edited_image=results_dir / (row.path if isinstance(row.path, str) else ""),
            masks={p: bench_dir / f for p, f in entry[masks_key].items()},
            input_error=error if isinstance(error, str) else None,
            target_prompt=unmark(prompts[1]) if prompts else None,
        ))
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
