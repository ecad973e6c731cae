"""Generating ALE-Bench edit instances from attribute dictionaries, and the one-row-per-edit table.

Templates, per edit type (``noun`` is the source phrase with a leading color word dropped: "white pot" -> "pot"):

    color            "{color}-colored {noun}"
    object           "{new object}"
    material         "{noun} made of {material}"
    color+object     "{color}-colored {new object}"
    object+material  "{new object} made of {material}"
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd
import yaml

from .dataset import EDIT_TYPES, OBJECT_COUNTS, PromptInstance
from ..errors import EditInputError

MAX_DRAWS = 50  # redraws allowed per instance to avoid repeating an earlier instance of the same group


@dataclass(frozen=True)
class AttributeDictionary:
    colors: tuple[str, ...]
    materials: tuple[str, ...]
    replacements: Mapping[str, tuple[str, ...]]  # source phrase -> objects it may become

    def noun(self, phrase: str) -> str:
        """The phrase without a leading color word ("green bell pepper" -> "bell pepper")."""
        first, _, rest = phrase.partition(" ")
        return rest if rest and first in self.colors else phrase

    def new_objects(self, phrase: str) -> tuple[str, ...]:
        if not self.replacements.get(phrase):
            raise EditInputError(f"the attribute dictionary has no replacement objects for {phrase!r}")
        return self.replacements[phrase]


def load_attribute_dictionary(path: str | os.PathLike) -> AttributeDictionary:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EditInputError(f"cannot read the attribute dictionary {path}: {exc}") from exc
    for key in ("colors", "materials", "replacements"):
        if not data or not data.get(key):
            raise EditInputError(f"attribute dictionary {path} has no {key!r}")
    return AttributeDictionary(
        colors=tuple(map(str, data["colors"])),
        materials=tuple(map(str, data["materials"])),
        replacements={str(k): tuple(map(str, v)) for k, v in data["replacements"].items()},
    )


def target_phrase(edit_type: str, source: str, rng: random.Random, d: AttributeDictionary) -> str:
    """A target phrase for ``source`` by the template of ``edit_type``."""
    if edit_type == "color":
        return f"{rng.choice(d.colors)}-colored {d.noun(source)}"
    if edit_type == "object":
        return rng.choice(d.new_objects(source))
    if edit_type == "material":
        return f"{d.noun(source)} made of {rng.choice(d.materials)}"
    if edit_type == "color+object":
        return f"{rng.choice(d.colors)}-colored {rng.choice(d.new_objects(source))}"
    if edit_type == "object+material":
        return f"{rng.choice(d.new_objects(source))} made of {rng.choice(d.materials)}"
    raise EditInputError(f"unknown edit type {edit_type!r}; choose one of {EDIT_TYPES}")


def generate_instances(
    objects: Mapping[str, Sequence[str]],
    dictionary: AttributeDictionary,
    *,
    edit_types: Iterable[str] = EDIT_TYPES,
    object_counts: Iterable[int] = OBJECT_COUNTS,
    instances: int = 10,
    seed: int = 42,
) -> list[PromptInstance]:
    """``instances`` edits per image x edit type x number of objects; the objects of one edit are distinct.

    Each (image, type, count) group draws from its own generator seeded by the seed and the group's name, so a
    group's instances do not change when other images, types or counts are added or removed.
    """
    out = []
    for image in sorted(objects):
        phrases = sorted(objects[image])
        for edit_type in edit_types:
            if edit_type not in EDIT_TYPES:
                raise EditInputError(f"unknown edit type {edit_type!r}; choose one of {EDIT_TYPES}")
            for n in object_counts:
                if n > len(phrases):
                    raise EditInputError(f"{image} has {len(phrases)} objects; cannot make {n}-object edits")
                rng = random.Random(f"{seed}|{image}|{edit_type}|{n}")
                seen: set = set()
                for index in range(instances):
                    for _ in range(MAX_DRAWS):
                        chosen = rng.sample(phrases, n)
                        edits = tuple((s, target_phrase(edit_type, s, rng, dictionary)) for s in chosen)
                        if frozenset(edits) not in seen:
                            break
                    seen.add(frozenset(edits))
                    out.append(PromptInstance(image, n, edit_type, index, edits, tuple(edit_type.split("+"))))
    return out


EDIT_TABLE_COLUMNS = ["edit_id", "image", "edit_type", "n_objects", "index", "sources", "targets"]
# PIE-Bench's edit table adds each edit's whole prompts, its phrase marked in [] (``ale_edit.prompts``), and the
# reason an entry has no edit (its pair could not be formed): such a row is kept, skipped by the masks and edit
# stages and carried to the results and scores as an error row.
PROMPT_COLUMNS = ["source_prompt", "target_prompt"]
ERROR_COLUMN = "error"
PIE_EDIT_TABLE_COLUMNS = EDIT_TABLE_COLUMNS + PROMPT_COLUMNS + [ERROR_COLUMN]


def split_failed(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows to edit, the rows whose ``error`` says why they have no edit); a table without the column has
    none of the latter."""
    if ERROR_COLUMN not in table.columns:
        return table, table.iloc[:0]
    failed = table[ERROR_COLUMN].notna()
    return table[~failed].reset_index(drop=True), table[failed].reset_index(drop=True)


def row_prompts(row) -> tuple[str, str] | None:
    """A table row's whole marked (source, target) prompts, None when the table has none (ALE-Bench)."""
    source, target = (getattr(row, c, None) for c in PROMPT_COLUMNS)
    return (source, target) if isinstance(source, str) and isinstance(target, str) else None


def edit_table(instances: Iterable[PromptInstance]) -> pd.DataFrame:
    """One row per edit, with the stable id ``<n objects>/<edit type>/<image>/<index>``."""
    rows = [
        {"edit_id": i.key, "image": i.image, "edit_type": i.edit_type, "n_objects": i.n_objects, "index": i.index,
         "sources": list(i.sources), "targets": list(i.targets)}
        for i in instances
    ]
    table = pd.DataFrame(rows, columns=EDIT_TABLE_COLUMNS)
    duplicated = table["edit_id"][table["edit_id"].duplicated()].tolist()
    if duplicated:
        raise EditInputError(f"duplicate edit ids: {duplicated[:5]}")
    return table


def instances_from_table(table: pd.DataFrame) -> list[PromptInstance]:
    return [
        PromptInstance(r.image, int(r.n_objects), r.edit_type, int(r.index), tuple(zip(r.sources, r.targets)),
                       tuple(r.edit_type.split("+")))
        for r in table.itertuples(index=False)
    ]
