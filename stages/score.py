"""Stage score: the ALE-Bench metrics of one edit type's results (per-edit Parquet and aggregate JSON)."""

import json
from pathlib import Path

import click
import pandas as pd

from _common import atomic_dir, edit_type_of, load_params, model_name

from ale_edit.edit_types import EDIT_TYPE_KEYS, EDIT_TYPES
from ale_edit.bench.metric_models import load_metric_models
from ale_edit.bench.scoring import EditRecord, Scorer, aggregate, to_jsonable, write_outputs


def records(results: Path, bench: Path) -> list[EditRecord]:
    """What to score, from the edit stage's table: the edited image, the source, the ground-truth masks."""
    manifest = json.loads((bench / "manifest.json").read_text())
    entries = {e["image"]: e for e in manifest["images"]}
    table = pd.read_parquet(results / "edits.parquet")
    return [
        EditRecord(
            edit_id=row.edit_id, source_image=bench / entries[row.image]["file"], edited_image=results / row.path,
            masks={p: bench / f for p, f in entries[row.image]["objects"].items()},
            edits=tuple(zip(row.sources, row.targets)), edit_type=row.edit_type, n_objects=int(row.n_objects),
            image=row.image, index=int(row.index),
        )
        for row in table.itertuples(index=False)
    ]


@click.command()
@click.option("--edit-type", "type_key", type=click.Choice(EDIT_TYPE_KEYS + EDIT_TYPES), required=True,
              help="An edit type or its params.yaml key (color_object for color+object).")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--bench", default="data/bench", show_default=True)
@click.option("--results", default=None, help="[default: results/<type key>]")
@click.option("--out", default=None, help="[default: scores/<type key>]")
def main(type_key, params_file, bench, results, out):
    params = load_params(params_file)
    edit_type = edit_type_of(type_key)
    key, p = edit_type.key, params["score"]
    results, out = Path(results or f"results/{key}"), Path(out or f"scores/{key}")
    models = load_metric_models(params["model"]["preset"], clip=model_name(params, "clip"),
                                dino=model_name(params, "dino"), lpips=model_name(params, "lpips"),
                                device=params["model"]["device"])
    scorer = Scorer(models, dino_input=p["dino_input"], batch_size=int(p["batch_size"]))
    per_edit = scorer.score_records(records(results, Path(bench)))
    with atomic_dir(out) as tmp:
        write_outputs(per_edit, to_jsonable(aggregate(per_edit)), tmp)
    click.echo(f"score {edit_type.name}: {len(per_edit)} edits, {int(per_edit['error'].notna().sum())} errors -> {out}")


if __name__ == "__main__":
    main()
