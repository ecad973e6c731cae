"""Aggregates of a per-edit score table: the full detail (every metric by type, by object count and by both, with
counts) and the headline (the paper's Table 1 columns, overall and by edit type) that DVC shows and diffs. On
PIE-Bench (the settings' ``benchmark``) the types are PIE-Bench's and the headline has Table 14's columns: Table 1's
without TI (one edited object per image).
"""

from __future__ import annotations

import json
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..edit_types import benchmark_types
from .dataset import OBJECT_COUNTS
from .names import METRIC_COLUMNS, TE_VARIANTS

# The paper's Table 1 columns in its order, TE standing for the reported variant's column.
TE = "te"
TABLE1_METRICS = (TE, "ti_leakage", "structure_distance", "edited_clip", "bg_psnr", "bg_lpips", "bg_mse", "bg_ssim")
TABLE14_METRICS = tuple(m for m in TABLE1_METRICS if m != "ti_leakage")  # PIE-Bench: one object, no TI
PIE_OBJECT_COUNTS = (1,)
SETTINGS_KEY = "settings"
INPUTS_KEY = "inputs"  # in the settings: what one table scored (folders, layout); tables of one run differ in it


def _group_stats(frame: pd.DataFrame) -> dict:
    stats: dict = {"count": int(len(frame)), "errors": int(frame["error"].notna().sum())}
    for name in METRIC_COLUMNS:
        values = frame[name].astype("float64")
        values = values[values.notna()]
        stats[name] = float(values.mean()) if len(values) else None
    stats["n"] = {name: int(frame[name].notna().sum()) for name in METRIC_COLUMNS}
    return stats


def aggregate(per_edit: pd.DataFrame, settings: Mapping | None = None) -> dict:
    """Means over all edits, by edit type, by number of objects and by both, NaN skipped, with counts.

    Keys are stable: every known edit type and the benchmark's object counts (1-3) are always present (count 0,
    metrics ``None`` when nothing was scored), plus any others the table holds; ``by_type_objects`` keys read
    ``"<type>/<n>"``. Each group holds ``count`` (edits), ``errors`` (edits with an error), one mean per metric
    and ``n`` (how many values each mean is over). The scoring settings (``settings``, else the table's
    ``attrs["settings"]``, when there are any) come first, under ``"settings"``. Use ``to_jsonable`` before
    writing JSON.
    """
    settings = settings if settings is not None else per_edit.attrs.get(SETTINGS_KEY)
    benchmark = benchmark_of({SETTINGS_KEY: settings or {}})
    known = [t.name for t in benchmark_types(benchmark)]
    types = known + sorted(set(per_edit["edit_type"]) - set(known))
    object_counts = PIE_OBJECT_COUNTS if benchmark == "pie" else OBJECT_COUNTS
    counts = sorted(set(object_counts) | {int(n) for n in per_edit["n_objects"]})
    out: dict = {SETTINGS_KEY: dict(settings)} if settings else {}
    out.update({
        "overall": _group_stats(per_edit),
        "by_type": {t: _group_stats(per_edit[per_edit["edit_type"] == t]) for t in types},
        "by_objects": {str(n): _group_stats(per_edit[per_edit["n_objects"] == n]) for n in counts},
        "by_type_objects": {
            f"{t}/{n}": _group_stats(per_edit[(per_edit["edit_type"] == t) & (per_edit["n_objects"] == n)])
            for t in types
            for n in counts
        },
    })
    return out


def aggregate_tables(tables: Sequence[pd.DataFrame]) -> dict:
    """``aggregate`` over several per-edit tables (one per edit type) scored with the same settings.

    Tables scored with different settings (say soft and binary mask weights) do not make one mean: an error
    naming the difference. Their ``inputs`` (what each scored) may differ; the aggregate lists them all.
    """
    if not tables:
        raise ValueError("no per-edit tables to aggregate")
    settings = [dict(t.attrs.get(SETTINGS_KEY) or {}) for t in tables]
    inputs = [s.pop(INPUTS_KEY, None) for s in settings]
    first = settings[0]
    for other in settings[1:]:
        if json.dumps(other, sort_keys=True, default=str) != json.dumps(first, sort_keys=True, default=str):
            difference = {k: (first.get(k), other.get(k)) for k in sorted(set(first) | set(other))
                          if first.get(k) != other.get(k)}
            raise ValueError(f"per-edit tables scored with different settings cannot be aggregated together: "
                             f"{difference}")
    if any(i is not None for i in inputs):
        first = {**first, INPUTS_KEY: inputs}
    per_edit = pd.concat(list(tables), ignore_index=True)
    return aggregate(per_edit, settings=first or None)


def te_variant_of(metrics: Mapping, default: str = "mean") -> str:
    """The TE variant a metrics dict reports: its settings', else the one whose column it holds alone."""
    variant = (metrics.get(SETTINGS_KEY) or {}).get("te_variant")
    if variant:
        return variant
    overall = metrics.get("overall") or {}
    held = [v for v, column in TE_VARIANTS.items() if column in overall]
    return held[0] if len(held) == 1 else default


def benchmark_of(metrics: Mapping) -> str:
    """The benchmark a metrics dict (an aggregate or a headline) scores: its settings' ``benchmark``, else
    ``"ale"`` (ALE-Bench's settings name none)."""
    return (metrics.get(SETTINGS_KEY) or {}).get("benchmark", "ale")


def headline_metrics(aggregate: Mapping, te_variant: str | None = None) -> dict:
    """The paper's Table 1 columns only (Table 14's on PIE-Bench): overall (with the edit and error counts) and by
    edit type (with the edit count), from ``aggregate``'s dict. TE is the reported variant under its own column
    name (``te_leakage`` for eq. 6, ``te_leakage_joined`` for the joined prompt), so runs that report different
    ones never share a key. A PIE-Bench headline says so in its ``settings`` (``benchmark``), which the report
    reads its layout from.

    ``te_variant`` defaults to the aggregate's settings (``"mean"`` without any).
    """
    variant = te_variant or te_variant_of(aggregate)
    if variant not in TE_VARIANTS:
        raise ValueError(f"unknown te_variant {variant!r}; choose one of {', '.join(TE_VARIANTS)}")
    benchmark = benchmark_of(aggregate)
    table = TABLE14_METRICS if benchmark == "pie" else TABLE1_METRICS
    columns = [TE_VARIANTS[variant] if m == TE else m for m in table]

    def pick(group: Mapping, counts: Sequence[str]) -> dict:
        return {**{c: group.get(c) for c in counts}, **{m: group.get(m) for m in columns}}

    return {
        **({SETTINGS_KEY: {"benchmark": benchmark}} if benchmark != "ale" else {}),
        "overall": pick(aggregate["overall"], ("count", "errors")),
        "by_type": {t: pick(group, ("count",)) for t, group in aggregate["by_type"].items()},
    }


def to_jsonable(obj):
    """Plain JSON values: NaN -> null, +-inf -> "inf"/"-inf" (JSON has no infinity), numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    return obj
