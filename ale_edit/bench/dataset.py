"""Reading the ALE-Bench folder layout, and locating edited outputs in the authors' results layout.

Benchmark (as published by the authors, ``ml-postech/ALE``, folder ``ale_bench/``)::

    images/<image>.jpg
    masks/<image>/<phrase>_mask.png          phrase = file name up to the first "_" (spaces occur)
    prompts/<n objects>/<edit type>/<image>_prompts.json
        {"image": ..., "prompts": [{"index": i, "editing_types": [...], "edits": [[source, target], ...]}, ...]}

Results, in the authors' layout: ``results/<n objects>/<edit type>/<image>/edit_<index>.png``.

Pure functions and frozen dataclasses; nothing here loads pixels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..edit_types import EDIT_TYPES
from ..errors import EditInputError

OBJECT_COUNTS = (1, 2, 3)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = ".png"
PROMPTS_SUFFIX = "_prompts.json"


class BenchLayoutError(EditInputError):
    """The benchmark folder does not have the layout or content ALE-Bench has."""


class EditPairs:
    """What a class holding ``edits``, (source phrase, target phrase) pairs, reads of them."""

    edits: tuple[tuple[str, str], ...]

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.edits)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t for _, t in self.edits)


@dataclass(frozen=True)
class PromptInstance(EditPairs):
    """One edit of ALE-Bench: ``edits`` are (source phrase, target phrase) pairs, one per edited object."""

    image: str
    n_objects: int
    edit_type: str
    index: int
    edits: tuple[tuple[str, str], ...]
    editing_types: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """A unique, readable id: ``<n objects>/<edit type>/<image>/<index>``."""
        return f"{self.n_objects}/{self.edit_type}/{self.image}/{self.index}"


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def list_images(root: str | os.PathLike) -> list[str]:
    """Names (file stems) of the source images in ``root/images``, sorted."""
    folder = Path(root) / "images"
    if not folder.is_dir():
        raise BenchLayoutError(f"no images folder in the benchmark: {folder}")
    return sorted(
        p.stem for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES
    )


def image_path(root: str | os.PathLike, image: str) -> Path:
    """The source image file of ``image``; ``images/<image>.jpg`` (which may not exist) when none is found."""
    folder = Path(root) / "images"
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{image}{suffix}", folder / f"{image}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return folder / f"{image}.jpg"


def mask_phrase(filename: str) -> str:
    """The phrase a mask file stands for: its name up to the first ``_`` (``"yoga mat_mask.png"`` -> ``"yoga mat"``)."""
    return filename.split("_", 1)[0]


def masks_for_image(root: str | os.PathLike, image: str) -> dict[str, Path]:
    """``{phrase: mask path}`` for ``image``; hidden files (``.DS_Store``), folders and non-PNG files are ignored.

    No mask folder gives ``{}`` (every edit of the image then fails with a "no mask" reason). Two files for the
    same phrase is an error: which one the ground truth is would be a guess.
    """
    folder = Path(root) / "masks" / image
    if not folder.is_dir():
        return {}
    masks: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and _visible(path) and path.suffix.lower() == MASK_SUFFIX):
            continue
        phrase = mask_phrase(path.name)
        if phrase in masks:
            raise BenchLayoutError(f"two masks for {phrase!r} in {folder}: {masks[phrase].name}, {path.name}")
        masks[phrase] = path
    return masks


def load_prompt_file(path: str | os.PathLike, n_objects: int, edit_type: str) -> list[PromptInstance]:
    """The edit instances of one ``<image>_prompts.json`` filed under ``prompts/<n_objects>/<edit_type>/``."""
    path = Path(path)
    image = path.name[: -len(PROMPTS_SUFFIX)] if path.name.endswith(PROMPTS_SUFFIX) else path.stem
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchLayoutError(f"cannot read prompt file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list):
        raise BenchLayoutError(f"prompt file {path} has no 'prompts' list")
    if data.get("image", image) != image:
        raise BenchLayoutError(f"prompt file {path} is for image {data['image']!r}, its name says {image!r}")
    instances = []
    for position, entry in enumerate(data["prompts"]):
        try:
            edits = tuple((str(s), str(t)) for s, t in entry["edits"])
            index = int(entry.get("index", position))
            editing_types = tuple(str(t) for t in entry.get("editing_types", ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchLayoutError(f"prompt {position} of {path} is malformed: {exc!r}") from exc
        instances.append(PromptInstance(image, n_objects, edit_type, index, edits, editing_types))
    return instances


def _type_order(edit_type: str) -> tuple[int, str]:
    return (EDIT_TYPES.index(edit_type) if edit_type in EDIT_TYPES else len(EDIT_TYPES), edit_type)


def load_prompt_instances(
    root: str | os.PathLike,
    *,
    n_objects: int | list[int] | None = None,
    edit_types: str | list[str] | None = None,
    images: str | list[str] | None = None,
) -> list[PromptInstance]:
    """All edit instances under ``root/prompts``, sorted by (objects, edit type, image, index); optionally filtered.

    Folders that are not a number of objects, and files that are not ``*_prompts.json``, are ignored. Edit-type
    folders are taken as they are, known or not (scoring records an unknown type as the edit's error).
    """
    folder = Path(root) / "prompts"
    if not folder.is_dir():
        raise BenchLayoutError(f"no prompts folder in the benchmark: {folder}")
    wanted_n = {n_objects} if isinstance(n_objects, int) else (set(n_objects) if n_objects else None)
    wanted_t = {edit_types} if isinstance(edit_types, str) else (set(edit_types) if edit_types else None)
    wanted_i = {images} if isinstance(images, str) else (set(images) if images else None)
    instances: list[PromptInstance] = []
    for n_dir in folder.iterdir():
        if not (n_dir.is_dir() and n_dir.name.isdigit()):
            continue
        n = int(n_dir.name)
        if wanted_n is not None and n not in wanted_n:
            continue
        for type_dir in n_dir.iterdir():
            if not (type_dir.is_dir() and _visible(type_dir)):
                continue
            if wanted_t is not None and type_dir.name not in wanted_t:
                continue
            for file in type_dir.iterdir():
                if not (file.is_file() and _visible(file) and file.name.endswith(PROMPTS_SUFFIX)):
                    continue
                if wanted_i is not None and file.name[: -len(PROMPTS_SUFFIX)] not in wanted_i:
                    continue
                instances.extend(load_prompt_file(file, n, type_dir.name))
    instances.sort(key=lambda p: (p.n_objects, _type_order(p.edit_type), p.image, p.index))
    return instances


def result_folder(results_root: str | os.PathLike, n_objects: int, edit_type: str, image: str) -> Path:
    """``results/<n objects>/<edit type>/<image>`` (the authors' layout)."""
    return Path(results_root) / str(n_objects) / edit_type / image


def edited_image_path(results_root: str | os.PathLike, instance: PromptInstance) -> Path:
    """Where the authors' layout keeps the edited image of ``instance``: ``.../<image>/edit_<index>.png``."""
    return result_folder(results_root, instance.n_objects, instance.edit_type, instance.image) / (
        f"edit_{instance.index}.png"
    )
