"""``ale-edit report``: the paper's Table 1 (and per-type, per-object-count tables) over scored runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import click

from ..atomic import atomic_path
from ..bench.report import Run, comparison_table, runs_from_dvc_experiments, to_markdown


@click.command("report")
@click.option("--run", "run_args", multiple=True, metavar="LABEL=METRICS_JSON",
              help="A scored run: a label and the metrics.json that scoring wrote. Repeatable.")
@click.option("--dvc-experiments", is_flag=True,
              help="Take the runs from `dvc exp show --json` in the current repository (the workspace, commits "
                   "and experiments), labelled by method and ablation.")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Folder for the tables.")
def report(run_args, dvc_experiments, out):
    """Compare runs: writes table1, by_type and by_objects as Markdown and CSV."""
    runs = []
    for arg in run_args:
        label, sep, path = arg.partition("=")
        if not sep or not label or not path:
            raise click.BadParameter(f"{arg!r} is not LABEL=METRICS_JSON", param_hint="--run")
        try:
            runs.append(Run(label, json.loads(Path(path).read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            raise click.ClickException(f"cannot read the metrics of run {label!r} from {path}: {exc}") from exc
    if dvc_experiments:
        shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True,
                               env=dict(os.environ, DVC_NO_ANALYTICS="1"))
        if shown.returncode != 0:
            raise click.ClickException(f"`dvc exp show --json` failed: {shown.stderr.strip()}")
        runs += runs_from_dvc_experiments(json.loads(shown.stdout))
    if not runs:
        raise click.UsageError("no runs: give --run LABEL=METRICS_JSON or --dvc-experiments")
    out.mkdir(parents=True, exist_ok=True)
    for name, group in (("table1", "overall"), ("by_type", "by_type"), ("by_objects", "by_objects")):
        table = comparison_table(runs, group)
        with atomic_path(out / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)
        with atomic_path(out / f"{name}.md") as tmp:
            tmp.write_text(to_markdown(table) + "\n", encoding="utf-8")
    click.echo(to_markdown(comparison_table(runs, "overall")))
    click.echo(f"wrote table1, by_type and by_objects (.md, .csv) for {len(runs)} runs to {out}")
