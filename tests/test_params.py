"""params.yaml's schema: every bad key or value is named before a stage does any work."""

import subprocess
import sys

import pytest

from stage_utils import ROOT, project_params, smoke_params, write_params

sys.path.insert(0, str(ROOT / "stages"))
import params as schema  # noqa: E402


def test_the_projects_params_pass():
    schema.check_params(project_params())


@pytest.mark.parametrize("section,key,value,message", [
    ("edit", "stepz", 3, "unknown setting edit.stepz (did you mean 'steps'?)"),
    ("edit", "batch_size", 0, "edit.batch_size must be >= 1; got 0"),
    ("edit", "seed", 10**23, "edit.seed must be <= 9223372036854775807"),
    ("edit", "compat", "theirs", "edit.compat must be one of none, authors; got 'theirs'"),
    ("masks", "source", "bogus", "masks.source must be one of manual, auto, manual-then-auto; got 'bogus'"),
    ("prompts", "edit_types", ["color", "texture"], "prompts.edit_types must be one of"),
    ("prompts", "object_counts", [1, 4], "prompts.object_counts must be one of 1, 2, 3; got 4"),
    ("model", "dtype", "fp8", "model.dtype must be one of auto, fp16"),
    ("schedule", "colour", 0.3, "unknown setting schedule.colour (did you mean 'color'?)"),
    ("schedule", "color", 1.5, "schedule.color must be <= 1.0; got 1.5"),
    ("score", "batch_size", "many", "score.batch_size must be an integer, got 'many'"),
    ("p2p", "cross_replace", 2, "p2p.cross_replace must be <= 1.0; got 2"),
    ("ale", "eoss", "zeros", "unknown setting ale.eoss (did you mean 'eos'?)"),
    ("ale", "bb_mask", "blocky", "ale.bb_mask must be one of nearest, multiscale; got 'blocky'"),
    ("bench", "limit", -1, "bench.limit must be >= 0; got -1"),
    ("edit", "backend", "rey", "edit.backend must be one of local, ray; got 'rey'"),
    ("edit", "ray", {"workerz": 2}, "unknown setting edit.ray.workerz (did you mean 'workers'?)"),
    ("edit", "ray", 2, "edit.ray must be a mapping of keys, got 2"),
    ("score", "ray", {"num_gpus": -1}, "score.ray.num_gpus must be >= 0; got -1"),
    ("score", "backend", "cluster", "score.backend must be one of local, ray; got 'cluster'"),
])
def test_bad_keys_and_values_are_named(section, key, value, message):
    params = project_params()
    params[section][key] = value
    with pytest.raises(schema.SettingError) as error:
        schema.check_params(params)
    assert message in str(error.value)


def test_unknown_section_and_method():
    params = project_params()
    with pytest.raises(schema.SettingError, match="unknown section 'scores' in params.yaml .did you mean 'score'"):
        schema.check_params({**params, "scores": {}})
    with pytest.raises(schema.SettingError, match="unknown method 'p2q' .did you mean 'p2p'"):
        schema.check_params({**params, "method": "p2q"})


@pytest.mark.parametrize("stage", ["bench", "prompts", "masks", "embed", "edit", "score", "report"])
def test_every_stage_refuses_a_bad_params_file_before_it_works(ale_bench, tmp_path, stage):
    params = smoke_params(ale_bench)
    params["edit"]["stepz"] = 3
    write_params(tmp_path / "params.yaml", params)
    extra = ["--edit-type", "color"] if stage in ("edit", "score") else []
    result = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *extra], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "params.yaml: unknown setting edit.stepz (did you mean 'steps'?)" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written
