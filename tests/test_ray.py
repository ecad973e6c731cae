"""Backend ray: the edit and score stages on a pool of Ray actors (a local Ray started here with 2 CPUs, tiny models,
64 px): the local backend's bytes, a failing edit as an error row, an actor killed mid-run, the driver killed
mid-run, and the named error where Ray is not installed."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import ale_edit.bench.runner as runner
from stage_utils import ENV, ROOT, load_stage, smoke_params, write_params

sys.path.insert(0, str(ROOT / "stages"))
from params import EditRayParams, ScoreRayParams  # noqa: E402  (stages/params.py: params.yaml's schema)

LONG_TARGET = " ".join(["shiny"] * 80) + " cup"  # over the text encoder's 77 tokens: the edit raises


@contextmanager
def inside(folder: Path):
    """The stages write their work folder and logs where they run."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_stage(stage: str, *args: str) -> str:
    result = CliRunner().invoke(load_stage(stage), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray on 2 CPUs for the module; the stages run in this process use it, others join it by address."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def data(ale_bench, tmp_path_factory) -> Path:
    """The stages before edit, run once: 12 color edits (2 images x 1-2 objects x 3 instances), masks, encodings."""
    root = tmp_path_factory.mktemp("ray_data")
    params = smoke_params(ale_bench, prompts__edit_types=["color"], prompts__instances=3)
    write_params(root / "params.yaml", params)
    with inside(root):
        for stage in ("bench", "prompts", "masks", "embed"):
            run_stage(stage)
    return root


def stage_args(data: Path, edits: Path | None = None) -> list[str]:
    """Every input by absolute path, the same string whichever folder a stage runs in (the scores record them)."""
    return ["--bench", str(data / "data/bench"), "--edits", str(edits or data / "data/prompts/edits.parquet"),
            "--masks", str(data / "data/masks"), "--embeddings", str(data / "data/embeddings/text.parquet")]


def project(folder: Path, data: Path, *, address: str = "auto", **edit) -> Path:
    """A folder to run the stages in: params.yaml of ``data`` with the Ray pools of 2 workers, and ``edit``."""
    folder.mkdir(parents=True)
    params = smoke_params(data, prompts__edit_types=["color"], prompts__instances=3)
    params["edit"].update(edit)
    for section in ("edit", "score"):
        params[section]["ray"].update(address=address, workers=2)
    write_params(folder / "params.yaml", params)
    return folder


@pytest.mark.slow
def test_ray_gives_the_local_backends_bytes_to_the_metrics_and_a_failing_edit_is_an_error_row(data, local_ray, tmp_path):
    # 4 of the edits, one of them failing: its batch-mate is then edited alone, by either backend.
    table = pd.read_parquet(data / "data/prompts/edits.parquet")
    table = table[table["index"] == 0].reset_index(drop=True)
    failing = table.loc[1, "edit_id"]
    table.at[1, "targets"] = [LONG_TARGET] + list(table.loc[1, "targets"])[1:]
    table.to_parquet(tmp_path / "edits.parquet")
    edit_args = ["--edit-type", "color", *stage_args(data, tmp_path / "edits.parquet")]
    score_args = ["--edit-type", "color", "--bench", str(data / "data/bench")]
    outputs = {}
    for backend in ("local", "ray"):
        folder = project(tmp_path / backend, data)
        # On a CPU float results depend on torch's thread count: the local run takes the actors' one thread.
        with inside(folder), torch_threads(1):
            edit_out = run_stage("edit", *edit_args, "--backend", backend)
            score_out = run_stage("score", *score_args, "--backend", backend)
            run_stage("report", "--bench", str(data / "data/bench"))
        assert "4 edits, 1 failed (error rows)" in edit_out and "4 edits, 1 errors" in score_out
        if backend == "ray":
            assert "Ray at auto, up to 2 actors" in edit_out and "Ray at auto, up to 2 actors" in score_out
        outputs[backend] = {name: files_of(folder / name / "color") for name in ("results", "scores")}
        outputs[backend].update({name: files_of(folder / name) for name in ("metrics", "plots")})

    assert "ale_bench.json" in outputs["ray"]["metrics"] and "metrics_by_type.csv" in outputs["ray"]["plots"]
    for name in ("results", "scores", "metrics", "plots"):
        local, ray = outputs["local"][name], outputs["ray"][name]
        assert sorted(ray) == sorted(local)
        assert [f for f in local if local[f] != ray[f]] == [], name
    assert len(outputs["local"]["results"]) == 4  # three images and the table: the failed edit has no image

    results = pd.read_parquet(tmp_path / "ray/results/color/edits.parquet")
    errors = results.set_index("edit_id")["error"]
    assert list(errors[errors.notna()].index) == [failing]
    assert errors[failing].startswith("PromptTooLongError: prompt ")
    per_edit = pd.read_parquet(tmp_path / "ray/scores/color/per_edit.parquet").set_index("edit_id")
    assert per_edit.loc[failing, "error"] == f"the edit failed: {errors[failing]}"
    scored = per_edit.drop(index=failing)
    assert scored["error"].isna().all() and scored["edited_clip"].notna().all() and len(scored) == 3
    metrics = json.loads((tmp_path / "ray/scores/color/metrics.json").read_text())
    assert metrics["overall"]["count"] == 4 and metrics["overall"]["errors"] == 1


@pytest.mark.slow
def test_an_actor_killed_mid_run_is_restarted_and_no_edit_is_written_twice(data, local_ray, tmp_path, monkeypatch):
    folder = project(tmp_path / "run", data, batch_size=1)
    writes, workers, killed = [], set(), {}
    write_json = runner.write_json

    def counting_write(path, record):
        write_json(path, record)
        if Path(path).parent.name == "color" and ".ale-edit-work" in Path(path).parts:
            writes.append(Path(path).stem)
            workers.add(record["worker"])
            if not killed:  # the actor that made the first edit dies while it works on its next ones
                killed["pid"] = int(record["worker"].rsplit(":", 1)[1])
                killed["written"] = len(writes)
                os.kill(killed["pid"], signal.SIGKILL)

    monkeypatch.setattr(runner, "write_json", counting_write)
    with inside(folder):
        out = run_stage("edit", "--edit-type", "color", *stage_args(data), "--backend", "ray")
    assert "12 edited now, 0 already done" in out and "12 edits, 0 failed" in out
    assert len(writes) == 12 and len(set(writes)) == 12  # every edit written, none twice
    assert killed["written"] < 12  # the kill landed with edits still to do
    assert len(workers) == 3  # the two actors, and the killed one restarted, which did the batches it had queued
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    results = pd.read_parquet(folder / "results/color/edits.parquet")
    assert results["edit_id"].is_unique and len(results) == 12
    assert all((folder / "results/color" / p).is_file() for p in results["path"])


@pytest.mark.slow
def test_the_driver_killed_mid_run_resumes_without_redoing(data, local_ray, tmp_path):
    folder = project(tmp_path / "run", data, address=local_ray, batch_size=1)
    command = [sys.executable, str(ROOT / "stages/edit.py"), "--edit-type", "color", *stage_args(data),
               "--backend", "ray"]
    work = folder / ".ale-edit-work/edit/color"
    # The module's Ray checks a token (Ray's default for a local cluster); a driver joining it by address uses it.
    process = subprocess.Popen(command, cwd=folder, env=dict(ENV, RAY_AUTH_MODE="token"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not list(work.glob("[!.]*.json")):
        time.sleep(0.02)
    assert process.poll() is None, process.communicate()[0].decode()[-3000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p: p.stat().st_mtime_ns for p in work.glob("[!.]*.json")}
    assert 1 <= len(finished) < 12, "the kill should land halfway"
    assert not (folder / "results/color").exists()

    with inside(folder):
        out = run_stage("edit", "--edit-type", "color", *stage_args(data), "--backend", "ray")
    assert f"{12 - len(finished)} edited now, {len(finished)} already done" in out
    results = pd.read_parquet(folder / "results/color/edits.parquet")
    assert len(results) == 12 and results["edit_id"].is_unique and results["error"].isna().all()
    assert all((folder / "results/color" / p).is_file() for p in results["path"])


@pytest.mark.parametrize("stage", ["edit", "score"])
def test_backend_ray_without_ray_installed_is_a_named_error_before_any_model_loads(ale_bench, tmp_path, monkeypatch,
                                                                                   stage):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed

    def no_model(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr("ale_edit.models.load_diffusion_models", no_model)
    monkeypatch.setattr("ale_edit.bench.metric_models.load_metric_models", no_model)
    params = smoke_params(ale_bench)
    params[stage]["backend"] = "ray"
    write_params(tmp_path / "params.yaml", params)
    result = CliRunner().invoke(load_stage(stage), ["--edit-type", "color", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 1, result.output
    assert "backend ray needs Ray Data" in result.output
    assert "pip install -e '.[ray]'" in result.output and "ray[data]>=2.60" in result.output


def test_the_pool_follows_the_cluster_and_refuses_what_cannot_run(local_ray):
    from ale_edit.bench.ray_backend import plan_pool
    from ale_edit.options import SettingError

    pool = plan_pool(EditRayParams(), "auto")  # this Ray: one node, 2 CPUs, no GPU
    assert (pool.workers, pool.num_gpus, pool.device, pool.threads) == (1, 0, "cpu", 1)
    assert plan_pool(ScoreRayParams(workers=2, num_cpus=2), "cpu").threads == 2
    with pytest.raises(SettingError, match=r"each Ray actor asks for 1 GPUs \(edit.ray.num_gpus\) and the cluster"):
        plan_pool(EditRayParams(), "cuda")
    with pytest.raises(SettingError, match="model.device is cpu, but each Ray actor gets 1 GPUs: set score.ray"):
        plan_pool(ScoreRayParams(num_gpus=1), "cpu")


def test_an_address_ray_cannot_use_is_a_named_error(monkeypatch):
    ray = pytest.importorskip("ray")
    from ale_edit.bench.backends import RayConnectionError
    from ale_edit.bench.ray_backend import ray_cluster

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a stage's own process
    with pytest.raises(RayConnectionError, match=r"^score.ray.address 'http://': cannot start or join Ray: "):
        with ray_cluster(ScoreRayParams(address="http://")):
            pass
