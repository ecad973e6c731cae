"""``ale-edit edit`` end to end on real ALE-Bench images, with tiny models."""

import json

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


@pytest.mark.parametrize("args,message", [
    (["--seed", "99999999999999999999999"], "99999999999999999999999 is not in the range 0<=x<=9223372036854775807"),
    (["--device", "cuda:7"], "device 'cuda:7'"),
    (["--dtype", "bogus"], "unknown dtype 'bogus'; choose one of auto, fp16"),
    (["-o", "x.json"], "'.json' is not an image extension this can write; use one of"),
    (["--steps", "0"], "0 is not in the range x>=1"),
    (["--size", "100"], "edit.size must be a multiple of 64; got 100"),
    (["--eos", "bogus"], "'bogus' is not one of"),
    (["--method", "p2p", "--eos", "zeros"], "--eos: options of ALE-Edit, not of --method p2p"),
    (["--set", "p2p.cross_replace=0.6"], "--set p2p.*: options of p2p, but --method is ale"),
    (["--method", "p2p", "--set", "p2p.cross_replace=2"], "p2p.cross_replace must be <= 1.0; got 2"),
    (["--method", "p2p", "--set", "p2p.cross_replac=0.5"], "unknown setting p2p.cross_replac (did you mean "),
    (["--set", "p2q.x=1"], "unknown section 'p2q' (did you mean 'p2p'?)"),
])
def test_bad_options_are_named_before_any_model_loads(ale_bench, tmp_path, monkeypatch, args, message):
    import ale_edit.commands.edit as edit_command

    monkeypatch.setattr(edit_command, "load_diffusion_models", lambda *a, **k: pytest.fail("a model was loaded"))
    out = ["-o", str(tmp_path / "x.png")] if "-o" not in args else []
    result = CliRunner().invoke(main, ["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e", "cup=gold cup",
                                       *out, *args, "--model", "tiny"])
    assert result.exit_code in (1, 2), result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_a_squashed_image_is_named_in_the_output_and_the_record(tmp_path):
    Image.new("RGB", (5000, 300), (90, 120, 30)).save(tmp_path / "wide.png")
    mask = np.zeros((300, 5000), np.uint8)
    mask[100:200, 1000:2000] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    with pytest.warns(UserWarning, match="aspect ratio changes by a factor of 16.67"):
        result = run(["edit", str(tmp_path / "wide.png"), "-e", "box=red box", "--mask", f"box={tmp_path / 'mask.png'}",
                      "-o", str(out), *FAST])
    assert result.exit_code == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["working_size"] == [64, 64] and "5000x300 image is edited at 64x64" in record["warnings"][0]


def test_a_long_phrase_saves_its_mask_under_a_bounded_name(ale_bench, tmp_path):
    phrase = " ".join(["very"] * 70) + " cup"
    mask = ale_bench / "masks" / "artificial_img05" / "cup_mask.png"
    out = tmp_path / "out.png"
    result = run(["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e", f"{phrase}=gold cup",
                  "--mask", f"{phrase}={mask}", "--save-masks", str(tmp_path / "masks"), "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    saved = list((tmp_path / "masks").iterdir())
    assert len(saved) == 1 and len(saved[0].name.encode()) <= 255 and saved[0].name.endswith("_mask.png")
    assert json.loads(out.with_suffix(".json").read_text())["saved_masks"][phrase] == str(saved[0])
