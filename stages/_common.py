"""What every stage shares: reading params.yaml, the model preset, writing a whole output folder atomically."""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # stages run as scripts from the repository root
    sys.path.insert(0, str(ROOT))

from ale_edit.bench.materialize import copy_tree_atomically  # noqa: E402

TINY = "tiny"


def load_params(path: str | Path = "params.yaml") -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def model_name(params: dict, which: str) -> str:
    """A model's id, or "tiny" when the preset says every model is tiny."""
    if params["model"]["preset"] == TINY:
        return TINY
    section = "score" if which in ("clip", "dino", "lpips") else "model"
    return str(params[section][which])


def schedule_key(edit_type: str) -> str:
    """The params.yaml key of an edit type ("color+object" -> "color_object"), also its stage and folder name."""
    return edit_type.replace("+", "_")


def edit_type_of(key: str) -> str:
    """The edit type of a params.yaml key or of a type name ("color_object" -> "color+object")."""
    from ale_edit.bench.dataset import EDIT_TYPES

    for edit_type in EDIT_TYPES:
        if key in (edit_type, schedule_key(edit_type)):
            return edit_type
    raise ValueError(f"unknown edit type {key!r}; choose one of {', '.join(map(schedule_key, EDIT_TYPES))}")


EDIT_TYPE_KEYS = ("color", "object", "material", "color_object", "object_material")


@contextmanager
def atomic_dir(target: str | Path):
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        copy_tree_atomically(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
