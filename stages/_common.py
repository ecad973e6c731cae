"""What every stage shares: reading params.yaml, the edit-type option, writing a whole output folder atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # stages run as scripts from the repository root
    sys.path.insert(0, str(ROOT))

from ale_edit.atomic import atomic_dir  # noqa: E402,F401  (re-exported for the stages)
from ale_edit.edit_types import EDIT_TYPE_KEYS, EDIT_TYPES, PIE_EDIT_TYPES, edit_type  # noqa: E402
import params as schema  # noqa: E402  (stages/params.py: params.yaml's schema)


# The per-type stages' (edit@<type>, score@<type>) --edit-type: every spelling the one edit-type table accepts.
edit_type_option = click.option(
    "--edit-type", "type_key", required=True,
    type=click.Choice(EDIT_TYPE_KEYS + EDIT_TYPES + PIE_EDIT_TYPES),
    help="An edit type or its params.yaml key (color_object for color+object); on PIE-Bench one of its types "
         "(change_color).")


def load_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml, checked against its schema (``params.py``) before the stage does anything: a bad key or value
    is a named error, never a run with old settings."""
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f)
    try:
        schema.check_params(params or {})
    except schema.SettingError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    return params


def edit_type_of(key: str):
    """The ``EditType`` of a params.yaml key or a type name (either spelling: color_object, color+object)."""
    return edit_type(key)
