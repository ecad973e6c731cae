"""ALE-Bench scoring, the public entry: score a results folder (``score_results``, what ``ale-edit score`` runs) or
a list of edits (``score_edits``, what the DVC stage runs), and write the outputs (``write_outputs``).

The parts, each in its own module (all re-exported here):

- ``metrics``: the metric definitions (TE, TI, Edited, structure distance, background fidelity, binary and soft
  mask weights), as pure functions;
- ``records``: ``EditRecord``, building records from a results folder or the edit stage's table, loading pixels;
- ``scorer``: ``Scorer``, the models over batches of edits in bounded memory, and the per-edit table;
- ``aggregate``: the full aggregate (``aggregate``) and the Table 1 headline (``headline_metrics``);
- ``settings``: the score settings (mask weights, reported TE, compat profile) and their resolution.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..atomic import atomic_path, write_json
from ..errors import EditInputError
from .aggregate import (
    INPUTS_KEY, SETTINGS_KEY, TABLE1_METRICS, aggregate, aggregate_tables, headline_metrics, te_variant_of, to_jsonable,
)
from .metric_models import MetricModels, load_metric_models
from .metrics import (
    BACKGROUND, CLIP_METRICS, DINO_INPUTS, DINO_MAX_SIZE, DINO_SIZE, IMAGENET_MEAN, IMAGENET_STD, MASK_WEIGHTS,
    METRIC_COLUMNS, PIXEL_METRICS, TE_VARIANT_LABELS, TE_VARIANTS, ClipScoreFn, Region, background_metrics,
    clip_region_metrics, clip_score_matrix, dino_preprocess, dino_self_similarity, joined_prompt,
    keys_self_similarity, lpips_with_map, ssim_with_map, weighted_pixels,
)
from .records import (
    LAYOUTS, EditRecord, LRUCache, PreparedEdit, check_record, load_mask_levels, load_mask_weights, mask_weight,
    prepare_edit, records_from_edit_table, records_from_results,
)
from .scorer import COLUMNS, DEFAULT_PIXEL_BUDGET, INFO_COLUMNS, Scorer, empty_row, per_edit_frame
from .settings import ScoreSettings, score_settings, score_settings_from_params

__all__ = [  # the public names: this module's, and those of the modules above
    # aggregate
    "INPUTS_KEY", "SETTINGS_KEY", "TABLE1_METRICS", "aggregate", "aggregate_tables", "headline_metrics", "te_variant_of",
    "to_jsonable",
    # metrics
    "BACKGROUND", "CLIP_METRICS", "DINO_INPUTS", "DINO_MAX_SIZE", "DINO_SIZE", "IMAGENET_MEAN", "IMAGENET_STD",
    "MASK_WEIGHTS", "METRIC_COLUMNS", "PIXEL_METRICS", "TE_VARIANT_LABELS", "TE_VARIANTS", "ClipScoreFn", "Region",
    "background_metrics", "clip_region_metrics", "clip_score_matrix", "dino_preprocess", "dino_self_similarity",
    "joined_prompt", "keys_self_similarity", "lpips_with_map", "ssim_with_map", "weighted_pixels",
    # records
    "LAYOUTS", "EditRecord", "LRUCache", "PreparedEdit", "check_record", "load_mask_levels", "load_mask_weights",
    "mask_weight", "prepare_edit", "records_from_edit_table", "records_from_results",
    # scorer
    "COLUMNS", "DEFAULT_PIXEL_BUDGET", "INFO_COLUMNS", "Scorer", "empty_row", "per_edit_frame",
    # settings
    "ScoreSettings", "score_settings", "score_settings_from_params",
    # here
    "MetricModels", "ScoreRun", "score_edits", "score_results", "score_run", "write_outputs",
]


@dataclass
class ScoreRun:
    """A scored run: the per-edit table and the aggregate metrics (``aggregate``'s dict with its settings,
    JSON-ready)."""

    per_edit: pd.DataFrame
    metrics: dict


def score_edits(
    records: Sequence[EditRecord],
    models: MetricModels,
    settings: ScoreSettings = ScoreSettings(),
    *,
    batch_size: int = 16,
    pixel_budget: int | None = DEFAULT_PIXEL_BUDGET,
    progress: bool = True,
    **inputs: object,
) -> ScoreRun:
    """Score ``records`` with ``settings``. The per-edit table's ``attrs["settings"]`` and the metrics'
    ``"settings"`` hold the settings, the models and, under ``"inputs"``, ``inputs`` (what was scored: folders,
    layout), which may differ between tables that ``aggregate_tables`` combines."""
    scorer = Scorer(models, batch_size=batch_size, pixel_budget=pixel_budget, progress=progress,
                    **settings.scorer_options())
    return score_run(scorer.score_records(records), settings, models.names, models.dtype, **inputs)


def score_run(per_edit: pd.DataFrame, settings: ScoreSettings, model_names: dict, dtype: torch.dtype,
              **inputs: object) -> ScoreRun:
    """The run of a per-edit table, however it was scored (here or by Ray actors): the table with its settings in
    ``attrs`` (see ``score_edits``) and the aggregate metrics."""
    per_edit.attrs[SETTINGS_KEY] = settings.record(
        models=dict(model_names), dtype=str(dtype).replace("torch.", ""), **{INPUTS_KEY: inputs})
    return ScoreRun(per_edit, to_jsonable(aggregate(per_edit)))


def score_results(
    results_dir: str | os.PathLike,
    bench_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    layout: str = "authors",
    models: MetricModels | str = "real",
    clip_model: str | None = None,
    dino_model: str | None = None,
    lpips_net: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "fp32",
    batch_size: int = 16,
    pixel_budget: int | None = DEFAULT_PIXEL_BUDGET,
    dino_input: str = "published",
    compat: str = "none",
    mask_weights: str | None = None,
    te_variant: str | None = None,
    resize_edited: bool | None = None,
    require_all: bool = False,
    lpips_weights: str | os.PathLike | None = None,
    progress: bool = True,
) -> ScoreRun:
    """Score a results folder against ALE-Bench; with ``out_dir``, write ``per_edit.parquet`` and ``metrics.json``.

    ``models`` is loaded ``MetricModels`` or a preset name (``"real"``/``"tiny"``), ``clip_model``/``dino_model``/
    ``lpips_net`` overriding one model each. ``mask_weights`` (``binary``/``soft``) and ``te_variant``
    (``mean``/``joined``) default to the ``compat`` profile's (``none``: binary, mean; ``authors``: soft,
    joined). ``resize_edited`` resizes edited images of another size than their source instead of recording an
    error (``None``: the profile's; ``authors`` resizes). ``lpips_weights``: LPIPS' SqueezeNet weights file. This
    is what ``ale-edit score`` runs.
    """
    settings = score_settings(compat, mask_weights=mask_weights, te_variant=te_variant, dino_input=dino_input,
                              resize_edited=resize_edited)
    records = records_from_results(results_dir, bench_dir, layout=layout, require_all=require_all)
    if not records:
        raise EditInputError(
            f"no edits to score: no result folder <n objects>/<edit type>/<image>/ in {results_dir} matches a "
            f"prompt file of the benchmark at {bench_dir}"
        )
    if isinstance(models, str):
        models = load_metric_models(models, clip=clip_model, dino=dino_model, lpips=lpips_net, device=device,
                                    dtype=dtype, lpips_weights=lpips_weights)
    run = score_edits(records, models, settings, batch_size=batch_size, pixel_budget=pixel_budget,
                      progress=progress, layout=layout, results_dir=str(results_dir), bench_dir=str(bench_dir))
    if out_dir is not None:
        write_outputs(run.per_edit, run.metrics, out_dir)
    return run


def write_outputs(per_edit: pd.DataFrame, metrics: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out_dir/per_edit.parquet`` (pyarrow) and ``out_dir/metrics.json``, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet, metrics_json = out_dir / "per_edit.parquet", out_dir / "metrics.json"
    with atomic_path(parquet) as tmp:
        per_edit.to_parquet(tmp, engine="pyarrow", index=False)
    write_json(metrics_json, to_jsonable(metrics))
    return parquet, metrics_json
