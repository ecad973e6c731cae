"""Reading images (every PIL mode) and the messy real masks; writing files atomically with the umask's mode."""

import os
import re
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import PIL
from PIL import Image

from ale_edit.atomic import atomic_path, current_umask, save_image, write_json
from ale_edit.bench.dataset import mask_phrase
from ale_edit.atomic import replace_folder
from ale_edit.errors import EditInputError
from ale_edit.io import load_image, load_mask, mask_from_image, to_8bit
from ale_edit.masks import dilate_mask
from ale_edit.paths import OutputPathError, check_output_image_path, image_format, safe_file_name


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


# -- every mode PIL opens, scaled by value ------------------------------------------------------------------------

GRADIENT_8 = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit level once


def _saved(tmp_path, im, name):
    path = tmp_path / name
    im.save(path)
    return path


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    # The same picture in 16 bits (v * 257 is the exact 16-bit value of an 8-bit level v) loads as its 8-bit self.
    path = _saved(tmp_path, Image.fromarray((GRADIENT_8.astype(np.uint16) * 257)), "gradient16.png")
    with Image.open(path) as im:
        assert im.mode == "I;16"
    loaded = np.asarray(load_image(path))
    assert loaded.shape == (16, 16, 3)
    for band in range(3):
        np.testing.assert_array_equal(loaded[..., band], GRADIENT_8)
    assert loaded.mean() == pytest.approx(127.5)  # PIL's clipping convert gave 254.998


def test_16bit_values_round_by_257(tmp_path):
    # Every 16-bit value: 65535 -> 255, 32767 -> 127, 32768 -> 128; no value is a tie.
    ramp = np.arange(65536, dtype=np.uint32).reshape(256, 256)
    expected = np.floor(ramp / 257 + 0.5).astype(np.uint8)
    assert expected[-1, -1] == 255 and expected.flat[32767] == 127 and expected.flat[32768] == 128
    path = _saved(tmp_path, Image.fromarray(ramp.astype(np.uint16)), "ramp16.png")
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 0], expected)


def test_16bit_big_and_little_endian_files(tmp_path):
    big = Image.frombytes("I;16B", (16, 16), (GRADIENT_8.astype(">u2") * 257).tobytes())
    path = _saved(tmp_path, big, "gradient16b.tif")
    with Image.open(path) as im:
        assert im.mode == "I;16B"
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 1], GRADIENT_8)
    # I;16L and I;16N come only from PIL's deprecated IM format or from memory: checked on images built here.
    little = Image.frombytes("I;16L", (16, 16), (GRADIENT_8.astype("<u2") * 257).tobytes())
    np.testing.assert_array_equal(np.asarray(to_8bit(little, "little")), GRADIENT_8)
    native = Image.frombytes("I;16N", (16, 16), (GRADIENT_8.astype("=u2") * 257).tobytes())
    np.testing.assert_array_equal(np.asarray(to_8bit(native, "native")), GRADIENT_8)


def test_32bit_integer_is_read_as_16bit_data(tmp_path):
    # A 16-bit PPM comes out of PIL as mode I.
    path = _saved(tmp_path, Image.fromarray(GRADIENT_8.astype(np.uint16) * 257), "gradient16.ppm")
    with Image.open(path) as im:
        assert im.mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 0], GRADIENT_8)
    path = _saved(tmp_path, Image.fromarray(GRADIENT_8.astype(np.int32) * 257), "gradient32.tif")
    with Image.open(path) as im:
        assert im.mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 0], GRADIENT_8)


@pytest.mark.parametrize("values,shown", [([0, 70000], r"\[0, 70000\]"), ([-1, 100], r"\[-1, 100\]")])
def test_32bit_integer_beyond_16bit_is_an_error_naming_file_mode_and_range(tmp_path, values, shown):
    path = _saved(tmp_path, Image.fromarray(np.array([values], np.int32)), "wide.tif")
    with pytest.raises(EditInputError, match=rf"wide\.tif: image mode 'I' .* values in {shown}"):
        load_image(path)


def test_float_in_unit_range_is_scaled_by_255(tmp_path):
    path = _saved(tmp_path, Image.fromarray(GRADIENT_8.astype(np.float32) / 255), "gradient.tif")
    with Image.open(path) as im:
        assert im.mode == "F"
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 0], GRADIENT_8)


@pytest.mark.parametrize("values,shown", [([0.0, 255.0], r"\[0.0, 255.0\]"), ([-0.5, 0.5], r"\[-0.5, 0.5\]"),
                                          ([0.0, np.nan], "nan")])
def test_float_outside_unit_range_is_an_error_naming_the_range(tmp_path, values, shown):
    path = _saved(tmp_path, Image.fromarray(np.array([values], np.float32)), "float.tif")
    with pytest.raises(EditInputError, match=rf"float\.tif: image mode 'F' .*{shown}"):
        load_image(path)


def _palette_gradient() -> Image.Image:
    im = Image.fromarray(GRADIENT_8, "P")
    im.putpalette([c for v in range(256) for c in (v, v, v)])
    return im


@pytest.mark.parametrize("name,make,mode", [
    ("p.png", _palette_gradient, "P"),
    ("l.png", lambda: Image.fromarray(GRADIENT_8, "L"), "L"),
    ("rgb.png", lambda: Image.fromarray(GRADIENT_8, "L").convert("RGB"), "RGB"),
    ("la.png", lambda: Image.fromarray(GRADIENT_8, "L").convert("LA"), "LA"),
    ("rgba.png", lambda: Image.fromarray(GRADIENT_8, "L").convert("RGBA"), "RGBA"),
])
def test_8bit_modes_load_as_their_grey(tmp_path, name, make, mode):
    path = _saved(tmp_path, make(), name)
    with Image.open(path) as im:
        assert im.mode == mode
    loaded = np.asarray(load_image(path))
    for band in range(3):
        np.testing.assert_array_equal(loaded[..., band], GRADIENT_8)


def test_palette_with_transparency_loads_its_colours(tmp_path):
    im = _palette_gradient()
    im.info["transparency"] = 0
    path = _saved(tmp_path, im, "pt.png")
    with Image.open(path) as reread:
        assert reread.mode == "P" and "transparency" in reread.info
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 0], GRADIENT_8)


def test_bilevel_cmyk_lab_files(tmp_path):
    bilevel = _saved(tmp_path, Image.fromarray(GRADIENT_8 >= 128), "one.png")
    with Image.open(bilevel) as im:
        assert im.mode == "1"
    np.testing.assert_array_equal(np.asarray(load_image(bilevel))[..., 0], np.where(GRADIENT_8 >= 128, 255, 0))
    # CMYK: cyan, black, white.
    cmyk = _saved(tmp_path, Image.frombytes("CMYK", (3, 1), bytes([255, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 0])), "c.tif")
    with Image.open(cmyk) as im:
        assert im.mode == "CMYK"
    assert np.asarray(load_image(cmyk)).tolist() == [[[0, 255, 255], [0, 0, 0], [255, 255, 255]]]
    # LAB (a, b signed): L* = 50 neutral is sRGB 119 grey; L* = 0 black.
    lab = _saved(tmp_path, Image.frombytes("LAB", (2, 1), bytes([128, 0, 0, 0, 0, 0])), "lab.tif")
    with Image.open(lab) as im:
        assert im.mode == "LAB"
    rgb = np.asarray(load_image(lab)).astype(int)
    assert np.abs(rgb - [[[119, 119, 119], [0, 0, 0]]]).max() <= 1  # lcms rounding


def test_ycbcr_picture_and_file(tmp_path):
    # Neutral Y = 0, 128, 255.
    picture = Image.frombytes("YCbCr", (3, 1), bytes([0, 128, 128, 128, 128, 128, 255, 128, 128]))
    expected = [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]]
    assert np.asarray(to_8bit(picture).convert("RGB")).tolist() == expected
    ycc = _saved(tmp_path, picture, "y.tif")
    with Image.open(ycc) as im:
        mode = im.mode
    if mode != "YCbCr":
        # Pillow 12 (gradio, the studio extra, pins pillow<13) writes a YCbCr TIFF it then reads as RGB with the
        # wrong length: a Pillow writer fault, not a mode to bring to 8 bits. Pillow 13 keeps the file YCbCr.
        pytest.skip(f"Pillow {PIL.__version__} writes a YCbCr TIFF it reads back as {mode}")
    assert np.asarray(load_image(ycc)).tolist() == expected


def test_in_memory_only_modes():
    # HSV, RGBX, RGBa and La come from no file PIL writes; their conversions are checked on images built here.
    hsv = Image.frombytes("HSV", (2, 1), bytes([0, 0, 128, 0, 255, 255]))
    assert np.asarray(to_8bit(hsv).convert("RGB")).tolist() == [[[128, 128, 128], [255, 0, 0]]]
    rgbx = Image.frombytes("RGBX", (1, 1), bytes([10, 20, 30, 0]))
    assert np.asarray(to_8bit(rgbx).convert("RGB")).tolist() == [[[10, 20, 30]]]
    premultiplied = Image.frombytes("RGBa", (1, 1), bytes([64, 32, 16, 128]))
    assert np.asarray(to_8bit(premultiplied).convert("RGBA")).tolist() == [[[127, 63, 31, 128]]]
    la = Image.frombytes("La", (1, 1), bytes([64, 128]))
    assert to_8bit(la).mode == "LA" and np.asarray(to_8bit(la)).tolist() == [[[127, 128]]]


def test_unknown_mode_is_an_error_naming_source_and_mode():
    class FutureModeImage:  # PIL refuses to build an image of a mode it does not know; a future PIL may have one
        mode = "BGR;24"

    with pytest.raises(EditInputError, match=r"pic\.bmp: image mode 'BGR;24' is not supported"):
        to_8bit(FutureModeImage(), "pic.bmp")


# -- masks in every mode ------------------------------------------------------------------------------------------

def test_16bit_mask_binarises_like_its_8bit_version(tmp_path):
    eight = _saved(tmp_path, Image.fromarray(GRADIENT_8, "L"), "cup8_mask.png")
    sixteen = _saved(tmp_path, Image.fromarray(GRADIENT_8.astype(np.uint16) * 257), "cup16_mask.png")
    expected = GRADIENT_8 >= 128
    np.testing.assert_array_equal(load_mask(eight), expected)
    np.testing.assert_array_equal(load_mask(sixteen), expected)


def test_16bit_mask_threshold_is_half_of_full_scale():
    # 32767 / 65535 < 0.5 <= 32768 / 65535
    levels = np.array([[0, 32767, 32768, 65535]], np.uint16)
    assert mask_from_image(Image.fromarray(levels)).tolist() == [[False, False, True, True]]
    as_int = Image.fromarray(levels.astype(np.int32))
    assert as_int.mode == "I" and mask_from_image(as_int).tolist() == [[False, False, True, True]]
    floats = Image.fromarray(np.array([[0.0, 0.4999, 0.5, 1.0]], np.float32))
    assert mask_from_image(floats).tolist() == [[False, False, True, True]]


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray(GRADIENT_8 >= 128),
    _palette_gradient,
    lambda: Image.fromarray(GRADIENT_8, "L").convert("RGB"),
    lambda: Image.fromarray(GRADIENT_8, "L").convert("LA"),
    lambda: Image.fromarray(GRADIENT_8, "L").convert("RGBA"),
    lambda: Image.fromarray(GRADIENT_8, "L").convert("RGB").convert("HSV"),
    lambda: Image.fromarray(GRADIENT_8.astype(np.float32) / 255),
], ids=["1", "P", "RGB", "LA", "RGBA", "HSV", "F"])
def test_masks_in_other_modes_binarise_at_half(make):
    np.testing.assert_array_equal(mask_from_image(make()), GRADIENT_8 >= 128)


def test_mask_alpha_of_la_and_palette_transparency():
    la = np.stack([np.full((1, 3), 255, np.uint8), np.array([[255, 128, 127]], np.uint8)], axis=-1)
    assert mask_from_image(Image.fromarray(la, "LA")).tolist() == [[True, True, False]]
    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([255, 255, 255, 255, 255, 255])
    pal.info["transparency"] = 1  # white, but transparent
    assert mask_from_image(pal).tolist() == [[True, False]]


def test_mask_in_a_mode_out_of_range_names_the_file(tmp_path):
    path = _saved(tmp_path, Image.fromarray(np.array([[0.0, 2.0]], np.float32)), "cup_mask.tif")
    with pytest.raises(EditInputError, match=r"mask for 'cup' .*cup_mask\.tif: image mode 'F'"):
        load_mask(path, name="cup")


# -- files written atomically get the mode the umask gives --------------------------------------------------------

@pytest.fixture
def set_umask():
    """Set the process umask for one test; the previous one comes back after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("umask,file,folder", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_atomic_files_and_folders_get_the_umask_mode(tmp_path, set_umask, umask, file, folder):
    set_umask(umask)
    assert current_umask() == umask
    write_json(tmp_path / "new" / "deeper" / "record.json", {"a": 1})
    save_image(tmp_path / "new" / "image.png", Image.new("RGB", (2, 2)))
    with atomic_path(tmp_path / "new" / "table.csv") as tmp:
        tmp.write_text("a\n")
    for name in ("deeper/record.json", "image.png", "table.csv"):
        assert stat.S_IMODE((tmp_path / "new" / name).stat().st_mode) == file, name
    for name in ("new", "new/deeper"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == folder, name
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["deeper", "image.png", "table.csv"]  # no temp


def test_umask_without_proc_is_read_by_setting_it_back(monkeypatch, tmp_path, set_umask):
    set_umask(0o027)
    monkeypatch.setattr("ale_edit.atomic.PROC_STATUS", str(tmp_path / "no-proc"))
    assert current_umask() == 0o027
    assert current_umask() == 0o027  # restored


def test_published_temporary_folder_gets_the_mkdir_mode(tmp_path, set_umask):
    set_umask(0o022)
    src = Path(tempfile.mkdtemp(dir=tmp_path))
    assert stat.S_IMODE(src.stat().st_mode) == 0o700
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    replace_folder(src, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert list((tmp_path / "out").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- output image paths checked before work; file names from phrases ----------------------------------------------

@pytest.mark.parametrize("name,fmt", [("a.png", "PNG"), ("a.PNG", "PNG"), ("a.jpg", "JPEG"), ("a.jpeg", "JPEG"),
                                      ("a.webp", "WEBP"), ("a.bmp", "BMP"), ("a.tif", "TIFF"), ("a.tiff", "TIFF")])
def test_image_extensions_save_in_their_format(tmp_path, name, fmt):
    assert image_format(name) == fmt
    save_image(tmp_path / name, Image.new("RGB", (4, 4), (10, 200, 30)))
    with Image.open(tmp_path / name) as im:
        assert im.format == fmt and im.size == (4, 4)


@pytest.mark.parametrize("name,shown", [("out.json", "'.json'"), ("out.xyz", "'.xyz'"), ("out", "no extension"),
                                        ("out.gif", "'.gif'")])
def test_unknown_extension_is_refused_listing_the_known_ones(tmp_path, name, shown):
    message = rf"{name}: {shown} is not an image extension this can write; use one of .*\.jpg.*\.png.*\.tiff"
    with pytest.raises(OutputPathError, match=message):
        check_output_image_path(tmp_path / name)
    with pytest.raises(OutputPathError, match=message):  # was KeyError: 'JSON'
        save_image(tmp_path / "new" / name, Image.new("RGB", (2, 2)))
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder made


def test_output_path_in_a_writable_place_passes_and_leaves_nothing(tmp_path):
    assert check_output_image_path(tmp_path / "a" / "b" / "edit.png") == tmp_path / "a" / "b" / "edit.png"
    (tmp_path / "c").mkdir()
    assert check_output_image_path(str(tmp_path / "c" / "edit.JPG")) == tmp_path / "c" / "edit.JPG"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c"]


@pytest.mark.parametrize("path,message", [
    ("/proc/x.png", r"/proc/x\.png: cannot create a file in /proc"),
    ("/proc/self/nope/deeper/x.png", r"cannot create a file in /proc/self"),
])
def test_output_path_where_nothing_can_be_created_is_refused(path, message):
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    with pytest.raises(OutputPathError, match=message):
        check_output_image_path(path)


def test_output_path_under_a_file_or_at_a_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputPathError, match=r"notes\.txt is not a folder"):
        check_output_image_path(tmp_path / "notes.txt" / "sub" / "x.png")
    (tmp_path / "looks.png").mkdir()
    with pytest.raises(OutputPathError, match=r"looks\.png is a folder, not an image file"):
        check_output_image_path(tmp_path / "looks.png")
    with pytest.raises(OutputPathError, match=r"the file name is 260 bytes, over the 255"):
        check_output_image_path(tmp_path / ("a" * 256 + ".png"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_path_in_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(OutputPathError, match=r"cannot create a file in .*locked: Permission denied"):
            check_output_image_path(locked / "x.png")
    finally:
        locked.chmod(0o700)


def test_real_mask_names_stay_as_they_are(ale_bench):
    names = [p.name for p in (ale_bench / "masks").glob("*/*_mask.png")]
    assert "computer mouse_mask.png" in names and "t-shirt_mask.png" in names
    for name in names:
        assert safe_file_name(mask_phrase(name), "_mask.png") == name


def test_safe_file_name_replaces_and_hashes():
    assert safe_file_name("blue globe", "_mask.png") == "blue globe_mask.png"
    assert safe_file_name("t-shirt", "_mask.png") == "t-shirt_mask.png"
    assert re.fullmatch(r"a-b-[0-9a-f]{16}_mask\.png", safe_file_name("a/b", "_mask.png"))
    assert re.fullmatch(r"---[0-9a-f]{16}", safe_file_name(".."))
    assert re.fullmatch(r"-hidden-[0-9a-f]{16}\.png", safe_file_name(".hidden", ".png"))
    for phrase in ("a/b", "a\\b", "yoga_mat", "line\nbreak", "tab\there", "nul\x00", "bell\x07", "del\x7f",
                   "rlo\u202egnp.exe", "para\u2029graph", ".", "..", "../../etc/passwd"):
        name = safe_file_name(phrase, "_mask.png")
        stem = name[: -len("_mask.png")]
        assert not any(c in stem for c in "/\\_\x00\n\t\x07\x7f\u202e\u2029"), (phrase, name)
        assert not name.startswith("."), (phrase, name)
        assert mask_phrase(name) == stem  # the layout reads the stem back whole
    with pytest.raises(EditInputError, match="empty phrase"):
        safe_file_name("", "_mask.png")


def test_safe_file_names_are_bounded_and_distinct():
    long_a, long_b = "é" * 200 + "a", "é" * 200 + "b"  # 401 bytes each, the same first 400
    hashed = safe_file_name("a/b", "_mask.png")
    phrases = ["a/b", "a\\b", "a-b", "a_b", "a\nb", hashed[: -len("_mask.png")], hashed, long_a, long_b,
               "A-B", "a-b ", " a-b"]
    names = [safe_file_name(p, "_mask.png") for p in phrases]
    assert len(set(names)) == len(phrases), names
    assert names[2] == "a-b_mask.png"
    for name in names:
        assert len(name.encode("utf-8")) <= 255 and name.endswith("_mask.png")
    assert safe_file_name(long_a, "_mask.png").startswith("é" * 100)  # cut on a character boundary
