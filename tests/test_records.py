"""Edit records: building them, loading their pixels, masks as binary masks or the authors' soft weights,
edited images of another size."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ale_edit.bench.records import (
    EditRecord, load_mask_weights, mask_weight, prepare_edit, records_from_edit_table,
)
from ale_edit.errors import EditInputError
from scoring_helpers import box, write_edit

def test_edited_image_is_resized_to_the_source(tmp_path):
    rng = np.random.default_rng(6)
    source = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    record = write_edit(tmp_path, "resize", source, small, {"cup": box((60, 80), 0, 0, 10, 10)}, ["red cup"])
    prepared = prepare_edit(record, resize_edited=True)
    assert prepared.edited.shape == source.shape
    np.testing.assert_array_equal(prepared.edited, np.asarray(Image.fromarray(small).resize((80, 60), Image.BICUBIC)))
    assert prepared.resized_from == (40, 30)


def test_edited_image_of_another_size_is_an_error_naming_both_sizes(tmp_path):
    source = np.zeros((60, 80, 3), np.uint8)
    record = write_edit(tmp_path, "small", source, np.zeros((30, 40, 3), np.uint8),
                        {"cup": box((60, 80), 0, 0, 10, 10)}, ["red cup"])
    with pytest.raises(EditInputError, match="the edited image is 40x30, the source image is 80x60"):
        prepare_edit(record)
    assert prepare_edit(EditRecord(**{**record.__dict__, "edited_image": record.source_image})).resized_from is None


def test_mask_weights_are_grey_levels_over_255(tmp_path):
    levels = np.array([[0, 1, 64], [128, 254, 255]], dtype=np.uint8)
    Image.fromarray(levels, "L").save(tmp_path / "grey.png")
    weights = load_mask_weights(tmp_path / "grey.png")
    assert weights.dtype == np.float64
    assert weights.tolist() == [[0.0, 1 / 255, 64 / 255], [128 / 255, 254 / 255, 1.0]]
    # RGBA is read as the authors read it, convert("L"): the alpha channel does not count
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.all(load_mask_weights(tmp_path / "rgba.png") == 200 / 255)
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(tmp_path / "black.png")
    with pytest.raises(EditInputError, match="mask for 'cup' is empty"):
        load_mask_weights(tmp_path / "black.png", name="cup")
    with pytest.raises(EditInputError, match="mask for 'cup' not found"):
        load_mask_weights(tmp_path / "none.png", name="cup")


def test_soft_union_is_the_per_pixel_maximum(tmp_path):
    a = np.zeros((8, 8), np.uint8)
    a[0:4, 0:4] = 100
    a[0:2, 0:2] = 255
    b = np.zeros((8, 8), np.uint8)
    b[2:6, 2:6] = 200
    record = write_edit(tmp_path, "two", np.zeros((8, 8, 3), np.uint8), None, {"a": a, "b": b}, ["x", "y"])
    soft = prepare_edit(record, mask_weights="soft")
    assert soft.union.dtype == np.uint8 and soft.union[3, 3] == 200 and soft.union[0, 3] == 100
    np.testing.assert_array_equal(soft.background_weight, 1.0 - np.maximum(a, b) / 255.0)
    np.testing.assert_array_equal(soft.region_weight(0), a / 255.0)
    assert soft.has_background
    # binary: 100/255 < 0.5 is background, 200/255 >= 0.5 is object
    binary = prepare_edit(record, mask_weights="binary")
    np.testing.assert_array_equal(binary.union, (a == 255) | (b == 200))
    np.testing.assert_array_equal(binary.background_weight, 1.0 - binary.union)
    full = write_edit(tmp_path, "full", np.zeros((8, 8, 3), np.uint8), None, {"wall": np.full((8, 8), 255, np.uint8)},
                      ["brick wall"])
    assert not prepare_edit(full, mask_weights="soft").has_background
    with pytest.raises(ValueError, match="unknown mask_weights 'grey'"):
        prepare_edit(record, mask_weights="grey")
    with pytest.raises(TypeError):
        mask_weight(np.zeros((2, 2), np.float32))


def _materialised(tmp_path, with_source_masks: bool):
    bench, results = tmp_path / "bench", tmp_path / "results"
    (bench / "images").mkdir(parents=True)
    entry = {"image": "img", "file": "images/img.jpg", "objects": {"cup": "masks/img/cup_mask.png"}}
    if with_source_masks:
        entry["source_objects"] = {"cup": "source_masks/img/cup_mask.png"}
    (bench / "manifest.json").write_text(json.dumps({"images": [entry]}))
    results.mkdir()
    pd.DataFrame([{"edit_id": "1/color/img/3", "image": "img", "edit_type": "color", "n_objects": 1, "index": 3,
                   "sources": ["cup"], "targets": ["red cup"], "path": "1/color/img/edit_3.png"}]
                 ).to_parquet(results / "edits.parquet")
    return results, bench


def test_records_from_the_edit_stage_table(tmp_path):
    results, bench = _materialised(tmp_path, with_source_masks=False)
    (record,) = records_from_edit_table(results, bench)
    assert record == EditRecord(edit_id="1/color/img/3", source_image=bench / "images/img.jpg",
                                edited_image=results / "1/color/img/edit_3.png",
                                masks={"cup": bench / "masks/img/cup_mask.png"}, edits=(("cup", "red cup"),),
                                edit_type="color", n_objects=1, image="img", index=3)
    # The materialised masks are binarised: soft weights need the source's own, or it is an error.
    with pytest.raises(EditInputError, match="lists no 'source_objects' for img"):
        records_from_edit_table(results, bench, mask_weights="soft")
    results, bench = _materialised(tmp_path / "with", with_source_masks=True)
    (soft,) = records_from_edit_table(results, bench, mask_weights="soft")
    assert soft.masks == {"cup": bench / "source_masks/img/cup_mask.png"}
