"""Comparison tables of scored runs in the layout of the paper's Table 1 (and its per-type / per-count tables).

A run is a label and the metrics dict that scoring writes (``overall``, ``by_type``, ``by_objects``, ...). Values
are shown in the paper's units: structure distance and LPIPS x10^3, MSE x10^4, SSIM x10^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pandas as pd

# (metric key, column title, scale): the paper's Table 1 columns, in its order and units.
TABLE1 = (
    ("te_leakage", "TE ↓", 1.0),
    ("ti_leakage", "TI ↓", 1.0),
    ("structure_distance", "Structure ×10³ ↓", 1e3),
    ("edited_clip", "Edited ↑", 1.0),
    ("bg_psnr", "PSNR ↑", 1.0),
    ("bg_lpips", "LPIPS ×10³ ↓", 1e3),
    ("bg_mse", "MSE ×10⁴ ↓", 1e4),
    ("bg_ssim", "SSIM ×10² ↑", 1e2),
)


@dataclass
class Run:
    label: str
    metrics: Mapping
    params: Mapping = field(default_factory=dict)
    rev: str = ""  # a readable name: the branch or experiment
    rev_sha: str = ""  # the commit, where DVC keeps the run's outputs


def run_label(params: Mapping) -> str:
    """A row name from a run's parameters: the method, and for ALE its switched-off parts and EOS treatment."""
    from ..methods import METHODS, discover

    method = str(params.get("method", "ale"))
    if method != "ale":
        discover()
        return METHODS[method].label if method in METHODS else method
    ale = params.get("ale", {})
    parts = [name for key, name in (("ore", "ORE"), ("rgb_cam", "RGB-CAM"), ("bb", "BB")) if ale.get(key, True)]
    label = "ALE-Edit" if len(parts) == 3 else f"ALE ({'+'.join(parts) or 'none'})"
    eos = ale.get("eos", "ore")
    return label if eos == "ore" else f"{label}, EOS {eos}"


def _value(group: Mapping | None, key: str, scale: float) -> float:
    value = (group or {}).get(key)
    if value is None:
        return math.nan
    value = float(value)  # "inf" (written for an identical background) parses too
    return value * scale


def comparison_table(runs: Sequence[Run], group: str = "overall") -> pd.DataFrame:
    """One row per run (per type or object count, then run, for ``by_type`` / ``by_objects``), the Table 1
    columns, and the number of edits behind each row. Groups without edits are left out."""
    rows = []
    if group == "overall":
        for run in runs:
            stats = run.metrics.get("overall", {})
            rows.append({"method": run.label, **_columns(stats)})
    else:
        names = list(dict.fromkeys(name for run in runs for name in run.metrics.get(group, {})))
        for name in names:
            for run in runs:
                stats = run.metrics.get(group, {}).get(name)
                if stats and int(stats.get("count", 0) or 0) > 0:
                    rows.append({"group": name, "method": run.label, **_columns(stats)})
    return pd.DataFrame(rows)


def _columns(stats: Mapping) -> dict:
    out = {title: _value(stats, key, scale) for key, title, scale in TABLE1}
    out["edits"] = int(stats.get("count", 0) or 0)
    return out


def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    return table.to_markdown(index=False, floatfmt=f".{digits}f")


def runs_from_dvc_experiments(exp_show: Sequence[Mapping], metrics_file: str = "metrics/ale_bench.json",
                              params_file: str = "params.yaml") -> list[Run]:
    """The runs in ``dvc exp show --json``'s output that have the metrics file: each commit and each experiment
    (the workspace only when there is nothing else). Runs whose labels collide get their name appended."""
    runs = []

    def add(entry: Mapping, name: str) -> None:
        data = entry.get("data") or {}
        metrics = ((data.get("metrics") or {}).get(metrics_file) or {}).get("data")
        params = ((data.get("params") or {}).get(params_file) or {}).get("data") or {}
        if metrics:
            sha = str(entry.get("rev", ""))
            runs.append(Run(run_label(params), metrics, params, name, sha if sha != "workspace" else ""))

    workspace = None
    for top in exp_show:
        if top.get("rev") == "workspace":
            workspace = top
            continue
        add(top, top.get("name") or str(top.get("rev", ""))[:7])
        for experiment in top.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                add(rev, experiment.get("name") or rev.get("name") or str(rev.get("rev", ""))[:7])
    if not runs and workspace is not None:
        add(workspace, "workspace")
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} [{run.rev}]"
    return runs
