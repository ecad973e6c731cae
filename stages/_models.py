"""What the stages that load models share: each model's name from params.yaml, and the preflight that finds every
model a stage needs before it works."""

from __future__ import annotations

import _common  # noqa: F401  (puts the repository root on sys.path)

from ale_edit.models import TINY, grounding_model_names
from ale_edit.preflight import check_models, metric_needs


def model_name(params: dict, which: str) -> str:
    """A model's id, or "tiny" when the preset says every model is tiny; ``model.segmenter`` null follows
    ``edit.compat``."""
    if params["model"]["preset"] == TINY:
        return TINY
    if which in ("detector", "segmenter"):
        compat = (params.get("edit") or {}).get("compat") or "none"
        return grounding_model_names(compat, params["model"].get("detector"), params["model"].get("segmenter"))[which]
    section = "score" if which in ("clip", "dino", "lpips") else "model"
    return str(params[section][which])


def preflight(needs) -> None:
    """Every model the stage needs is found before it works (``ale_edit.preflight``). A miss, or a model that
    cannot be loaded, is a ``ModelUnavailableError``, which the stage's command (``_common.StageCommand``) ends in
    one line like every input error."""
    check_models(needs)


def score_model_needs(params: dict) -> list:
    """The score stage's metric models: ``score.clip``, ``score.dino``, ``score.lpips`` and its weights file."""
    return metric_needs(model_name(params, "clip"), model_name(params, "dino"), model_name(params, "lpips"),
                        params["score"].get("lpips_weights") or None)
