"""ALE-Bench's edit types, in one table: each type's name, its params.yaml key and its Q,K injection schedule.

A combined type has two spellings: the authors' ``color+object`` (their prompt and result folders, the edit
table, records) and ``color_object`` (params.yaml keys and DVC stage names, where "+" is not allowed). Both are
accepted everywhere; ``edit_type`` returns the one ``EditType``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EditInputError


@dataclass(frozen=True)
class EditType:
    name: str  # the authors' spelling: "color+object"
    schedule: float  # the fraction of steps with self-attention Q,K injection (the paper's setting)

    @property
    def key(self) -> str:
        """The params.yaml key, stage and folder name: "color_object"."""
        return self.name.replace("+", "_")


TABLE: tuple[EditType, ...] = (
    EditType("color", 1.0),
    EditType("object", 0.5),
    EditType("material", 0.6),
    EditType("color+object", 0.5),
    EditType("object+material", 0.5),
)
EDIT_TYPES: tuple[str, ...] = tuple(t.name for t in TABLE)
EDIT_TYPE_KEYS: tuple[str, ...] = tuple(t.key for t in TABLE)
SCHEDULES: dict[str, float] = {t.name: t.schedule for t in TABLE}
DEFAULT_SCHEDULE = 0.5  # when neither a type nor a schedule is given: the value of most types


def edit_type(name: str) -> EditType:
    """The edit type named ``name`` in either spelling; an ``EditInputError`` names the choices otherwise."""
    for t in TABLE:
        if name in (t.name, t.key):
            return t
    raise EditInputError(f"unknown edit type {name!r}; choose one of {', '.join(EDIT_TYPES)} "
                         f"(or {', '.join(k for k in EDIT_TYPE_KEYS if k not in EDIT_TYPES)})")
