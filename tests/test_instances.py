"""Edit instances: generated from the attribute dictionaries, or imported from the authors' files."""

from collections import Counter
from pathlib import Path

import pytest

from ale_edit.bench.dataset import EDIT_TYPES, load_prompt_instances
from ale_edit.bench.instances import (
    edit_table, generate_instances, instances_from_table, load_attribute_dictionary, target_phrase,
)
from ale_edit.errors import EditInputError

DICTIONARY = Path(__file__).resolve().parents[1] / "data" / "attributes.yaml"
OBJECTS = {"artificial_img05": ["book", "cup", "steam"], "natural_img02": ["green bell pepper", "red bell pepper",
                                                                            "yellow bell pepper"]}


@pytest.fixture(scope="module")
def dictionary():
    return load_attribute_dictionary(DICTIONARY)


def test_counts_ids_and_distinct_objects(dictionary):
    instances = generate_instances(OBJECTS, dictionary, instances=10, seed=42)
    assert len(instances) == 2 * 5 * 3 * 10
    groups = Counter((i.image, i.edit_type, i.n_objects) for i in instances)
    assert set(groups.values()) == {10}
    for i in instances:
        assert len(set(i.sources)) == len(i.sources) == i.n_objects
        assert set(i.sources) <= set(OBJECTS[i.image])
    table = edit_table(instances)
    assert table["edit_id"].is_unique and len(table) == 300
    assert instances_from_table(table) == instances


def test_deterministic_per_seed_and_independent_of_other_groups(dictionary):
    a = generate_instances(OBJECTS, dictionary, instances=3, seed=1)
    b = generate_instances(OBJECTS, dictionary, instances=3, seed=1)
    c = generate_instances(OBJECTS, dictionary, instances=3, seed=2)
    assert a == b and a != c
    only_color = generate_instances(OBJECTS, dictionary, edit_types=["color"], instances=3, seed=1)
    assert only_color == [i for i in a if i.edit_type == "color"]


def test_templates(dictionary):
    import random

    rng = random.Random(0)
    color = target_phrase("color", "green bell pepper", rng, dictionary)
    word, rest = color.split("-colored ")
    assert word in dictionary.colors and rest == "bell pepper"  # the source's color word is dropped
    material = target_phrase("material", "white pot", rng, dictionary)
    noun, mat = material.split(" made of ")
    assert noun == "pot" and mat in dictionary.materials
    assert target_phrase("object", "cup", rng, dictionary) in dictionary.replacements["cup"]
    word, new = target_phrase("color+object", "cup", rng, dictionary).split("-colored ")
    assert word in dictionary.colors and new in dictionary.replacements["cup"]
    new, mat = target_phrase("object+material", "wolf", rng, dictionary).split(" made of ")
    assert new in dictionary.replacements["wolf"] and mat in dictionary.materials
    with pytest.raises(EditInputError, match="no replacement objects"):
        target_phrase("object", "spaceship", rng, dictionary)
    with pytest.raises(EditInputError, match="unknown edit type"):
        target_phrase("texture", "cup", rng, dictionary)


def test_every_benchmark_object_has_replacements(dictionary, ale_bench):
    phrases = {p.name.split("_", 1)[0] for p in (ale_bench / "masks").glob("*/*_mask.png")}
    assert phrases <= set(dictionary.replacements)


def test_official_import_keeps_the_authors_instances(ale_bench):
    instances = load_prompt_instances(ale_bench, images=["artificial_img05"])
    groups = Counter((i.n_objects, i.edit_type) for i in instances)
    assert groups == {(n, t): 10 for n in (1, 2, 3) for t in EDIT_TYPES}
    first = [i for i in instances if (i.n_objects, i.edit_type) == (3, "object")]
    assert [i.index for i in first] == list(range(10))
    assert edit_table(instances)["edit_id"].is_unique
