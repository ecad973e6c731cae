"""How fast the pipeline's stages start, and the README's smoke run end to end, for one or two checkouts.

Each checkout's pipeline (dvc.yaml, params.yaml, stages/, ale_edit/) is copied into a fresh git + DVC project
with the README's smoke settings (tiny models, 2 images, color and object, 1 instance, manual masks, 64 px, 5 steps).

- ``stages``: every stage run in order as its own process (``python stages/<stage>.py``): seconds from process
  start to its first line on stdout (the plan it prints before the heavy imports), and to its end.
- ``smoke``: ``dvc exp run`` with the README's ``-S`` settings, timed end to end (after ``stages`` has run, so the
  same outputs are cached: the smoke run is timed in a second fresh project).

    python benchmarks/stage_startup.py                            # this checkout
    python benchmarks/stage_startup.py --before /tmp/old          # side by side with another checkout
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "ale_bench"
STAGES = [("bench", []), ("prompts", []), ("masks", []), ("embed", []), ("edit", ["--edit-type", "color"]),
          ("edit", ["--edit-type", "object"]), ("score", ["--edit-type", "color"]),
          ("score", ["--edit-type", "object"]), ("report", [])]
SMOKE = {"model.preset": "tiny", "bench.source": str(BENCH), "bench.images": ["artificial_img05", "natural_img02"],
         "prompts.instances": 1, "prompts.edit_types": ["color", "object"], "masks.source": "manual",
         "edit.size": 64, "edit.steps": 5}
ENV = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", GIT_AUTHOR_NAME="b",
           GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")


def project(code: Path, where: Path, smoke_params: bool) -> Path:
    """A fresh git + DVC project holding ``code``'s pipeline (with the smoke settings written into params.yaml
    when ``smoke_params``; else they are given to ``dvc exp run -S``)."""
    where.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(code / name, where / name)
    for name in ("stages", "ale_edit"):
        shutil.copytree(code / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
    (where / "data").mkdir()
    shutil.copy(code / "data" / "attributes.yaml", where / "data" / "attributes.yaml")
    if smoke_params:
        params = yaml.safe_load((where / "params.yaml").read_text())
        for dotted, value in SMOKE.items():
            section, key = dotted.split(".")
            params[section][key] = value
        (where / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "pipeline"]):
        subprocess.run(cmd, cwd=where, env=ENV, check=True, capture_output=True)
    return where


def time_stage(cwd: Path, stage: str, extra: list[str]) -> tuple[float, float]:
    """(seconds to the first stdout line, seconds to the end) of one stage process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, f"stages/{stage}.py", *extra], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = None
    for _ in proc.stdout:
        if first is None:
            first = time.perf_counter() - start
    if proc.wait() != 0:
        raise SystemExit(f"stage {stage} {' '.join(extra)} failed in {cwd}")
    total = time.perf_counter() - start
    return (first if first is not None else total), total


def time_smoke(cwd: Path) -> float:
    args = []
    for dotted, value in SMOKE.items():
        text = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
        args += ["-S", f"{dotted}={text}"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "exp", "run", *args], cwd=cwd, env=ENV, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, default=None, help="another checkout to measure side by side")
    args = parser.parse_args()
    checkouts = {"after": ROOT} if args.before is None else {"before": args.before, "after": ROOT}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="stage_startup_") as tmp:
        for label, code in checkouts.items():
            staged = project(code, Path(tmp) / label / "stages", smoke_params=True)
            for stage, extra in STAGES:
                name = f"{stage} {extra[-1]}" if extra else stage
                first, total = time_stage(staged, stage, extra)
                rows.setdefault(name, {})[label] = (first, total)
                print(f"  {label}: {name}: first line {first:.1f} s, done {total:.1f} s", flush=True)
            rows.setdefault("smoke run (dvc exp run)", {})[label] = (None, time_smoke(
                project(code, Path(tmp) / label / "smoke", smoke_params=False)))
            print(f"  {label}: smoke run {rows['smoke run (dvc exp run)'][label][1]:.1f} s", flush=True)
    labels = list(checkouts)
    print(f"\n{'stage':<28}" + "".join(f"{lb + ' first':>14}{lb + ' total':>14}" for lb in labels)
          + ("   total after/before" if len(labels) == 2 else ""))
    for name, by in rows.items():
        cells = "".join(f"{'-' if by[lb][0] is None else f'{by[lb][0]:.1f}':>14}{by[lb][1]:>14.1f}" for lb in labels)
        ratio = f"{by['after'][1] / by['before'][1]:>22.2f}" if len(labels) == 2 else ""
        print(f"{name:<28}{cells}{ratio}")


if __name__ == "__main__":
    main()
