"""Preflight: every missing model named on one line before any work or model load, in the library, the commands
and the stages."""

import json
import os
import subprocess
import sys

import pytest
import torchvision
from click.testing import CliRunner
from huggingface_hub import constants

from ale_edit import preflight
from ale_edit.cli import main
from ale_edit.errors import EditInputError, ModelUnavailableError
from ale_edit.preflight import ModelNeed, check_models, diffusion_need, grounding_needs, looks_like_path, metric_needs

from stage_utils import ROOT, invoke, smoke_params, write_params

IMAGE_ARGS = ["-e", "cup=cup made of gold", "--size", "64", "--steps", "2"]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache, the hub offline (as tests always are)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_repo(cache, repo_id: str, files: dict) -> None:
    """``repo_id`` in the hub cache's layout (refs/main -> snapshots/<commit>/<files>)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    for name, text in files.items():
        path = repo / "snapshots" / ("0" * 40) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def no_loads(monkeypatch):
    """Every model loader fails the test if it is called: a preflight error must come before any load."""
    import ale_edit.bench.metric_models as metric_models
    import ale_edit.bench.scoring as scoring
    import ale_edit.commands.edit as edit_command
    import ale_edit.grounding as grounding

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the preflight named the missing ones")

    for module, name in [(edit_command, "load_diffusion_models"), (grounding, "load_grounding_models"),
                         (scoring, "load_metric_models"), (metric_models, "load_clip"), (metric_models, "load_dino"),
                         (metric_models, "build_lpips")]:
        monkeypatch.setattr(module, name, forbidden)


def test_what_is_a_path_and_what_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in ("./sam", "../sam", "/opt/sam", "~/sam", "a/b/c", "sam_vit_h_4b8939.pth", "models/sam-vit-hugee"):
        assert looks_like_path(name), name
    for name in ("facebook/sam-vit-huge", "openai/clip-vit-large-patch14", "gpt2"):
        assert not looks_like_path(name), name


def test_missing_folder_cache_entry_and_lpips_file_are_named_on_one_line(tmp_path, hub_cache, no_loads):
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "config.json").write_text(json.dumps({"model_type": "sam"}))  # no processor file
    needs = [diffusion_need(str(tmp_path / "no-such-model")),
             *grounding_needs("IDEA-Research/grounding-dino-base", str(tmp_path / "seg")),
             *metric_needs("tiny", "tiny", "squeeze", tmp_path / "squeezenet.pth")]
    with pytest.raises(ModelUnavailableError) as info:
        check_models(needs)
    message = str(info.value)
    assert isinstance(info.value, EditInputError) and isinstance(info.value, OSError)
    assert "\n" not in message and message.startswith("4 model(s) not available: ")
    assert f"the diffusion model '{tmp_path / 'no-such-model'}': no such folder" in message
    assert ("the detector 'IDEA-Research/grounding-dino-base' is not in the local Hugging Face cache (no config.json, "
            "preprocessor_config.json or processor_config.json) and the hub is offline") in message
    assert "`hf download IDEA-Research/grounding-dino-base`" in message
    assert (f"the segmenter '{tmp_path / 'seg'}': the folder has no preprocessor_config.json or "
            f"processor_config.json") in message
    assert f"the LPIPS SqueezeNet weights file '{tmp_path / 'squeezenet.pth'}' (score.lpips_weights): no such file" \
        in message


def test_a_cached_hub_id_and_a_complete_folder_pass(tmp_path, hub_cache):
    cache_repo(hub_cache, "facebook/sam2.1-hiera-large",
               {"config.json": json.dumps({"model_type": "sam2_video"}), "processor_config.json": "{}"})
    folder = tmp_path / "sam"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "sam"}))
    (folder / "preprocessor_config.json").write_text("{}")
    check_models([ModelNeed("segmenter", "facebook/sam2.1-hiera-large", preflight.PROCESSOR_FILES),
                  ModelNeed("segmenter", str(folder), preflight.PROCESSOR_FILES), diffusion_need("tiny")])
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ModelUnavailableError, match="is a 'vit' model; it must be SAM or SAM 2"):
        check_models(grounding_needs("tiny", str(folder)))


def test_a_segment_anything_checkpoint_names_convert_sam(tmp_path):
    checkpoint = tmp_path / "sam_vit_h_4b8939.pth"
    checkpoint.write_bytes(b"\0")
    with pytest.raises(ModelUnavailableError, match=f"convert a segment-anything checkpoint with `ale-edit "
                                                    f"convert-sam {checkpoint} OUT_DIR`"):
        check_models(grounding_needs("tiny", str(checkpoint)))


def test_lpips_weights_default_to_torch_home_and_need_it_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hosts = []
    monkeypatch.setattr(preflight, "reachable", lambda host: hosts.append(host) and False)
    default = tmp_path / "torch" / "hub" / "checkpoints" / preflight.LPIPS_SQUEEZE_FILE
    assert preflight.default_lpips_weights() == default
    # the file torchvision's LPIPS backbone downloads, by name
    assert torchvision.models.SqueezeNet1_1_Weights.DEFAULT.url.endswith("/" + preflight.LPIPS_SQUEEZE_FILE)
    with pytest.raises(ModelUnavailableError, match=f"'{default}' is missing and cannot be downloaded offline: "
                                                    f"copy {preflight.LPIPS_SQUEEZE_FILE} there"):
        check_models(metric_needs("tiny", "tiny", "squeeze"))
    assert hosts == ["download.pytorch.org"]
    default.parent.mkdir(parents=True)
    default.write_bytes(b"\0")
    check_models(metric_needs("tiny", "tiny", "squeeze"))
    check_models(metric_needs("tiny", "tiny", "tiny", tmp_path / "absent.pth"))  # the tiny LPIPS needs no file


def test_an_unreachable_hub_is_tried_once_then_the_cache_is_read_offline(hub_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def refuse(address, timeout):
        calls.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(preflight.socket, "create_connection", refuse)
    preflight.reachable.cache_clear()
    try:
        for _ in range(2):
            with pytest.raises(ModelUnavailableError, match="'openai/clip-vit-large-patch14' is not in the local"):
                check_models(metric_needs("openai/clip-vit-large-patch14", "tiny", "tiny"))
        assert calls == [(("huggingface.co", 443), preflight.CONNECT_TIMEOUT_S)]  # one try, no retries
        assert constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"  # the loads read the cache only
    finally:
        preflight.reachable.cache_clear()
        os.environ["HF_HUB_OFFLINE"] = "1"  # as conftest set it


def test_edit_names_every_missing_model_before_loading_any(ale_bench, tmp_path, hub_cache, no_loads):
    image = ale_bench / "images" / "artificial_img05.jpg"
    result = CliRunner().invoke(main, ["edit", str(image), *IMAGE_ARGS, "--model", str(tmp_path / "lcm"),
                                       "--segmenter", str(tmp_path / "sam.pth"), "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: 3 model(s) not available: the diffusion model")
    assert "the detector 'IDEA-Research/grounding-dino-base' is not in the local Hugging Face cache" in line
    assert f"`ale-edit convert-sam {tmp_path / 'sam.pth'} OUT_DIR`" in line
    # A given mask: no detector or segmenter is needed, so neither is asked for.
    mask = ale_bench / "masks" / "artificial_img05" / "cup_mask.png"
    result = CliRunner().invoke(main, ["edit", str(image), *IMAGE_ARGS, "--mask", f"cup={mask}", "--model",
                                       str(tmp_path / "lcm"), "-o", str(tmp_path / "out.png")])
    assert result.output.strip().startswith("Error: 1 model(s) not available: the diffusion model")


def test_score_names_every_missing_model_before_loading_any(ale_bench, tmp_path, hub_cache, no_loads):
    (tmp_path / "results").mkdir()
    result = CliRunner().invoke(main, ["score", str(tmp_path / "results"), "--bench", str(ale_bench),
                                       "--clip-model", "./clip-missing", "--lpips-weights", str(tmp_path / "sq.pth"),
                                       "-o", str(tmp_path / "scores")])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: 3 model(s) not available: the CLIP model './clip-missing': no such folder")
    assert "the DINO model 'facebook/dino-vitb8' is not in the local Hugging Face cache" in line
    assert f"'{tmp_path / 'sq.pth'}' (--lpips-weights): no such file" in line


def test_the_command_line_prints_one_line_and_no_traceback(ale_bench, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "ale_edit.cli", "edit", str(ale_bench / "images" /
                                                                            "artificial_img05.jpg"),
                          *IMAGE_ARGS, "-o", str(tmp_path / "out.png")], env=env, capture_output=True, text=True)
    assert run.returncode == 1 and run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("Error: 3 model(s) not available: the diffusion model 'SimianLuo/LCM_Dreamshaper_v7' is "
                           "not in the local Hugging Face cache")


@pytest.mark.parametrize("stage,setting,args", [
    ("masks", {"masks__source": "auto", "model__preset": "real", "model__segmenter": "./sam-typo"},
     ["--bench", "no-bench", "--edits", "no-edits.parquet"]),
    ("embed", {"model__preset": "real", "model__diffusion": "./lcm-typo"}, ["--edits", "no-edits.parquet"]),
    ("edit", {"model__preset": "real", "model__diffusion": "./lcm-typo", "score__lpips_weights": "sq-typo.pth"},
     ["--edit-type", "color", "--bench", "no-bench", "--edits", "no-edits.parquet"]),
    ("score", {"model__preset": "real", "score__clip": "./clip-typo"},
     ["--edit-type", "color", "--bench", "no-bench"]),
])
def test_each_stage_names_its_missing_models_before_it_works(ale_bench, tmp_path, hub_cache, no_loads, stage,
                                                           setting, args):
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench, **setting))
    result = invoke(stage, ["--params", str(params), *args])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()  # before any input is read: the inputs here do not exist
    assert line.startswith("Error: ") and "not available" in line
    typo = next(v for v in setting.values() if "typo" in str(v))
    assert f"'{typo}': no such folder" in line
    if stage == "edit":  # the score stage's models are checked with the edit stage's
        assert "the DINO model 'facebook/dino-vitb8' is not in the local Hugging Face cache" in line
        assert "the LPIPS SqueezeNet weights file 'sq-typo.pth' (score.lpips_weights): no such file" in line


def test_the_studio_names_its_missing_models_before_it_starts(tmp_path, hub_cache, monkeypatch):
    pytest.importorskip("gradio")
    import ale_edit.studio as studio

    monkeypatch.setattr(studio, "serve", lambda *a, **k: pytest.fail("the studio started"))
    result = CliRunner().invoke(main, ["studio", "--model", str(tmp_path / "lcm"), "--segmenter", "./sam-typo"])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: 3 model(s) not available: ") and "'./sam-typo': no such folder" in line


def test_a_model_that_fails_to_load_in_a_stage_is_one_line(ale_bench, tmp_path, hub_cache):
    """Its configs are there (the preflight passes), its weights are not: the loader's reason, one line."""
    import warnings

    import pandas as pd

    from ale_edit.models import load_diffusion_models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_diffusion_models("tiny", "cpu").save_pretrained(tmp_path / "lcm")
    (tmp_path / "lcm" / "text_encoder" / "model.safetensors").unlink()
    edits = tmp_path / "edits.parquet"
    pd.DataFrame({"image": ["artificial_img05"], "sources": [["cup"]], "targets": [["gold cup"]]}).to_parquet(edits)
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench, model__preset="real",
                                                            model__diffusion=str(tmp_path / "lcm")))
    result = invoke("embed", ["--params", str(params), "--edits", str(edits), "--out", str(tmp_path / "t.parquet")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(
        f"Error: cannot load the text encoder of '{tmp_path / 'lcm'}'")
    assert "Traceback" not in result.output
