"""What every stage shares: reading params.yaml, the model preset, writing a whole output folder atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # stages run as scripts from the repository root
    sys.path.insert(0, str(ROOT))

from ale_edit.atomic import atomic_dir  # noqa: E402,F401  (re-exported for the stages)

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


def edit_type_of(key: str):
    """The ``EditType`` of a params.yaml key or a type name (either spelling: color_object, color+object)."""
    from ale_edit.edit_types import edit_type

    return edit_type(key)
