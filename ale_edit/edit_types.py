"""The benchmarks' edit types, in one table each: each type's name, its params.yaml key and its Q,K injection
schedule. ALE-Bench's five types (``TABLE``), and the four PIE-Bench types ALE-Edit supports (``PIE_TABLE``).

A combined ALE-Bench type has two spellings: the authors' ``color+object`` (their prompt and result folders, the
edit table, records) and ``color_object`` (params.yaml keys and DVC stage names, where "+" is not allowed). Both are
accepted everywhere; ``edit_type`` returns the one ``EditType``.

PIE-Bench (cure-lab/PnPInversion, README.md "PIE-Bench Benchmark") numbers its ten editing types 0-9 in
``editing_type_id``. ALE-Edit edits objects, so it supports the four types that change one object: change object
(1), change content (4), change color (6) and change material (7), named here as the README's folders are
(``1_change_object_80`` -> ``change_object``; ``4_change_attribute_content_40`` -> ``change_content``). Their
schedules are the paper's per-type ones: object 0.5 for change object and change content, color 1.0, material 0.6.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EditInputError

BENCHMARKS = ("ale", "pie")  # bench.kind: ALE-Bench, PIE-Bench


@dataclass(frozen=True)
class EditType:
    name: str  # the authors' spelling: "color+object"
    schedule: float  # the fraction of steps with self-attention Q,K injection (the paper's setting)
    pie_id: str | None = None  # PIE-Bench's editing_type_id (a string in its mapping file), for its types

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

# PIE-Bench's ten editing types by id (its README's table), the supported ones with their schedules.
PIE_TYPE_NAMES: dict[str, str] = {
    "0": "random", "1": "change_object", "2": "add_object", "3": "delete_object", "4": "change_content",
    "5": "change_pose", "6": "change_color", "7": "change_material", "8": "change_background", "9": "change_style",
}
PIE_TABLE: tuple[EditType, ...] = (
    EditType("change_object", 0.5, "1"),
    EditType("change_content", 0.5, "4"),
    EditType("change_color", 1.0, "6"),
    EditType("change_material", 0.6, "7"),
)
PIE_EDIT_TYPES: tuple[str, ...] = tuple(t.name for t in PIE_TABLE)


def benchmark_types(benchmark: str) -> tuple[EditType, ...]:
    """The edit types of ``benchmark`` (``"ale"`` or ``"pie"``)."""
    if benchmark not in BENCHMARKS:
        raise EditInputError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    return TABLE if benchmark == "ale" else PIE_TABLE


def edit_type(name: str) -> EditType:
    """The edit type named ``name`` (an ALE-Bench type in either spelling, or a supported PIE-Bench type); an
    ``EditInputError`` names the choices otherwise."""
    for t in TABLE + PIE_TABLE:
        if name in (t.name, t.key):
            return t
    raise EditInputError(f"unknown edit type {name!r}; choose one of {', '.join(EDIT_TYPES)} "
                         f"(or {', '.join(k for k in EDIT_TYPE_KEYS if k not in EDIT_TYPES)}), or on PIE-Bench "
                         f"{', '.join(PIE_EDIT_TYPES)}")
