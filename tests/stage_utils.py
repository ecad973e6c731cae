"""Loading the stage scripts (stages/*.py are scripts, not a package), writing params files for them, and running
the pipeline's commands in a fresh git + DVC project."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def project_params() -> dict:
    """The project's params.yaml as committed: the defaults the tests build on. The README's smoke run
    (``dvc exp run -S ...``) leaves its values in the working copy's params.yaml, and a test must not inherit them
    (a PIE-Bench test would ask for ALE-Bench's images). Outside a git checkout: the file as it is."""
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True)
    return yaml.safe_load(shown.stdout if shown.returncode == 0 else (ROOT / "params.yaml").read_text())


def load_stage(name: str):
    """The click command of ``stages/<name>.py``."""
    sys.path.insert(0, str(ROOT / "stages"))
    try:
        spec = importlib.util.spec_from_file_location(f"ale_stage_{name}", ROOT / "stages" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "stages"))
    return module.main


def invoke(stage: str, args):
    """Run ``stages/<stage>.py``'s click command in this process (click's ``Result``)."""
    from click.testing import CliRunner

    return CliRunner().invoke(load_stage(stage), args, catch_exceptions=False)


def bench_stage(tmp: Path, params: dict) -> Path:
    """The bench stage run with ``params`` (written to ``tmp/params.yaml``) into ``tmp/bench``; it must succeed."""
    params_file = write_params(tmp / "params.yaml", params)
    result = invoke("bench", ["--params", str(params_file), "--out", str(tmp / "bench")])
    assert result.exit_code == 0, result.output
    return tmp / "bench"


def smoke_params(bench_source, **overrides) -> dict:
    """The project's params.yaml switched to tiny models and a small subset of real ALE-Bench."""
    params = project_params()
    params["bench"].update(source=str(bench_source), images=["artificial_img05", "natural_img02"])
    params["prompts"].update(instances=1, edit_types=["color", "object"], object_counts=[1, 2])
    params["model"]["preset"] = "tiny"
    params["masks"]["source"] = "manual"
    params["edit"].update(steps=5, size=64, batch_size=2)
    params["score"]["batch_size"] = 4
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        params[section][key] = value
    return params


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# dvc runs the stages' `python`: the interpreter running the tests, whether or not its virtualenv is activated.
ENV = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", GIT_AUTHOR_NAME="t",
           GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
DVC = [sys.executable, "-m", "dvc"]


def sh(cmd, cwd, **kw) -> str:
    """Run ``cmd`` in ``cwd``; it must succeed. Returns its stdout and stderr."""
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def ran_stages(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def make_project(tmp: Path, params: dict, *, commit: bool = True) -> Path:
    """A fresh git + DVC repository holding the project's pipeline, code and data dictionaries."""
    project = tmp / "project"
    project.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, project / name)
    for name in ("stages", "ale_edit"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "data").mkdir()
    shutil.copy(ROOT / "data" / "attributes.yaml", project / "data" / "attributes.yaml")
    write_params(project / "params.yaml", params)
    sh(["git", "init", "-q"], project)
    sh(DVC + ["init", "-q"], project)
    if commit:
        sh(["git", "add", "-A"], project)
        sh(["git", "commit", "-qm", "pipeline"], project)
    return project
