"""Comparison tables of scored runs in the layout of the paper's Table 1 (and its per-type / per-count tables), and
of its Table 14 for PIE-Bench runs (Table 1's columns without TI: one edited object per image).

A run is a label and the metrics dict that scoring writes: the full aggregate (``overall``, ``by_type``,
``by_objects``, ...) or its headline (``overall`` and ``by_type`` only, what DVC shows), with the full one then
optionally as the run's ``detail`` for the per-count table. Values are shown in the paper's units: structure
distance and LPIPS x10^3, MSE x10^4, SSIM x10^2.

TE is the variant each run reports (its settings' ``te_variant``: eq. 6's mean over targets, or the joined
prompt), and the column's title names it. Runs that report different variants are not mixed in one column: the
table then has one TE column per variant, each run's value in its own variant's column (the other empty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import pandas as pd

from .aggregate import SETTINGS_KEY, benchmark_of, te_variant_of
from .metrics import TE_VARIANT_LABELS, TE_VARIANTS

# (metric key, column title, scale): the paper's Table 1 columns after TE, in its order and units.
TABLE1 = (
    ("ti_leakage", "TI ↓", 1.0),
    ("structure_distance", "Structure ×10³ ↓", 1e3),
    ("edited_clip", "Edited ↑", 1.0),
    ("bg_psnr", "PSNR ↑", 1.0),
    ("bg_lpips", "LPIPS ×10³ ↓", 1e3),
    ("bg_mse", "MSE ×10⁴ ↓", 1e4),
    ("bg_ssim", "SSIM ×10² ↑", 1e2),
)
TABLE14 = tuple(column for column in TABLE1 if column[0] != "ti_leakage")
# The tables each benchmark's runs are written as, by file name: (name, group).
TABLES = {"ale": (("table1", "overall"), ("by_type", "by_type"), ("by_objects", "by_objects")),
          "pie": (("table14", "overall"), ("table14_by_type", "by_type"))}


@dataclass
class Run:
    label: str
    metrics: Mapping
    params: Mapping = field(default_factory=dict)
    rev: str = ""  # a readable name: the branch or experiment
    rev_sha: str = ""  # the commit, where DVC keeps the run's outputs
    detail: Mapping | None = None  # the full aggregate, when ``metrics`` is the headline

    @property
    def te_variant(self) -> str:
        return te_variant_of(self.metrics)

    @property
    def benchmark(self) -> str:
        """``"ale"`` or ``"pie"``: from the metrics' settings, else the detail's, else the run's ``bench.kind``."""
        for metrics in (self.metrics, self.detail or {}):
            if "benchmark" in (metrics.get(SETTINGS_KEY) or {}):
                return benchmark_of(metrics)
        return str((self.params.get("bench") or {}).get("kind", "ale"))

    def group_stats(self, group: str) -> Mapping:
        """``overall``, ``by_type`` or ``by_objects`` of the run: from its metrics, else from its detail."""
        if group in self.metrics:
            return self.metrics[group]
        return (self.detail or {}).get(group, {})


def te_title(variant: str) -> str:
    """The TE column's title, naming the variant: "TE (eq. 6) ↓" or "TE (joined prompt) ↓"."""
    return f"TE ({TE_VARIANT_LABELS[variant]}) ↓"


def te_variants(runs: Sequence[Run]) -> list[str]:
    """The TE variants the runs report, in ``TE_VARIANTS`` order."""
    reported = {run.te_variant for run in runs}
    return [v for v in TE_VARIANTS if v in reported]


def te_note(runs: Sequence[Run]) -> str:
    """One line saying which TE the table shows, and for which runs when they differ."""
    variants = te_variants(runs)
    if len(variants) <= 1:
        variant = variants[0] if variants else "mean"
        return f"TE: {TE_VARIANT_LABELS[variant]} ({variant}), every run"
    parts = [f"{TE_VARIANT_LABELS[v]} for {', '.join(r.label for r in runs if r.te_variant == v)}" for v in variants]
    return f"TE differs between runs, shown in separate columns: {'; '.join(parts)}"


def runs_without(runs: Sequence[Run], group: str) -> list[str]:
    """Labels of the runs that have no ``group`` table (a headline metrics file without its detail)."""
    return [run.label for run in runs if not run.group_stats(group)]


def attach_details(runs: Sequence[Run], load: Callable[[Run], Mapping | None]) -> None:
    """Give each run whose metrics lack the per-count groups its full aggregate, ``load(run)`` (None: none)."""
    for run in runs:
        if "by_objects" not in run.metrics and run.detail is None:
            run.detail = load(run)


def run_label(params: Mapping) -> str:
    """A row name from a run's parameters: the method's ``report_label`` of its options (a method this checkout
    lacks: its name)."""
    from ..methods import DEFAULT_METHOD, method_class, method_names

    method = str(params.get("method", DEFAULT_METHOD))
    if method not in method_names():
        return method
    return method_class(method).report_label(params.get(method) or {})


def _value(group: Mapping | None, key: str, scale: float) -> float:
    value = (group or {}).get(key)
    if value is None:
        return math.nan
    value = float(value)  # "inf" (written for an identical background) parses too
    return value * scale


def runs_by_benchmark(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """The runs of each benchmark, ALE-Bench's first."""
    out: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.benchmark != "ale"):
        out.setdefault(run.benchmark, []).append(run)
    return out


def comparison_table(runs: Sequence[Run], group: str = "overall") -> pd.DataFrame:
    """One row per run (per type or object count, then run, for ``by_type`` / ``by_objects``), the Table 1
    columns (Table 14's for PIE-Bench runs), and the number of edits behind each row. Groups without edits, and
    runs without the group (a headline without its detail, for ``by_objects``), are left out. Runs of both
    benchmarks do not share a table (``runs_by_benchmark`` splits them)."""
    benchmarks = sorted({run.benchmark for run in runs})
    if len(benchmarks) > 1:
        raise ValueError(f"runs of {' and '.join(benchmarks)} do not share a table: "
                         f"{', '.join(f'{r.label} ({r.benchmark})' for r in runs)}")
    columns = TABLE14 if benchmarks == ["pie"] else TABLE1
    variants = te_variants(runs)
    rows = []
    if group == "overall":
        for run in runs:
            rows.append({"method": run.label, **_columns(run.group_stats("overall"), run.te_variant, variants,
                                                         columns)})
    else:
        names = list(dict.fromkeys(name for run in runs for name in run.group_stats(group)))
        for name in names:
            for run in runs:
                stats = run.group_stats(group).get(name)
                if stats and int(stats.get("count", 0) or 0) > 0:
                    rows.append({"group": name, "method": run.label,
                                 **_columns(stats, run.te_variant, variants, columns)})
    return pd.DataFrame(rows)


def _columns(stats: Mapping, variant: str, variants: Sequence[str], columns: Sequence = TABLE1) -> dict:
    # One TE column per variant in the table; a run fills only its own variant's.
    out = {te_title(v): _value(stats, TE_VARIANTS[v], 1.0) if v == variant else math.nan for v in variants}
    out.update({title: _value(stats, key, scale) for key, title, scale in columns})
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
