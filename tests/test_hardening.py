"""Hostile input, each refused with one line that names the problem, before any model loads, writing nothing:
non-finite numbers, decompression bombs, over-long prompts, empty lists, a device this machine lacks, a full disk;
and a JPEG's EXIF orientation applied, edited as it displays."""

import errno
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import ExifTags, Image

from ale_edit.cli import main
from ale_edit.errors import EditInputError
from ale_edit.io import MAX_PIXELS_VARIABLE, ImageTooLargeError, load_image, load_mask, max_image_pixels, read_image
from pie_fixture import write_pie_bench
from stage_utils import DVC, ENV, ROOT, bench_stage, invoke, make_project, project_params, ran_stages, smoke_params, \
    write_params

sys.path.insert(0, str(ROOT / "stages"))
import params as schema  # noqa: E402

FAST = ["--model", "tiny", "--size", "64", "--steps", "2"]


@pytest.fixture
def no_models(monkeypatch):
    """Every model loader fails the test if called."""
    import ale_edit.commands.edit as edit_command
    import ale_edit.grounding as grounding
    import ale_edit.models as models

    def loaded(*args, **kwargs):
        pytest.fail("a model was loaded")

    for module, name in [(edit_command, "load_diffusion_models"), (models, "load_diffusion_models"),
                         (grounding, "load_grounding_models")]:
        monkeypatch.setattr(module, name, loaded)


def edit(image, out, *args):
    return CliRunner().invoke(main, ["edit", str(image), "-e", "cup=gold cup", "-o", str(out), *args, *FAST])


def assert_one_line_error(result, message):
    assert result.exit_code in (1, 2), result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("args,message", [
    (["--guidance-target", "nan"], "Invalid value for '--guidance-target': edit.guidance_target must be a finite "
                                   "number; got nan"),
    (["--eta", "nan"], "Invalid value for '--eta': edit.eta must be a finite number; got nan"),
    (["--dilation", "inf"], "Invalid value for '--dilation': edit.dilation must be a finite number; got inf"),
    (["--box-threshold", "nan"], "Invalid value for '--box-threshold': masks.box_threshold must be a finite number; "
                                 "got nan"),
    (["--schedule", "-inf"], "Invalid value for '--schedule': schedule must be a finite number; got -inf"),
    (["--method", "p2p", "--set", "p2p.cross_replace=nan"], "p2p.cross_replace must be a finite number; got nan"),
    (["--method", "p2p", "--set", "p2p.cross_replace=.inf"], "p2p.cross_replace must be a finite number; got inf"),
    (["--method", "masactrl", "--set", "masactrl.start_step=nan"], "masactrl.start_step must be an integer, got 'nan'"),
])
def test_non_finite_numbers_on_the_command_line(ale_bench, tmp_path, no_models, args, message):
    result = edit(ale_bench / "images" / "artificial_img05.jpg", tmp_path / "x.png", *args)
    assert_one_line_error(result, message)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("section,key,value,message", [
    ("edit", "eta", float("nan"), "edit.eta must be a finite number; got nan"),
    ("edit", "guidance_target", float("inf"), "edit.guidance_target must be a finite number; got inf"),
    ("edit", "dilation", float("inf"), "edit.dilation must be a finite number; got inf"),
    ("masks", "box_threshold", float("nan"), "masks.box_threshold must be a finite number; got nan"),
    ("schedule", "color", float("nan"), "schedule.color must be a finite number; got nan"),
    ("p2p", "cross_replace", float("nan"), "p2p.cross_replace must be a finite number; got nan"),
    ("edit", "steps", float("nan"), "edit.steps must be an integer, got nan"),
])
def test_non_finite_numbers_in_params_yaml(section, key, value, message):
    params = project_params()
    params.setdefault(section, {})[key] = value
    with pytest.raises(schema.SettingError) as error:
        schema.check_params(params)
    assert message in str(error.value)


def test_a_stage_refuses_yaml_nan(tmp_path):
    """``edit.eta: .nan`` as written in params.yaml (YAML's spelling of NaN), read by a stage."""
    params = write_params(tmp_path / "params.yaml", project_params())
    params.write_text(params.read_text().replace("eta: 1.0", "eta: .nan"))
    assert "eta: .nan" in params.read_text()
    result = invoke("bench", ["--params", str(params), "--out", str(tmp_path / "bench")])
    assert_one_line_error(result, "params.yaml: edit.eta must be a finite number; got nan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("key,message", [
    ("edit_types", "prompts.edit_types is empty: no edit type would be edited, scored or reported"),
    ("object_counts", "prompts.object_counts is empty: no edit would have a number of objects to change; list at "
                      "least one of 1, 2, 3 (every count: [1, 2, 3])"),
])
def test_empty_lists_are_refused_with_their_meaning(tmp_path, key, message):
    params = project_params()
    params["prompts"][key] = []
    with pytest.raises(schema.SettingError, match=re.escape(message)):
        schema.check_params(params)
    # As `dvc exp run -S prompts.<key>=[]` leaves it: the first stage refuses it, writing nothing.
    write_params(tmp_path / "params.yaml", params)
    result = invoke("bench", ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "bench")])
    assert_one_line_error(result, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_an_empty_image_list_still_means_every_image():
    params = project_params()
    params["bench"]["images"] = []
    schema.check_params(params)


# -- decompression bombs ------------------------------------------------------------------------------------------

BOMB_MESSAGE = "has 900,000,000 pixels, over the limit of 89,478,485 (PIL's decompression-bomb guard); to read it " \
               "deliberately, raise the limit: ALE_EDIT_MAX_IMAGE_PIXELS=900000001"


def write_bomb(path, width=30000, height=30000):
    """A PNG whose header says ``width`` x ``height`` (a 1x1 bilevel picture with its IHDR rewritten): what PIL
    reads before it decodes a pixel, in 69 bytes."""
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, "PNG")
    data = buffer.getvalue()
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:])
    return path


def test_a_bomb_is_named_from_its_header(tmp_path, monkeypatch):
    bomb = write_bomb(tmp_path / "bomb.png")
    monkeypatch.delenv(MAX_PIXELS_VARIABLE, raising=False)
    with pytest.raises(ImageTooLargeError, match=re.escape(f"image {bomb} {BOMB_MESSAGE}")):
        load_image(bomb)
    # Between PIL's limit and twice it PIL only warns, then decodes: refused the same.
    with pytest.raises(ImageTooLargeError, match="has 100,000,000 pixels, over the limit of 89,478,485"):
        load_image(write_bomb(tmp_path / "big.png", 10000, 10000))
    with pytest.raises(ImageTooLargeError, match="mask for 'cup' .* has 900,000,000 pixels"):
        load_mask(bomb, name="cup")
    # Raised deliberately, the limit lets a real picture of that size through; lowered, it refuses a small one.
    Image.new("L", (40, 30)).save(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")
    with pytest.raises(ImageTooLargeError, match="has 1,200 pixels, over the limit of 1,000.*"
                                                 "ALE_EDIT_MAX_IMAGE_PIXELS=1201"):
        load_image(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1200")
    assert load_image(tmp_path / "small.png").size == (40, 30)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(EditInputError, match="ALE_EDIT_MAX_IMAGE_PIXELS='lots' must be a positive whole number"):
        load_image(tmp_path / "small.png")


def test_a_bomb_in_ale_edit_edit(tmp_path, no_models):
    bomb = write_bomb(tmp_path / "in" / "bomb.png")
    result = edit(bomb, tmp_path / "out" / "x.png")
    assert_one_line_error(result, f"Error: image {bomb} {BOMB_MESSAGE}")
    assert not (tmp_path / "out").exists()


def test_a_bomb_in_the_bench_stage(ale_bench, tmp_path):
    source = tmp_path / "bench_source"
    shutil.copytree(ale_bench / "masks" / "artificial_img05", source / "masks" / "artificial_img05")
    write_bomb(source / "images" / "artificial_img05.png")
    params = write_params(tmp_path / "params.yaml", smoke_params(source, bench__images=[]))
    result = invoke("bench", ["--params", str(params), "--out", str(tmp_path / "bench")])
    assert_one_line_error(result, f"benchmark image {source / 'images' / 'artificial_img05.png'} {BOMB_MESSAGE}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench_source", "params.yaml"]


def test_a_bomb_in_the_pie_bench_stage(tmp_path):
    source = write_pie_bench(tmp_path / "pie")
    image = source / "annotation_images" / "6_change_attribute_color_40/2_natural/3_indoor/611000000000.jpg"
    write_bomb(image)
    params = project_params()
    params["bench"].update(kind="pie", source=str(source))
    params["prompts"]["edit_types"] = ["change_color"]
    write_params(tmp_path / "params.yaml", params)
    result = invoke("bench", ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "bench")])
    assert_one_line_error(result, f"benchmark image {image} {BOMB_MESSAGE}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "pie"]


# -- EXIF orientation ---------------------------------------------------------------------------------------------

def write_portrait_jpeg(path):
    """A 64x32 JPEG, red on the left, blue on the right, tagged Orientation 6: a phone's portrait photo, which
    displays 32x64 with the red half on top."""
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32] = (255, 0, 0)
    pixels[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_is_applied_on_load(tmp_path):
    photo = write_portrait_jpeg(tmp_path / "photo.jpg")
    image, orientation = read_image(photo)
    assert orientation == 6 and image.size == (32, 64)
    pixels = np.asarray(image).astype(int)
    assert (pixels[:28, :, 0] > 200).all() and (pixels[36:, :, 2] > 200).all()  # red on top, blue below
    assert load_image(photo).size == (32, 64)
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (64, 32)).save(plain)
    assert read_image(plain)[1] == 1 and load_image(plain).size == (64, 32)


def test_a_portrait_photo_is_edited_as_it_displays(tmp_path):
    photo = write_portrait_jpeg(tmp_path / "photo.jpg")
    mask = np.zeros((64, 32), np.uint8)  # drawn on the picture as displayed: 32 wide, 64 high
    mask[:32] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["edit", str(photo), "-e", "red box=gold box", "--mask",
                                           f"red box={tmp_path / 'mask.png'}", "-o", str(out), "--model", "tiny",
                                           "--size", "128", "--steps", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if "resized" in str(w.message)]  # the mask fits the image as displayed
    assert Image.open(out).size == (64, 128)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["exif_orientation"] == 6 and record["input_size"] == [32, 64] and record["working_size"] == [64, 128]
    assert record["warnings"][0].startswith(f"{photo} has EXIF Orientation 6: read as it displays (rotated 90 "
                                            f"degrees clockwise from how it is stored)")
    assert "EXIF Orientation 6" in result.output


def test_the_manifest_records_an_applied_orientation(tmp_path):
    from ale_edit.bench.materialize import materialize

    source = tmp_path / "src"
    (source / "images").mkdir(parents=True)
    write_portrait_jpeg(source / "images" / "photo.jpg")
    (source / "masks" / "photo").mkdir(parents=True)
    mask = np.zeros((64, 32), np.uint8)
    mask[:32] = 255
    Image.fromarray(mask).save(source / "masks" / "photo" / "box_mask.png")
    entry = materialize(source, tmp_path / "out", ["photo"])["images"][0]
    assert (entry["width"], entry["height"], entry["exif_orientation"]) == (32, 64, 6)
    assert entry["notes"] == ["photo.jpg has EXIF Orientation 6: read as it displays (rotated 90 degrees clockwise "
                              "from how it is stored)"]
    Image.new("RGB", (32, 64)).save(source / "images" / "photo.jpg")  # stored as it displays: nothing recorded
    entry = materialize(source, tmp_path / "out2", ["photo"])["images"][0]
    assert "exif_orientation" not in entry and entry["notes"] == []


# -- a full disk --------------------------------------------------------------------------------------------------

def full_disk(monkeypatch, after_bytes=100):
    """Every PIL save to a file writes ``after_bytes`` bytes, then fails as a full disk does (saves to memory, as
    the output path's check makes, go on)."""
    real_save = Image.Image.save

    def save(self, fp, format=None, **params):
        if not isinstance(fp, (str, os.PathLike)):
            return real_save(self, fp, format, **params)
        with open(fp, "wb") as f:
            f.write(b"\x89PNG" + b"\0" * (after_bytes - 4))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", save)


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(ale_bench, tmp_path, monkeypatch):
    full_disk(monkeypatch)
    out = tmp_path / "out" / "edited.png"
    result = CliRunner().invoke(main, ["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e",
                                       "cup=gold cup", "--mask",
                                       f"cup={ale_bench / 'masks' / 'artificial_img05' / 'cup_mask.png'}",
                                       "-o", str(out), *FAST])
    assert_one_line_error(result, f"Error: cannot write {out}: No space left on device: the disk is full (free "
                                  f"some space, or write elsewhere); nothing of it was left")
    assert list((tmp_path / "out").iterdir()) == []  # no temporary file, no record


def test_a_write_error_keeps_its_errno_and_removes_the_temporary_file(tmp_path):
    from ale_edit.atomic import OutputWriteError, atomic_path, write_json

    with pytest.raises(OutputWriteError) as error:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert error.value.errno == errno.ENOSPC and isinstance(error.value, OSError)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputWriteError, match=r"cannot write .*file/x.json: File exists; nothing of it was left"):
        write_json(tmp_path / "file" / "x.json", {})


# -- stages: one line, no traceback -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stage_inputs(ale_bench, tmp_path_factory):
    """The bench, edits and manual masks of the smoke run, for the model stages."""
    tmp = tmp_path_factory.mktemp("stage_inputs")
    bench = bench_stage(tmp, smoke_params(ale_bench))
    params = write_params(tmp / "p.yaml", smoke_params(ale_bench))
    edits = tmp / "edits.parquet"
    assert invoke("prompts", ["--params", str(params), "--bench", str(bench), "--out", str(edits)]).exit_code == 0
    masks = tmp / "masks"
    assert invoke("masks", ["--params", str(params), "--bench", str(bench), "--edits", str(edits),
                            "--out", str(masks)]).exit_code == 0
    return {"bench": bench, "edits": edits, "masks": masks}


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    import ale_edit.grounding as grounding
    import ale_edit.models as models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)

    def built(*args, **kwargs):
        pytest.fail("a model was built")

    for module, name in [(grounding, "_load_detector"), (grounding, "_load_segmenter"),
                         (models, "build_tiny_diffusion_models")]:
        monkeypatch.setattr(module, name, built)


NO_CUDA = "Error: device 'cuda': no CUDA device is available on this machine (use auto or cpu)"


def test_a_device_this_machine_lacks_is_one_line_in_the_masks_stage(ale_bench, stage_inputs, tmp_path, no_cuda):
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench, model__device="cuda", masks__source="auto"))
    result = invoke("masks", ["--params", str(params), "--bench", str(stage_inputs["bench"]), "--edits",
                              str(stage_inputs["edits"]), "--out", str(tmp_path / "masks")])
    assert_one_line_error(result, NO_CUDA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_a_device_this_machine_lacks_is_one_line_in_the_edit_stage(ale_bench, stage_inputs, tmp_path, no_cuda,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)  # the stage's work folder and logs are relative
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench, model__device="cuda"))
    result = invoke("edit", ["--edit-type", "color", "--params", str(params), "--bench", str(stage_inputs["bench"]),
                             "--edits", str(stage_inputs["edits"]), "--masks", str(stage_inputs["masks"]),
                             "--embeddings", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "results")])
    assert_one_line_error(result, NO_CUDA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_a_full_disk_is_one_line_in_a_stage(ale_bench, stage_inputs, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def write_table(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a table")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq, "write_table", write_table)
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench))
    out = tmp_path / "prompts" / "edits.parquet"
    result = invoke("prompts", ["--params", str(params), "--bench", str(stage_inputs["bench"]), "--out", str(out)])
    assert_one_line_error(result, f"Error: cannot write {out}: No space left on device: the disk is full")
    assert list(out.parent.iterdir()) == []


def test_a_missing_input_is_one_line_in_a_stage(ale_bench, tmp_path):
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench))
    result = invoke("prompts", ["--params", str(params), "--bench", str(tmp_path / "nowhere"), "--out",
                                str(tmp_path / "edits.parquet")])
    assert_one_line_error(result, f"Error: {tmp_path / 'nowhere' / 'manifest.json'}: No such file or directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


# -- prompts over the text encoder's 77 tokens --------------------------------------------------------------------

LONG_PHRASE = " ".join(["shiny"] * 80) + " cup"  # 81 tokens, 83 with BOS/EOS


def test_a_phrase_over_77_tokens_is_refused_before_models_load(ale_bench, tmp_path, no_models, caplog):
    result = CliRunner().invoke(main, ["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e",
                                       f"cup={LONG_PHRASE}", "-o", str(tmp_path / "x.png"), *FAST])
    assert_one_line_error(result, f"Error: prompt '{LONG_PHRASE}' is 83 tokens with BOS/EOS; the text encoder takes "
                                  f"at most 77")
    assert not list(tmp_path.iterdir())
    assert "sequence length" not in caplog.text  # no second, library warning about the length


def test_the_prompts_stage_refuses_a_prompt_over_77_tokens(tmp_path):
    source = write_pie_bench(tmp_path / "pie")
    mapping = json.loads((source / "mapping_file.json").read_text())
    entry = mapping["611000000000"]
    entry["editing_prompt"] = entry["editing_prompt"] + " in a room" * 30
    (source / "mapping_file.json").write_text(json.dumps(mapping))
    params = project_params()
    params["bench"].update(kind="pie", source=str(source))
    params["prompts"]["edit_types"] = ["change_color"]
    bench = bench_stage(tmp_path, params)
    out = tmp_path / "prompts" / "edits.parquet"
    result = invoke("prompts", ["--params", str(tmp_path / "params.yaml"), "--bench", str(bench), "--out", str(out)])
    assert_one_line_error(result, "Error: edit 1/change_color/611000000000/0: prompt 'a pink heart on a white table "
                                  "in a room in a room")
    assert "is 99 tokens with BOS/EOS; the text encoder takes at most 77" in result.output
    assert not out.parent.exists()


def test_length_check_is_the_text_encoders(tmp_path):
    from ale_edit.errors import PromptTooLongError
    from ale_edit.text import check_edit_lengths

    fits = " ".join(["shiny"] * 74) + " cup"  # 75 tokens, 77 with BOS/EOS: the most the encoder takes
    check_edit_lengths([("cup", fits)])
    with pytest.raises(PromptTooLongError, match="is 78 tokens with BOS/EOS"):
        check_edit_lengths([("cup", "shiny " + fits)])
    with pytest.raises(PromptTooLongError, match="is 78 tokens"):  # two phrases joined by " and " (one token)
        check_edit_lengths([("cup", " ".join(["shiny"] * 72) + " cup"), ("box", "red box")])


@pytest.mark.parametrize("value,kind,bounds,message", [
    ("nan", float, (0, 1), "schedule must be a finite number; got nan"),
    (float("inf"), float, (None, None), "schedule must be a finite number; got inf"),
    ("1.5", float, (0, 1), "schedule must be <= 1; got 1.5"),
    ("", int, (1, None), "schedule must be an integer, got ''"),
    ("nan", int, (1, None), "schedule must be an integer, got 'nan'"),
    ("1e400", int, (1, None), "schedule must be an integer, got '1e400'"),
    ("2.5", int, (1, None), "schedule must be an integer, got '2.5'"),
    (True, float, (None, None), "schedule must be a number, got True"),
])
def test_parse_number_is_the_rule_for_typed_fields(value, kind, bounds, message):
    from ale_edit.options import SettingError, parse_number

    with pytest.raises(SettingError, match=re.escape(message)):
        parse_number(value, "schedule", kind, *bounds)


def test_parse_number_passes_what_the_rule_allows():
    from ale_edit.options import parse_number

    assert parse_number("0.25", "schedule", float, 0, 1) == 0.25
    assert parse_number("15", "steps", int, 1) == 15 and parse_number(64.0, "size", int, 64) == 64


def test_dvc_exp_run_with_no_edit_types_stops_at_the_first_stage(ale_bench, tmp_path):
    project = make_project(tmp_path, smoke_params(ale_bench))
    result = subprocess.run(DVC + ["exp", "run", "-S", "prompts.edit_types=[]"], cwd=project, env=ENV,
                            capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error: params.yaml: prompts.edit_types is empty: no edit type would be edited, scored or reported" in output
    assert "Traceback" not in output and ran_stages(output) == {"bench"}
    # Nothing written (DVC makes its outputs' empty parent folders).
    assert [p.name for p in (project / "data").rglob("*") if p.is_file()] == ["attributes.yaml"]


def test_the_limit_is_applied_per_read_and_pil_keeps_its_own(tmp_path, monkeypatch):
    before = Image.MAX_IMAGE_PIXELS
    Image.new("L", (40, 30)).save(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1000")
    with pytest.raises(ImageTooLargeError):
        load_image(tmp_path / "small.png")
    assert Image.MAX_IMAGE_PIXELS == before  # other code reading pictures in this process is not affected
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "none")
    assert max_image_pixels() is None and load_image(tmp_path / "small.png").size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == before
    monkeypatch.delenv(MAX_PIXELS_VARIABLE)
    assert max_image_pixels() == before == 89478485  # PIL's own default


def test_more_steps_than_the_lcm_schedule_has_is_named_once(ale_bench, tmp_path):
    """LCM chooses its steps among the model's original ones (50): more is one named error when the editor is
    built, not the scheduler's traceback at the first edit (every edit of a stage an error row)."""
    from ale_edit.editor import Editor
    from ale_edit.models import load_diffusion_models
    from ale_edit.settings import EditSettings

    models = load_diffusion_models("tiny")
    assert models.scheduler.config.original_inference_steps == 50
    Editor(models, EditSettings(steps=50))
    with pytest.raises(EditInputError, match="edit.steps .--steps. is 51, more than the 50 original steps"):
        Editor(models, EditSettings(steps=51))
    out = tmp_path / "edited.png"
    result = CliRunner().invoke(main, ["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e",
                                       "cup=gold cup", "-o", str(out), "--model", "tiny", "--size", "64",
                                       "--steps", "60"])
    assert_one_line_error(result, "give at most 50")
    assert not out.exists() and not out.with_suffix(".json").exists()
