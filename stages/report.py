"""Stage report: ALE-Bench metrics over every edit type (metrics/ale_bench.json: the paper's Table 1 columns overall
and by type, the DVC metrics; metrics/ale_bench_detail.json: the full aggregate and the scoring settings), a per-type
table for ``dvc plots``, and image grids (source | masks | edited) of a few edits per type. On PIE-Bench the same
files hold Table 14's columns (the scores' settings say which benchmark)."""

import json
from pathlib import Path

import click
import numpy as np
import pandas as pd

from _common import atomic_dir, edit_type_of, load_params, stage_command

from ale_edit.atomic import atomic_path, save_image, write_json
from ale_edit.bench.aggregate import aggregate_tables, headline_metrics, to_jsonable
from ale_edit.bench.figures import edit_grid
from ale_edit.bench.instances import split_failed
from ale_edit.bench.names import METRIC_COLUMNS
from ale_edit.io import load_image, load_mask


@stage_command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--bench", default="data/bench", show_default=True)
@click.option("--metrics", "metrics_file", default="metrics/ale_bench.json", show_default=True,
              help="The headline (Table 1 overall and by type): DVC metrics.")
@click.option("--detail", "detail_file", default="metrics/ale_bench_detail.json", show_default=True,
              help="The full aggregate (by objects, by type and objects, counts) and the scoring settings.")
@click.option("--plots", "plots_dir", default="plots", show_default=True)
def main(params_file, bench, metrics_file, detail_file, plots_dir):
    params = load_params(params_file)
    types = [edit_type_of(k) for k in params["prompts"]["edit_types"]]
    click.echo(f"report: {', '.join(t.name for t in types)} -> {metrics_file}, {detail_file}, {plots_dir}/")
    tables = [pd.read_parquet(Path("scores") / t.key / "per_edit.parquet") for t in types]
    per_edit = pd.concat(tables, ignore_index=True)
    metrics = to_jsonable(aggregate_tables(tables))  # an error if the types were scored with different settings
    write_json(detail_file, metrics)
    write_json(metrics_file, headline_metrics(metrics))

    plots = Path(plots_dir)
    by_type = pd.DataFrame([{"edit_type": t.name, **{m: metrics["by_type"][t.name].get(m) for m in METRIC_COLUMNS}}
                            for t in types])
    plots.mkdir(parents=True, exist_ok=True)
    with atomic_path(plots / "metrics_by_type.csv") as tmp:
        by_type.to_csv(tmp, index=False)

    manifest = json.loads((Path(bench) / "manifest.json").read_text())
    entries = {e["image"]: e for e in manifest["images"]}
    n = int(params["score"]["grid_edits"])
    with atomic_dir(plots / "grids") as tmp:
        for t in types:
            results = Path("results") / t.key
            table = split_failed(pd.read_parquet(results / "edits.parquet"))[0]  # error rows have no image
            table = table.sort_values("edit_id").head(n) if len(table) else table
            rows = []
            for row in table.itertuples(index=False):
                entry = entries[row.image]
                source = load_image(Path(bench) / entry["file"])
                masks = [load_mask(Path(bench) / entry["objects"][s], source.size, name=s) for s in row.sources]
                caption = "; ".join(f"{s} -> {g}" for s, g in zip(row.sources, row.targets))
                rows.append({"source": source, "masks": masks, "edited": load_image(results / row.path),
                             "caption": f"{row.edit_id}: {caption}"})
            if rows:
                save_image(tmp / f"{t.key}.png", edit_grid(rows))
    overall = metrics["overall"]
    summary = ", ".join(f"{m} {overall[m]:.4g}" for m in ("te_leakage", "ti_leakage", "edited_clip", "bg_psnr")
                        if isinstance(overall.get(m), float) and np.isfinite(overall[m]))
    click.echo(f"report: {len(per_edit)} edits over {len(types)} types; {summary} -> {metrics_file}")


if __name__ == "__main__":
    main()
