"""The DVC pipeline end to end, on tiny models and a subset of real ALE-Bench: `dvc repro`, an experiment that
re-runs only the stages its parameter touches, `dvc metrics diff`; and an edit stage killed halfway, resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from stage_utils import DVC, ENV, make_project, ran_stages, sh, smoke_params

pytestmark = pytest.mark.slow


def test_repro_experiment_and_metrics_diff(ale_bench, tmp_path):
    project = make_project(tmp_path, smoke_params(ale_bench))
    out = sh(DVC + ["repro"], project)
    assert ran_stages(out) == {"bench", "prompts", "masks", "embed", "edit@color", "edit@object", "score@color",
                               "score@object", "report"}
    metrics = json.loads((project / "metrics" / "ale_bench.json").read_text())
    assert metrics["overall"]["count"] == 8 and metrics["overall"]["errors"] == 0
    assert metrics["by_type"]["color"]["count"] == 4 and "by_objects" not in metrics  # the headline
    detail = json.loads((project / "metrics" / "ale_bench_detail.json").read_text())
    assert detail["by_objects"]["2"]["count"] == 4 and detail["settings"]["mask_weights"] == "binary"
    edits = pd.read_parquet(project / "results" / "color" / "edits.parquet")
    assert len(edits) == 4 and all((project / "results" / "color" / p).is_file() for p in edits["path"])
    assert sorted(p.name for p in (project / "plots" / "grids").iterdir()) == ["color.png", "object.png"]
    assert "edit_type" in (project / "plots" / "metrics_by_type.csv").read_text()
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "baseline"], project)

    again = sh(DVC + ["repro"], project)
    assert ran_stages(again) == set()

    # Injection on steps 0-3 of 5 (1.0) against 0-2 (0.8; a float32 0.8 > 4/5 once made it 1.0): only the color
    # edits, their score and the report re-run, and the color edits and metrics change.
    images_before = {p: (project / "results" / t / p).read_bytes() for t in ("color", "object")
                     for p in pd.read_parquet(project / "results" / t / "edits.parquet")["path"]}
    exp = sh(DVC + ["exp", "run", "-S", "schedule.color=0.8"], project)
    assert ran_stages(exp) == {"edit@color", "score@color", "report"}
    for t in ("color", "object"):
        paths = pd.read_parquet(project / "results" / t / "edits.parquet")["path"]
        same = [images_before[p] == (project / "results" / t / p).read_bytes() for p in paths]
        assert (not any(same)) if t == "color" else all(same), (t, same)
    diff = json.loads(sh(DVC + ["metrics", "diff", "--json"], project).strip().splitlines()[-1])
    changed = diff["metrics/ale_bench.json"]
    assert "by_type.color.bg_psnr" in changed and changed["by_type.color.bg_psnr"]["diff"] != 0
    assert not any(k.startswith("by_type.object.") for k in changed)

    # Table 1 over the commit and the experiment, and the same edits side by side, each read from its own run.
    report = sh([sys.executable, "-m", "ale_edit.cli", "report", "--dvc-experiments", "--bench", "data/bench",
                 "--grid-edits", "2", "-o", "reports"], project)
    table = pd.read_csv(project / "reports" / "table1.csv")
    assert len(table) == 2 and all(label.startswith("ALE-Edit [") for label in table["method"])
    assert "TE (eq. 6) ↓" in table and len(pd.read_csv(project / "reports" / "by_objects.csv")) == 2 * 2

    # compat: authors re-runs every edit and score: the authors' settings, soft masks, the joined TE reported; and
    # the masks, whose segmenter follows it.
    exp = sh(DVC + ["exp", "run", "-S", "edit.compat=authors"], project)
    assert ran_stages(exp) == {"masks", "edit@color", "edit@object", "score@color", "score@object", "report"}
    detail = json.loads((project / "metrics" / "ale_bench_detail.json").read_text())
    assert detail["settings"]["mask_weights"] == "soft" and detail["settings"]["te_variant"] == "joined"
    headline = json.loads((project / "metrics" / "ale_bench.json").read_text())
    assert "te_leakage_joined" in headline["overall"] and "te_leakage" not in headline["overall"]
    assert not any((project / ".ale-edit-work").rglob("*.png"))  # assembled: the stage removed its work files
    assert (project / "reports" / "method_grid.png").is_file() and "wrote table1" in report


def finished_edits(work) -> dict:
    """The finished edits in a work folder, by record file: a kill can leave an atomic write's hidden temporary
    ``.<name>.<random>.json`` behind, which is no finished edit."""
    return {p: p.stat().st_mtime_ns for p in work.glob("*.json")
            if not p.name.startswith(".") and p.with_suffix(".png").is_file()}


def test_edit_stage_killed_halfway_resumes_without_redoing(ale_bench, tmp_path):
    params = smoke_params(ale_bench, prompts__instances=3, edit__batch_size=1, edit__size=128)
    project = make_project(tmp_path, params)
    for stage in ("bench", "prompts", "masks", "embed"):
        sh([sys.executable, f"stages/{stage}.py"], project)
    command = [sys.executable, "stages/edit.py", "--edit-type", "object"]
    work = project / ".ale-edit-work" / "edit" / "object"
    process = subprocess.Popen(command, cwd=project, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (work.is_dir() and finished_edits(work)):
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = finished_edits(work)
    total = 2 * 2 * 3
    assert 1 <= len(finished) < total, "the kill should land halfway"
    assert not (project / "results" / "object").exists()

    out = sh(command, project)
    assert f"{total - len(finished)} edited now, {len(finished)} already done" in out
    results = pd.read_parquet(project / "results" / "object" / "edits.parquet")
    assert len(results) == total and results["edit_id"].is_unique
    assert all((project / "results" / "object" / p).is_file() for p in results["path"])


def test_two_clean_runs_hash_identically(ale_bench, tmp_path):
    """The same params in two fresh projects: every output DVC tracks has the same hash in both dvc.lock files
    (runtime facts such as seconds go to logs/, which DVC does not track)."""
    params = smoke_params(ale_bench, bench__images=["artificial_img05"], prompts__edit_types=["color"])
    hashes = []
    for run in ("a", "b"):
        project = make_project(tmp_path / run, params)
        sh(DVC + ["repro"], project)
        lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
        hashes.append({stage: [(o["path"], o.get("md5")) for o in entry.get("outs", [])]
                       for stage, entry in lock.items()})
        assert json.loads((project / "logs" / "edit-color.json").read_text())["total_seconds"] > 0
    assert hashes[0] == hashes[1]
    assert set(hashes[0]) == {"bench", "prompts", "masks", "embed", "edit@color", "score@color", "report"}
