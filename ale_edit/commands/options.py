"""Command-line options derived from the settings dataclasses, not spelled again: one option per field (its help,
type, range and choices from the field), and ``--set SECTION.KEY=VALUE`` for any method's options."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import click
import yaml

from ..options import SettingError, check_number, did_you_mean, settable_fields, value_type


class Number(click.ParamType):
    """A float option under the settings' one numeric rule (``options.check_number``): finite and within
    [minimum, maximum]. click's ``FloatRange`` lets NaN through every bound and infinity through an open one.
    ``where`` names the setting in the message (its params.yaml key, e.g. ``edit.eta``)."""

    name = "float"

    def __init__(self, where: str, minimum: float | None = None, maximum: float | None = None):
        self.where, self.minimum, self.maximum = where, minimum, maximum

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        try:
            return check_number(number, self.where, self.minimum, self.maximum)
        except SettingError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param, ctx=None) -> str:
        low = "" if self.minimum is None else f"{self.minimum}<="
        high = "" if self.maximum is None else f"<={self.maximum}"
        return f"FLOAT {low}x{high}" if low or high else "FLOAT"


def _default_text(f: dataclasses.Field) -> str:
    default = f.metadata.get("default")
    if f.metadata.get("compat"):
        return f"{default}; from --compat when not given"
    return str(default).lower() if isinstance(default, bool) else str(default)


def field_option(cls, f: dataclasses.Field, section: str):
    """The click option of one settings field; its default is ``None`` (not given), so the settings' own default,
    or the compat profile's value, applies. ``section``: the params.yaml section its errors name."""
    flag = "--" + f.name.replace("_", "-")
    kind = value_type(cls, f)
    help_text = f"{f.metadata.get('help', '')} [default: {_default_text(f)}]"
    if kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)
    choices, low, high = f.metadata.get("choices"), f.metadata.get("minimum"), f.metadata.get("maximum")
    if choices:
        kind = click.Choice([str(c) for c in choices])
    elif kind is int:
        kind = click.IntRange(low, high)
    elif kind is float:
        kind = Number(f"{section}.{f.name}" if section else f.name, low, high)
    return click.option(flag, f.name, type=kind, default=None, help=help_text)


def settings_options(cls, section: str | None = None):
    """A decorator adding one option per command-line field of the settings dataclass ``cls``; its errors name the
    params.yaml ``section`` (by default the class's own ``section``, e.g. ``ale``)."""
    section = getattr(cls, "section", "") if section is None else section

    def decorate(command):
        for f in reversed(settable_fields(cls)):
            command = field_option(cls, f, section)(command)
        return command
    return decorate


def given(cls, values: dict[str, Any]) -> dict[str, Any]:
    """The values of ``cls``'s command-line fields that were given (not ``None``)."""
    return {f.name: values[f.name] for f in settable_fields(cls) if values.get(f.name) is not None}


def parse_sets(assignments: Iterable[str], sections: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--set section.key=value`` pairs as {section: {key: value}}; values are read as YAML scalars (0.6, true,
    a word) and checked by the settings later. Unknown sections are refused by name."""
    out: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise click.BadParameter(f"{assignment!r} is not of the form SECTION.KEY=VALUE (e.g. p2p.cross_replace=0.6)",
                                     param_hint="--set")
        if section not in sections:
            raise click.BadParameter(f"unknown section {section!r}{did_you_mean(section, sections)}; "
                                     f"choose one of {', '.join(sections)}", param_hint="--set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(section, {})[name.strip()] = value
    return out


def usage_error(exc: SettingError) -> click.UsageError:
    return click.UsageError(str(exc))
