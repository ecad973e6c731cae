"""dvc.yaml cannot go stale: every stage depends on every project file it runs, and an edit stage on the common
settings, the active method's section and the active method's package only (checked with ``dvc status`` on a
recorded, not run, pipeline)."""

import subprocess
from pathlib import Path

import pytest
import yaml

from import_closure import closure
from stage_utils import DVC, ENV, ROOT, make_project, sh, smoke_params, write_params

from ale_edit.methods import method_names


def stage_definitions() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def covered(file: Path, deps: list[str]) -> bool:
    rel = file.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def stage_cases() -> list[tuple[str, str | None]]:
    """(stage, active method): a stage whose deps name ``${method}`` once per method, the others once."""
    return [(name, method) for name, stage in sorted(stage_definitions().items())
            for method in (method_names() if any("${method}" in str(d) for d in stage["deps"]) else [None])]


@pytest.mark.parametrize("name, method", stage_cases())
def test_every_stage_depends_on_every_project_file_it_imports(name, method):
    stage = stage_definitions()[name]
    script = ROOT / stage["cmd"].split()[1]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    deps = [d.replace("${method}", method) if method else d for d in deps]
    missing = sorted(f.relative_to(ROOT).as_posix() for f in closure(script, method) if not covered(f, deps))
    assert not missing, f"dvc.yaml: stage {name!r} runs {missing} but does not depend on them"


def test_an_edit_stage_runs_the_active_methods_package_and_no_other():
    script = ROOT / stage_definitions()["edit"]["cmd"].split()[1]
    for method in method_names():
        packages = {f.parent.name for f in closure(script, method) if f.parent.parent == ROOT / "ale_edit" / "methods"}
        assert packages == {method}


def changed_stages(project: Path) -> set[str]:
    """The stages ``dvc status`` says would re-run (their own dependencies changed)."""
    out = subprocess.run(DVC + ["status"], cwd=project, env=ENV, capture_output=True, text=True, check=True).stdout
    return {line[:-1] for line in out.splitlines() if line and not line[0].isspace() and line.endswith(":")}


def record_project(tmp_path: Path, bench: Path, method: str) -> Path:
    """The pipeline with ``method``, every stage recorded in dvc.lock by ``dvc commit`` over placeholder outputs
    (nothing runs: the test is about what DVC would re-run)."""
    params = smoke_params(bench)
    params["method"] = method
    project = make_project(tmp_path, params, commit=False)
    for folder in ("data/bench", "data/masks", *(f"{root}/{t}" for root in ("results", "scores")
                                                 for t in params["prompts"]["edit_types"]), "plots/grids"):
        (project / folder).mkdir(parents=True)
        (project / folder / "placeholder").write_text(folder)
    for file in ("data/prompts/edits.parquet", "data/embeddings/text.parquet", "metrics/ale_bench.json",
                 "metrics/ale_bench_detail.json", "plots/metrics_by_type.csv"):
        (project / file).parent.mkdir(parents=True, exist_ok=True)
        (project / file).write_text("{}" if file.endswith(".json") else "x")
    sh(DVC + ["commit", "-f", "-q"], project)
    assert changed_stages(project) == set()
    return project


@pytest.fixture()
def recorded_project(tmp_path, ale_bench) -> Path:
    return record_project(tmp_path, ale_bench, "p2p")


def append_line(file: Path, line: str) -> None:
    file.write_text(file.read_text() + f"\n{line}\n")


def add_method_package(project: Path, name: str) -> None:
    """A new method's package, as docs/adding-a-method.md has a user write it."""
    package = project / "ale_edit" / "methods" / name
    package.mkdir()
    (package / "__init__.py").write_text(f'"""A new method."""\nNAME = {name!r}\n')


def set_param(project: Path, dotted: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    section, key = dotted.split(".")
    params[section][key] = value
    write_params(project / "params.yaml", params)


def test_only_the_active_methods_options_and_code_rerun_its_edits(recorded_project):
    project = recorded_project
    edits = {"edit@color", "edit@object"}
    set_param(project, "ale.eos", "zeros")  # another method's option: nothing to redo
    set_param(project, "masactrl.start_step", 2)
    assert changed_stages(project) == set()
    set_param(project, "p2p.cross_replace", 0.6)  # the active method's option: its edits, nothing else
    assert changed_stages(project) == edits
    set_param(project, "p2p.cross_replace", 0.8)
    assert changed_stages(project) == set()
    append_line(project / "ale_edit" / "methods" / "ale" / "rgb_cam.py", "# a change to ALE's code")
    add_method_package(project, "sdedit")  # another method's code, and a new method: nothing to redo
    assert changed_stages(project) == set()
    append_line(project / "ale_edit" / "methods" / "p2p" / "__init__.py", "# a change to P2P's code")
    assert changed_stages(project) == edits
    scoring_code = project / "ale_edit" / "bench" / "scoring.py"
    scoring_code.write_text(scoring_code.read_text() + "\n# a change to scoring\n")
    assert changed_stages(project) == edits | {"score@color", "score@object"}  # the report does not run it
    aggregate_code = project / "ale_edit" / "bench" / "aggregate.py"
    aggregate_code.write_text(aggregate_code.read_text() + "\n# a change to the aggregates\n")
    assert changed_stages(project) == edits | {"score@color", "score@object", "report"}


def test_another_methods_code_leaves_ales_edits_up_to_date_and_its_own_code_reruns_them(tmp_path, ale_bench):
    project = record_project(tmp_path, ale_bench, "ale")
    edits = {"edit@color", "edit@object"}
    for other in ("p2p/__init__.py", "infedit/__init__.py", "fpe/__init__.py"):
        append_line(project / "ale_edit" / "methods" / other, f"# a change to {other}")
    add_method_package(project, "sdedit")
    assert changed_stages(project) == set()
    append_line(project / "ale_edit" / "methods" / "ale" / "ore.py", "# a change to ORE")
    assert changed_stages(project) == edits
    (project / "ale_edit" / "methods" / "ale" / "ore.py").write_text(
        (ROOT / "ale_edit" / "methods" / "ale" / "ore.py").read_text())
    assert changed_stages(project) == set()
    append_line(project / "ale_edit" / "methods" / "shared.py", "# a change to the shared machinery")
    assert changed_stages(project) == edits


def test_a_misspelt_key_added_by_dvc_exp_run_is_named_and_redoes_nothing(recorded_project):
    # DVC's own hint for a key not in params.yaml is `-S +key=value`: the stages it re-runs refuse the key by name.
    project = recorded_project
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "recorded"], project)
    before = {p: p.read_bytes() for p in (project / "results").rglob("*") if p.is_file()}
    result = subprocess.run(DVC + ["exp", "run", "-S", "+edit.stepz=3"], cwd=project, env=ENV, capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert "unknown setting edit.stepz (did you mean 'steps'?)" in result.stdout + result.stderr
    assert not (project / ".ale-edit-work").exists()  # the stage stopped before editing anything
    # DVC removed the failed stage's outputs before running it; its cache has them all back.
    sh(["git", "checkout", "--", "params.yaml"], project)
    sh(DVC + ["checkout", "-q"], project)
    assert {p: p.read_bytes() for p in (project / "results").rglob("*") if p.is_file()} == before
