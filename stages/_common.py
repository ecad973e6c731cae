"""What every stage shares: its command class (named failures in one line), reading params.yaml, the edit-type
option, writing a whole output folder atomically."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # stages run as scripts from the repository root
    sys.path.insert(0, str(ROOT))

from ale_edit.atomic import atomic_dir  # noqa: E402,F401  (re-exported for the stages)
from ale_edit.edit_types import EDIT_TYPE_KEYS, EDIT_TYPES, PIE_EDIT_TYPES, edit_type  # noqa: E402
from ale_edit.errors import EditInputError  # noqa: E402
import params as schema  # noqa: E402  (stages/params.py: params.yaml's schema)

# Failures that are the input's, the settings' or the disk's, never the code's: a stage names them in one line.
# EditInputError covers its kin (a bad image or mask, a bomb, a bad benchmark folder, a device this machine
# lacks); OSError a full disk or a missing input file.
NAMED_ERRORS = (EditInputError, schema.SettingError, OSError)


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line; an OSError that names its file says file and reason."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror and type(exc).__str__ is OSError.__str__:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


class StageCommand(click.Command):
    """A stage's click command: a failure in ``NAMED_ERRORS`` ends the stage with one line (``Error: ...``, exit
    status 1) and no traceback; any other exception is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except NAMED_ERRORS as exc:
            raise click.ClickException(one_line(exc)) from exc


# The decorator of every stage's main: ``@stage_command()`` where a plain command is ``@click.command()``.
stage_command = functools.partial(click.command, cls=StageCommand)

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
