"""Settings declared once, as frozen dataclasses whose fields carry their own help, allowed values and compat key.

The editor's common settings (``settings.EditSettings``) and each method's options are such dataclasses. From
their fields come: the checks (``check``, called in ``__post_init__``), building them from a params.yaml section
or ``--set key=value`` pairs with unknown keys refused by name (``from_mapping``), the command line's options
(``commands/options.py``) and the compat profile's resolution (``resolve_compat``): a field declared with
``compat="ale.bb_mask"`` defaults to ``None``, meaning "what the compat profile says, else ``default``".
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import MISSING, field, fields
from typing import Any, ClassVar, Mapping

from . import compat as compat_profiles


class SettingError(ValueError):
    """A setting that does not exist or has a value it cannot take; the message names the key."""


def option(default: Any = MISSING, help: str = "", *, choices: tuple | None = None, minimum: float | None = None,
           maximum: float | None = None, compat: str | None = None, cli: bool = True):
    """A settings field. ``compat``: its params.yaml key in ``compat.PROFILES``; the field then defaults to
    ``None`` (resolved to the profile's value, else ``default``). ``cli=False`` keeps it off the command line."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum, "compat": compat, "cli": cli,
            "default": default}
    return field(default=None if compat else default, metadata=meta)


def value_type(cls, f: dataclasses.Field) -> type:
    """The field's value type (``int``, ``float``, ``bool``, ``str``, ``list``), ``Optional`` unwrapped."""
    hint = _unwrap_optional(typing.get_type_hints(cls)[f.name])
    return list if typing.get_origin(hint) in (list, tuple) else hint


def item_type(cls, f: dataclasses.Field) -> type | None:
    """The item type of a list field (``list[str]`` -> ``str``), else None."""
    hint = _unwrap_optional(typing.get_type_hints(cls)[f.name])
    args = typing.get_args(hint)
    return args[0] if typing.get_origin(hint) in (list, tuple) and args else None


def _unwrap_optional(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint) and len(args) == 1:
        return args[0]
    return hint


def _coerce_scalar(kind: type, value: Any, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise SettingError(f"{where} must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise SettingError(f"{where} must be a number, got {value!r}")
        if kind is int and isinstance(value, int):
            return value
        if kind is int and isinstance(value, str) and value.strip().lstrip("+-").isdecimal():
            return int(value)  # exactly: through float, 2**63 - 1 would round to 2**63
        try:
            number = kind(float(value)) if kind is int and isinstance(value, str) else kind(value)
        except (TypeError, ValueError, OverflowError):
            raise SettingError(f"{where} must be {'an integer' if kind is int else 'a number'}, "
                               f"got {value!r}") from None
        if kind is int and float(value) != number:
            raise SettingError(f"{where} must be an integer, got {value!r}")
        return number
    if kind is str:
        if not isinstance(value, str):
            raise SettingError(f"{where} must be a string, got {value!r}")
        return value
    return value


def coerce(cls, f: dataclasses.Field, value: Any, where: str) -> Any:
    """``value`` as the field's type; YAML and click give the right types, ``--set`` gives strings."""
    if value is None:
        return None
    kind = value_type(cls, f)
    if kind is list:
        if not isinstance(value, (list, tuple)):
            raise SettingError(f"{where} must be a list, got {value!r}")
        item = item_type(cls, f)
        return [_coerce_scalar(item, v, f"{where}[{i}]") if item else v for i, v in enumerate(value)]
    return _coerce_scalar(kind, value, where)


def check(obj, section: str = "") -> None:
    """Raise ``SettingError`` naming the first field whose value (or list item) is outside its choices or range, or
    whose list is empty where the field's ``empty`` metadata says what an empty list would mean."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None or not f.metadata:
            continue
        where = f"{section}.{f.name}" if section else f.name
        if isinstance(value, (list, tuple)) and not value and f.metadata.get("empty"):
            raise SettingError(f"{where} is empty: {f.metadata['empty']}")
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            _check_value(f, item, where)


def check_number(value: Any, where: str, minimum: float | None = None, maximum: float | None = None):
    """The one rule of every numeric setting (the command line's options, ``--set``, params.yaml, the studio's
    fields): a finite number within [minimum, maximum] (either bound ``None``: open). Returns ``value``; else a
    ``SettingError`` naming ``where``. NaN passes every comparison and infinity every open bound, so finiteness is
    checked first."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(f"{where} must be a number; got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingError(f"{where} must be a finite number; got {value!r}")
    if minimum is not None and value < minimum:
        raise SettingError(f"{where} must be >= {minimum}; got {value!r}")
    if maximum is not None and value > maximum:
        raise SettingError(f"{where} must be <= {maximum}; got {value!r}")
    return value


def parse_number(value: Any, where: str, kind: type = float, minimum: float | None = None,
                 maximum: float | None = None):
    """``value`` (a number, or text as a form or ``--set`` gives it) as ``kind`` (``int`` or ``float``) under the
    rule of ``check_number``; a blank, a word, a fraction for an integer, NaN or infinity is a ``SettingError``
    naming ``where``."""
    return check_number(_coerce_scalar(kind, value, where), where, minimum, maximum)


def _check_value(f: dataclasses.Field, value: Any, where: str) -> None:
    choices, low, high = f.metadata.get("choices"), f.metadata.get("minimum"), f.metadata.get("maximum")
    if choices is not None and value not in choices:
        raise SettingError(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_number(value, where, low, high)


class Options:
    """Base of a method's options dataclass: its fields are checked on construction, errors named
    ``<section>.<field>`` (``section``: the params.yaml section, the method's name)."""

    section: ClassVar[str] = ""

    def __post_init__(self):
        check(self, self.section)


def settable_fields(cls) -> list[dataclasses.Field]:
    """The fields of a settings dataclass a person sets (declared with ``option``, with help, offered to the command
    line and the studio), in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True) and "help" in f.metadata]


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def mapping_kwargs(cls, values: Mapping[str, Any], section: str = "", *, ignore: tuple[str, ...] = (),
                   exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``values`` checked against the fields of the settings dataclass ``cls`` and coerced to their types; unknown
    keys are refused by name (keys in ``ignore`` belong to someone else and are skipped; fields in ``exclude`` are
    not settable from here)."""
    known = {f.name: f for f in fields(cls) if f.init and f.name not in exclude}
    kwargs = {}
    for name, value in values.items():
        if name in ignore:
            continue
        where = f"{section}.{name}" if section else name
        if name not in known:
            raise SettingError(f"unknown setting {where}{did_you_mean(name, [*known, *ignore])}; known: "
                               f"{', '.join(sorted([*known, *ignore]))}")
        kwargs[name] = coerce(cls, known[name], value, where)
    return kwargs


def from_mapping(cls, values: Mapping[str, Any], section: str = "", *, ignore: tuple[str, ...] = ()):
    """An instance of the settings dataclass ``cls`` from ``values`` (see ``mapping_kwargs``)."""
    kwargs = mapping_kwargs(cls, values, section, ignore=ignore)
    try:
        return cls(**kwargs)
    except SettingError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingError(f"{section or cls.__name__}: {exc}") from exc


def compat_changes(obj, profile: str) -> dict[str, Any]:
    """{field: value} for each of ``obj``'s compat fields that is ``None``: the profile's value, else the field's
    default."""
    changes = {}
    for f in fields(obj):
        key = f.metadata.get("compat") if f.metadata else None
        if key and getattr(obj, f.name) is None:
            changes[f.name] = compat_profiles.resolve(profile, key, None, f.metadata["default"])
    return changes


def resolve_compat(obj, profile: str):
    """``obj`` with its unset compat fields resolved (``compat_changes``)."""
    changes = compat_changes(obj, profile)
    return dataclasses.replace(obj, **changes) if changes else obj


def compat_values(obj) -> dict[str, Any]:
    """{compat key: value} of ``obj``'s compat fields (after resolution)."""
    return {f.metadata["compat"]: getattr(obj, f.name) for f in fields(obj) if f.metadata and f.metadata.get("compat")}
