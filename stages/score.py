"""Stage score: the metrics of one edit type's results (per-edit Parquet and aggregate JSON), on ALE-Bench or, with
PIE-Bench's conventions, on PIE-Bench (the benchmark its manifest holds)."""

import json
from pathlib import Path

import click

from _common import atomic_dir, edit_type_of, load_params, model_name

from ale_edit.bench.materialize import manifest_kind
from ale_edit.bench.settings import score_settings_from_params
from ale_edit.edit_types import EDIT_TYPE_KEYS, EDIT_TYPES, PIE_EDIT_TYPES
from ale_edit.errors import EditInputError


@click.command()
@click.option("--edit-type", "type_key", type=click.Choice(EDIT_TYPE_KEYS + EDIT_TYPES + PIE_EDIT_TYPES),
              required=True, help="An edit type or its params.yaml key (color_object for color+object); on PIE-Bench "
                                  "one of its types (change_color).")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--bench", default="data/bench", show_default=True)
@click.option("--results", default=None, help="[default: results/<type key>]")
@click.option("--out", default=None, help="[default: scores/<type key>]")
def main(type_key, params_file, bench, results, out):
    params = load_params(params_file)
    edit_type = edit_type_of(type_key)
    p = params["score"]
    results, out = Path(results or f"results/{edit_type.key}"), Path(out or f"scores/{edit_type.key}")
    # score.mask_weights / score.te_variant null: from edit.compat (none: binary, mean; authors: soft, joined)
    benchmark = manifest_kind(json.loads((Path(bench) / "manifest.json").read_text()))
    settings = score_settings_from_params(p, params["edit"].get("compat", "none"), benchmark)
    click.echo(f"score {edit_type.name}: {results}, mask weights {settings.mask_weights}, reported TE "
               f"{settings.te_variant}, CLIP {model_name(params, 'clip')}, batch {p['batch_size']}")
    # The metric libraries (torchmetrics, torchvision, transformers) are imported once the plan is out.
    from ale_edit.bench.metric_models import load_metric_models
    from ale_edit.bench.scoring import records_from_edit_table, score_edits, write_outputs

    try:
        records = records_from_edit_table(results, Path(bench), mask_weights=settings.mask_weights)
    except EditInputError as exc:
        raise click.ClickException(str(exc)) from exc
    models = load_metric_models(params["model"]["preset"], clip=model_name(params, "clip"),
                                dino=model_name(params, "dino"), lpips=model_name(params, "lpips"),
                                device=params["model"]["device"])
    run = score_edits(records, models, settings, batch_size=int(p["batch_size"]), results_dir=str(results),
                      bench_dir=str(bench))
    with atomic_dir(out) as tmp:
        write_outputs(run.per_edit, run.metrics, tmp)
    errors = int(run.per_edit["error"].notna().sum())
    click.echo(f"score {edit_type.name}: {len(run.per_edit)} edits, {errors} errors -> {out}")


if __name__ == "__main__":
    main()
