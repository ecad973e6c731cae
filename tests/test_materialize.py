"""Materialising ALE-Bench: masks in any mode, git sources that cannot inject options or escape, file modes."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ale_edit.bench.materialize import materialize
from ale_edit.errors import EditInputError

GRADIENT_8 = np.arange(256, dtype=np.uint8).reshape(16, 16)


def _bench(root: Path, image: Image.Image, masks: dict[str, Image.Image], image_name: str = "img_a.png") -> Path:
    """A minimal ALE-layout bench: one image and its masks."""
    (root / "images").mkdir(parents=True)
    image.save(root / "images" / image_name)
    (root / "masks" / Path(image_name).stem).mkdir(parents=True)
    for phrase, mask in masks.items():
        mask.save(root / "masks" / Path(image_name).stem / f"{phrase}_mask.png")
    return root


def test_16bit_mask_is_materialised_like_its_8bit_version(tmp_path):
    masks = {"cup": Image.fromarray(GRADIENT_8.astype(np.uint16) * 257), "plate": Image.fromarray(GRADIENT_8, "L")}
    root = _bench(tmp_path / "src", Image.new("RGB", (16, 16)), masks)
    manifest = materialize(root, tmp_path / "out", ["img_a"])
    entry = manifest["images"][0]
    cup = np.asarray(Image.open(tmp_path / "out" / entry["objects"]["cup"]))
    plate = np.asarray(Image.open(tmp_path / "out" / entry["objects"]["plate"]))
    np.testing.assert_array_equal(cup, np.where(GRADIENT_8 >= 128, 255, 0))
    np.testing.assert_array_equal(cup, plate)
    assert "cup_mask.png: mode I;16, 256 grey levels, binarised at 0.5" in entry["notes"]


def test_benchmark_image_without_an_8bit_reading_is_refused_by_name(tmp_path):
    root = _bench(tmp_path / "src", Image.fromarray(np.array([[0.0, 300.0]], np.float32)), {}, "img_a.tif")
    (root / "images" / "img_a.tif").rename(root / "images" / "img_a.png")  # a TIFF named .png, as it happens
    with pytest.raises(EditInputError, match=r"img_a\.png: image mode 'F' .*\[0\.0, 300\.0\]"):
        materialize(root, tmp_path / "out", ["img_a"])
