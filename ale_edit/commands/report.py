"""``ale-edit report``: the paper's Table 1 (and per-type, per-object-count tables) over scored runs; its Table 14
(and per-type table) over PIE-Bench runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import click
from PIL import Image

from ..atomic import atomic_path
from ..bench.report import (
    TABLES, Run, attach_details, comparison_table, runs_by_benchmark, runs_from_dvc_experiments, runs_without, te_note,
    to_markdown,
)

DETAIL_FILE = "metrics/ale_bench_detail.json"


def _assignment(arg: str, option: str) -> tuple[str, str]:
    label, sep, value = arg.partition("=")
    if not sep or not label or not value:
        raise click.BadParameter(f"{arg!r} is not LABEL=VALUE", param_hint=option)
    return label, value


def _folder_images(root: Path) -> dict[str, callable]:
    """{edit id: loader} for an authors'-layout folder (or a folder of such folders, one per edit type)."""
    found = {}
    for path in sorted(root.glob("**/edit_*.png")):
        n, edit_type, image = path.parts[-4], path.parts[-3], path.parts[-2]
        index = path.stem.split("_", 1)[1]
        found[f"{n}/{edit_type}/{image}/{index}"] = (lambda p=path: Image.open(p))
    return found


def _dvc_images(rev: str) -> dict[str, callable]:
    """{edit id: loader} of one DVC experiment's results, read from the DVC cache at its commit."""
    import io

    import dvc.api
    import pandas as pd

    found = {}
    fs = dvc.api.DVCFileSystem(rev=rev)
    for table_path in fs.glob("results/*/edits.parquet"):
        with fs.open(table_path, mode="rb") as f:
            table = pd.read_parquet(io.BytesIO(f.read()))
        root = table_path.rsplit("/", 1)[0]
        for edit_id, path in zip(table["edit_id"], table["path"]):
            if not isinstance(path, str):  # an error row (PIE-Bench, no pair) has no image
                continue
            found[edit_id] = (lambda p=f"{root}/{path}": Image.open(io.BytesIO(fs.open(p, mode="rb").read())))
    return found


def _dvc_detail(detail_file: str):
    """A loader of a DVC run's full aggregate: ``detail_file`` at the run's commit (the workspace's own file for
    the workspace run); None when it is not there."""
    import dvc.api
    from dvc.exceptions import DvcException

    def load(run: Run):
        try:
            if not run.rev_sha:
                return json.loads(Path(detail_file).read_text())
            with dvc.api.DVCFileSystem(rev=run.rev_sha).open(detail_file, mode="r") as f:
                return json.loads(f.read())
        except (OSError, ValueError, DvcException):  # not there (FileNotFoundError), not JSON, no such commit
            return None

    return load


def _bench_kind(bench: Path) -> str:
    """The benchmark of a --bench folder: its manifest's (a materialised benchmark), else ALE-Bench's layout."""
    from ..bench.materialize import manifest_kind

    manifest = bench / "manifest.json"
    return manifest_kind(json.loads(manifest.read_text())) if manifest.is_file() else "ale"


def _method_grid(images: dict[str, dict], bench: Path, n: int):
    from ..bench.dataset import image_path
    from ..bench.figures import method_grid
    from ..io import load_image

    common = sorted(set.intersection(*(set(found) for found in images.values())))
    if not common:
        raise click.ClickException("the runs share no edited image: no method grid")
    rows = []
    for edit_id in common[:n]:
        image = edit_id.split("/")[2]
        rows.append({"source": load_image(image_path(bench, image)), "caption": edit_id,
                     "edited": {label: found[edit_id]() for label, found in images.items()}})
    return method_grid(rows, list(images))


@click.command("report")
@click.option("--run", "run_args", multiple=True, metavar="LABEL=METRICS_JSON",
              help="A scored run: a label and the metrics.json that scoring wrote. Repeatable.")
@click.option("--dvc-experiments", is_flag=True,
              help="Take the runs from `dvc exp show --json` in the current repository (the workspace, commits "
                   "and experiments), labelled by method and ablation.")
@click.option("--results", "results_args", multiple=True, metavar="LABEL=DIR",
              help="Edited images of a --run label, in the authors' layout <n>/<type>/<image>/edit_<i>.png, for the "
                   "method grid. (With --dvc-experiments each experiment's own results are read from DVC.)")
@click.option("--dvc-detail", "detail_file", default=DETAIL_FILE, show_default=True,
              help="With --dvc-experiments: the file beside the headline metrics that holds each run's full "
                   "aggregate, read at the run's commit for the per-object-count table.")
@click.option("--bench", type=click.Path(path_type=Path), default=None,
              help="The benchmark folder with the source images (images/); with it, a method grid is drawn.")
@click.option("--grid-edits", default=6, show_default=True, type=click.IntRange(1),
              help="Edits (rows) in the method grid: the first edit ids that every method has.")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Folder for the tables.")
def report(run_args, dvc_experiments, detail_file, results_args, bench, grid_edits, out):
    """Compare runs: writes table1, by_type and by_objects as Markdown and CSV (PIE-Bench runs, by their scores'
    settings: table14 and table14_by_type), and with --bench a grid of the same edits by every method of that
    benchmark (method_grid.png).

    TE is each run's reported variant (eq. 6 or the joined prompt), named in the column's title; runs reporting
    different variants get separate TE columns. Runs whose metrics are a headline without the per-count groups
    (and no detail file) are left out of by_objects, with a note."""
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
        dvc_runs = runs_from_dvc_experiments(json.loads(shown.stdout))
        attach_details(dvc_runs, _dvc_detail(detail_file))
        runs += dvc_runs
    if not runs:
        raise click.UsageError("no runs: give --run LABEL=METRICS_JSON or --dvc-experiments")
    out.mkdir(parents=True, exist_ok=True)
    by_benchmark = runs_by_benchmark(runs)
    written = []
    for benchmark, benchmark_runs in by_benchmark.items():
        for name, group in TABLES[benchmark]:
            table = comparison_table(benchmark_runs, group)
            with atomic_path(out / f"{name}.csv") as tmp:
                table.to_csv(tmp, index=False)
            with atomic_path(out / f"{name}.md") as tmp:
                tmp.write_text(to_markdown(table) + "\n", encoding="utf-8")
            written.append(name)
    if bench is not None:
        images = {label: _folder_images(Path(folder)) for label, folder in (_assignment(a, "--results")
                                                                              for a in results_args)}
        if dvc_experiments:
            kind = _bench_kind(bench)  # the grid shows the runs of the benchmark whose images it draws
            images.update({run.label: _dvc_images(run.rev_sha) for run in runs
                           if run.rev_sha and run.benchmark == kind})
        if not images:
            raise click.UsageError("a method grid needs edited images: --results LABEL=DIR or --dvc-experiments")
        grid = _method_grid(images, bench, grid_edits)
        with atomic_path(out / "method_grid.png") as tmp:
            grid.save(tmp, format="PNG")
    for benchmark, benchmark_runs in by_benchmark.items():
        click.echo(to_markdown(comparison_table(benchmark_runs, "overall")))
        click.echo(te_note(benchmark_runs))
        for _, group in TABLES[benchmark][1:]:
            missing = runs_without(benchmark_runs, group)
            if missing:
                click.echo(f"{group}: left out for {', '.join(missing)} (their metrics hold no {group} table)")
    click.echo(f"wrote {', '.join(written)} (.md, .csv) for {len(runs)} runs to {out}")
