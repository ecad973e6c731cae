"""Hostile input, each refused with one line that names the problem, before any model loads, writing nothing:
non-finite numbers, decompression bombs, over-long prompts, empty lists, a device this machine lacks, a full disk;
and a JPEG's EXIF orientation applied, edited as it displays."""

import re
import sys

import pytest
from click.testing import CliRunner

from ale_edit.cli import main
from stage_utils import ROOT, invoke, project_params, write_params

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
