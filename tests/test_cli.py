"""``ale-edit edit`` end to end on real ALE-Bench images, with tiny models."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ale_edit.cli import main

FAST = ["--model", "tiny", "--size", "64", "--steps", "2"]


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_edit_with_hand_refined_masks(ale_bench, tmp_path):
    image = ale_bench / "images" / "natural_img02.jpg"
    masks = ale_bench / "masks" / "natural_img02"
    out = tmp_path / "out" / "edited.png"
    result = run(["edit", str(image), "-e", "red bell pepper=blue bell pepper", "-e", "green bell pepper=golden apple",
                  "--mask", f"red bell pepper={masks / 'red bell pepper_mask.png'}",
                  "--mask", f"green bell pepper={masks / 'green bell pepper_mask.png'}",
                  "--type", "color+object", "--save-masks", str(tmp_path / "masks"), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    edited = Image.open(out)
    assert edited.size == (64, 64) and edited.mode == "RGB"
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["mask_sources"] == {"red bell pepper": "given", "green bell pepper": "given"}
    assert record["schedule"] == 0.5 and record["settings"]["steps"] == 2 and record["seed"] == 42
    assert record["target_prompt"] == "blue bell pepper and golden apple"
    assert record["seconds"] > 0 and record["fallbacks"] == []
    saved = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert saved == ["green bell pepper_mask.png", "red bell pepper_mask.png"]
    assert np.asarray(Image.open(tmp_path / "masks" / saved[0])).max() == 255


def test_edit_through_grounded_sam(ale_bench, tmp_path):
    out = tmp_path / "edited.png"
    result = run(["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e", "cup=cup made of gold",
                  "--schedule", "0.6", "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["mask_sources"]["cup"] in ("detected", "missing")
    assert record["schedule"] == 0.6
    # A tiny random detector finds what it finds; whichever it is, the record says what happened.
    assert (record["mask_sources"]["cup"] == "missing") == bool(record["fallbacks"])


def test_same_command_same_image(ale_bench, tmp_path):
    args = ["edit", str(ale_bench / "images" / "natural_img06.jpg"), "-e", "knife=golden knife",
            "--mask", f"knife={ale_bench / 'masks' / 'natural_img06' / 'knife_mask.png'}", *FAST]
    run(args + ["-o", str(tmp_path / "a.png")])
    run(args + ["-o", str(tmp_path / "b.png")])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))


@pytest.mark.parametrize("edit_arg,message", [
    ("cup", "SOURCE=TARGET"), ("cup=", "empty side"), ("=gold cup", "empty side"),
])
def test_malformed_edit_option(ale_bench, tmp_path, edit_arg, message):
    result = CliRunner().invoke(main, ["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e", edit_arg,
                                       "-o", str(tmp_path / "x.png"), *FAST])
    assert result.exit_code == 2 and message in result.output


def test_missing_and_corrupt_images_are_named(tmp_path):
    result = CliRunner().invoke(main, ["edit", str(tmp_path / "nope.jpg"), "-e", "a=b", "-o", str(tmp_path / "x.png"),
                                       *FAST])
    assert result.exit_code == 1 and "image not found" in result.output
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    result = CliRunner().invoke(main, ["edit", str(bad), "-e", "a=b", "-o", str(tmp_path / "x.png"), *FAST])
    assert result.exit_code == 1 and "cannot be read" in result.output
    assert not (tmp_path / "x.png").exists()


def test_mask_errors_are_named(ale_bench, tmp_path):
    image = ale_bench / "images" / "artificial_img05.jpg"
    empty = tmp_path / "empty_mask.png"
    Image.new("L", (1000, 1000), 0).save(empty)
    result = CliRunner().invoke(main, ["edit", str(image), "-e", "cup=gold cup", "--mask", f"cup={empty}",
                                       "-o", str(tmp_path / "x.png"), *FAST])
    assert result.exit_code == 1 and "empty" in result.output
    result = CliRunner().invoke(main, ["edit", str(image), "-e", "cup=gold cup", "--mask", f"mug={empty}",
                                       "-o", str(tmp_path / "x.png"), *FAST])
    assert result.exit_code == 1 and "not source phrases" in result.output
    result = CliRunner().invoke(main, ["edit", str(image), "-e", "cup=gold cup", "-e", "cup=red cup",
                                       "-o", str(tmp_path / "x.png"), *FAST])
    assert result.exit_code == 1 and "duplicate source" in result.output
    assert not (tmp_path / "x.png").exists()


def test_mask_of_another_size_warns_and_runs(ale_bench, tmp_path):
    small = tmp_path / "cup_mask.png"
    Image.open(ale_bench / "masks" / "artificial_img05" / "cup_mask.png").resize((250, 250)).save(small)
    with pytest.warns(UserWarning, match="resized"):
        result = run(["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e", "cup=gold cup",
                      "--mask", f"cup={small}", "-o", str(tmp_path / "x.png"), *FAST])
    assert result.exit_code == 0


@pytest.mark.parametrize("method", ["fpe", "masactrl", "p2p", "infedit"])
def test_every_baseline_runs_from_the_command_line(ale_bench, tmp_path, method):
    out = tmp_path / f"{method}.png"
    result = run(["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e", "cup=cup made of gold",
                  "-e", "book=red-colored book", "--method", method, "--type", "material", "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["method"] == method and record["mask_sources"] == {}  # baselines take no masks
    assert Image.open(out).size == (64, 64)
