"""Reading the ALE-Bench layout: images, masks (phrases from file names), prompt instances, results paths."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ale_edit.bench.dataset import (
    EDIT_TYPES, BenchLayoutError, PromptInstance, edited_image_path, image_path, list_images,
    load_prompt_instances, mask_phrase, masks_for_image, result_folder,
)


def _write_prompts(path: Path, image: str, prompts: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"image": image, "prompts": prompts}), encoding="utf-8")


@pytest.fixture
def small_bench(tmp_path: Path) -> Path:
    """A bench in the ALE layout with the strays the real one has (.DS_Store, spaces in phrases)."""
    root = tmp_path / "bench"
    (root / "images").mkdir(parents=True)
    for name in ("img_b", "img_a"):
        Image.new("RGB", (8, 8)).save(root / "images" / f"{name}.jpg")
    (root / "images" / ".DS_Store").write_bytes(b"\0")
    (root / "images" / "readme.txt").write_text("not an image")
    masks = root / "masks" / "img_a"
    masks.mkdir(parents=True)
    for phrase in ("red bell pepper", "cup", "t-shirt"):
        Image.new("L", (8, 8), 255).save(masks / f"{phrase}_mask.png")
    (masks / ".DS_Store").write_bytes(b"\0")
    (masks / "notes.txt").write_text("x")
    (masks / "old").mkdir()
    (root / "masks" / ".DS_Store").write_bytes(b"\0")
    edits = lambda *pairs: [list(p) for p in pairs]  # noqa: E731
    _write_prompts(root / "prompts" / "2" / "color" / "img_a_prompts.json", "img_a", [
        {"index": 1, "editing_types": ["color"], "edits": edits(("cup", "red cup"), ("t-shirt", "blue t-shirt"))},
        {"index": 0, "editing_types": ["color"], "edits": edits(("cup", "green cup"), ("t-shirt", "a t-shirt"))},
    ])
    _write_prompts(root / "prompts" / "1" / "object+material" / "img_a_prompts.json", "img_a", [
        {"index": 0, "editing_types": ["object", "material"], "edits": edits(("cup", "glass bowl"))},
    ])
    _write_prompts(root / "prompts" / "1" / "color" / "img_b_prompts.json", "img_b", [
        {"index": 0, "editing_types": ["color"], "edits": edits(("red bell pepper", "yellow bell pepper"))},
    ])
    (root / "prompts" / "1" / "color" / ".DS_Store").write_bytes(b"\0")
    (root / "prompts" / "1" / "color" / "notes.json").write_text("{}")
    (root / "prompts" / "drafts").mkdir()
    return root


def test_list_images_ignores_strays(small_bench):
    assert list_images(small_bench) == ["img_a", "img_b"]
    assert image_path(small_bench, "img_a") == small_bench / "images" / "img_a.jpg"
    assert not image_path(small_bench, "nope").exists()


def test_masks_for_image_phrase_up_to_first_underscore(small_bench):
    masks = masks_for_image(small_bench, "img_a")
    assert sorted(masks) == ["cup", "red bell pepper", "t-shirt"]
    assert masks["red bell pepper"].name == "red bell pepper_mask.png"
    assert mask_phrase("yoga mat_mask_v2.png") == "yoga mat"
    assert masks_for_image(small_bench, "img_b") == {}  # no mask folder


def test_two_masks_for_one_phrase_is_an_error(small_bench):
    Image.new("L", (8, 8), 255).save(small_bench / "masks" / "img_a" / "cup_mask_old.png")
    with pytest.raises(BenchLayoutError, match="two masks for 'cup'"):
        masks_for_image(small_bench, "img_a")


def test_prompt_instances_sorted_and_typed(small_bench):
    instances = load_prompt_instances(small_bench)
    assert [p.key for p in instances] == [
        "1/color/img_b/0", "1/object+material/img_a/0", "2/color/img_a/0", "2/color/img_a/1",
    ]
    first = instances[2]
    assert first == PromptInstance("img_a", 2, "color", 0, (("cup", "green cup"), ("t-shirt", "a t-shirt")),
                                   ("color",))
    assert first.sources == ("cup", "t-shirt") and first.targets == ("green cup", "a t-shirt")
    assert instances[1].editing_types == ("object", "material")
    assert [p.key for p in load_prompt_instances(small_bench, n_objects=2, images="img_a")] == [
        "2/color/img_a/0", "2/color/img_a/1",
    ]
    assert [p.key for p in load_prompt_instances(small_bench, edit_types=["object+material"])] == [
        "1/object+material/img_a/0",
    ]


def test_prompt_file_for_another_image_is_an_error(small_bench):
    _write_prompts(small_bench / "prompts" / "1" / "color" / "img_c_prompts.json", "img_a", [])
    with pytest.raises(BenchLayoutError, match="is for image 'img_a'"):
        load_prompt_instances(small_bench)


def test_results_paths_in_the_authors_layout(tmp_path):
    inst = PromptInstance("natural_img02", 3, "color+object", 7, (("a", "b"),) * 3)
    assert edited_image_path(tmp_path, inst) == tmp_path / "3" / "color+object" / "natural_img02" / "edit_7.png"
    assert result_folder(tmp_path, 3, "color+object", "natural_img02") == edited_image_path(tmp_path, inst).parent


def test_real_bench_layout(ale_bench):
    images = list_images(ale_bench)
    assert len(images) == 16 and "natural_img02" in images and ".DS_Store" not in images
    masks = masks_for_image(ale_bench, "natural_img02")
    assert sorted(masks) == ["green bell pepper", "red bell pepper", "yellow bell pepper"]
    instances = load_prompt_instances(ale_bench)
    assert len(instances) == 3 * 5 * 16 * 10
    assert {p.edit_type for p in instances} == set(EDIT_TYPES)
    for inst in instances:
        assert len(inst.edits) == inst.n_objects
        # every edited phrase has its ground-truth mask
        assert set(inst.sources) <= set(masks_for_image(ale_bench, inst.image)), inst.key
        assert image_path(ale_bench, inst.image).is_file()


def test_real_masks_binarise_rgba_antialiased(ale_bench):
    from ale_edit.io import load_mask

    path = masks_for_image(ale_bench, "artificial_img02")["table"]
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        rgba = np.asarray(im, dtype=np.float32) / 255
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) * rgba[..., 3]
    assert len(np.unique(grey)) > 2  # antialiased edges
    mask = load_mask(path)
    assert mask.dtype == bool and mask.shape == (1000, 1000)
    np.testing.assert_array_equal(mask, grey >= 0.5)
