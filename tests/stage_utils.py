"""Loading the stage scripts (stages/*.py are scripts, not a package) and writing params files for them."""

import importlib.util
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


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


def smoke_params(bench_source, **overrides) -> dict:
    """The project's params.yaml switched to tiny models and a small subset of real ALE-Bench."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
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
