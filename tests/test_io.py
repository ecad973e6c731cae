"""Reading images and the messy real masks."""

import numpy as np
import pytest
from PIL import Image

from ale_edit.errors import EditInputError
from ale_edit.io import load_image, load_mask, mask_from_image
from ale_edit.masks import dilate_mask


def test_rgba_antialiased_mask_binarises_at_half(ale_bench):
    path = ale_bench / "masks" / "natural_img09" / "man_mask.png"
    im = Image.open(path)
    assert im.mode == "RGBA"  # the real data has these
    grey = np.asarray(im.convert("RGB").convert("L")) / 255.0
    assert 0 < ((grey > 0) & (grey < 1)).sum()  # antialiased edges exist
    mask = load_mask(path, im.size)
    assert mask.dtype == bool and mask.shape == (1000, 1000)
    np.testing.assert_array_equal(mask, np.asarray(im.convert("RGBA"))[..., :3].astype(float) @ [0.299, 0.587, 0.114]
                                  / 255.0 >= 0.5)


def test_alpha_is_respected():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[0, 0, 3] = 255
    rgba[0, 1, 3] = 100
    assert mask_from_image(Image.fromarray(rgba, "RGBA")).tolist() == [[True, False], [False, False]]


def test_mask_with_spaces_in_its_name_loads(ale_bench):
    mask = load_mask(ale_bench / "masks" / "natural_img07" / "computer mouse_mask.png", (1000, 1000))
    assert 0 < mask.mean() < 0.5


def test_missing_mask_and_image_are_named(tmp_path):
    with pytest.raises(EditInputError, match="mask for 'cup' not found"):
        load_mask(tmp_path / "cup_mask.png", name="cup")
    with pytest.raises(EditInputError, match="image not found"):
        load_image(tmp_path / "x.jpg")


def test_dilation_is_a_disk():
    mask = np.zeros((21, 21), bool)
    mask[10, 10] = True
    yy, xx = np.mgrid[:21, :21]
    for r in (0, 1, 3, 7):
        np.testing.assert_array_equal(dilate_mask(mask, r), (yy - 10) ** 2 + (xx - 10) ** 2 <= r * r)
