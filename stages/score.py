"""Stage score: the metrics of one edit type's results (per-edit Parquet and aggregate JSON), on ALE-Bench or, with
PIE-Bench's conventions, on PIE-Bench (the benchmark its manifest holds); in this process or on a pool of Ray actors
(score.backend)."""

import json
from pathlib import Path

import click

from _common import atomic_dir, edit_type_of, edit_type_option, load_params, stage_command
from _models import model_name, preflight, score_model_needs
from params import ScoreRayParams, ray_section

from ale_edit.bench.backends import BACKENDS, RayConnectionError, RayMissingError, require_ray
from ale_edit.bench.materialize import manifest_kind
from ale_edit.bench.settings import score_settings_from_params
from ale_edit.errors import EditInputError
from ale_edit.options import SettingError


@stage_command()
@edit_type_option
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--bench", default="data/bench", show_default=True)
@click.option("--results", default=None, help="[default: results/<type key>]")
@click.option("--out", default=None, help="[default: scores/<type key>]")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="local: score in this process; ray: in a pool of Ray actors (params.yaml's score.ray) "
                   "[default: params.yaml's score.backend].")
def main(type_key, params_file, bench, results, out, backend):
    params = load_params(params_file)
    edit_type = edit_type_of(type_key)
    p = params["score"]
    backend = backend or p.get("backend", "local")
    ray_options = ray_section(ScoreRayParams, p.get("ray"))
    if backend == "ray":
        try:
            require_ray()  # before anything loads
        except RayMissingError as exc:
            raise click.ClickException(str(exc)) from exc
    preflight(score_model_needs(params))
    results, out = Path(results or f"results/{edit_type.key}"), Path(out or f"scores/{edit_type.key}")
    # score.mask_weights / score.te_variant null: from edit.compat (none: binary, mean; authors: soft, joined)
    benchmark = manifest_kind(json.loads((Path(bench) / "manifest.json").read_text()))
    settings = score_settings_from_params(p, params["edit"].get("compat", "none"), benchmark)
    click.echo(f"score {edit_type.name}: {results}, mask weights {settings.mask_weights}, reported TE "
               f"{settings.te_variant}, CLIP {model_name(params, 'clip')}, batch {p['batch_size']}, "
               f"backend {backend}")
    # The metric libraries (torchmetrics, torchvision, transformers) are imported once the plan is out.
    from ale_edit.bench.metric_models import MetricModelSpec
    from ale_edit.bench.scoring import records_from_edit_table, score_edits, write_outputs

    try:
        records = records_from_edit_table(results, Path(bench), mask_weights=settings.mask_weights)
    except EditInputError as exc:
        raise click.ClickException(str(exc)) from exc
    spec = MetricModelSpec(params["model"]["preset"], clip=model_name(params, "clip"), dino=model_name(params, "dino"),
                           lpips=model_name(params, "lpips"), device=params["model"]["device"],
                           lpips_weights=p.get("lpips_weights") or None)
    batch_size, inputs = int(p["batch_size"]), {"results_dir": str(results), "bench_dir": str(bench)}
    if backend == "ray":
        from ale_edit.bench.ray_backend import plan_pool, ray_cluster
        from ale_edit.bench.ray_score import score_edits_on_ray

        try:
            with ray_cluster(ray_options):
                pool = plan_pool(ray_options, params["model"]["device"])
                click.echo(f"score {edit_type.name}: Ray at {ray_options.address}, up to {pool.workers} actors "
                           f"with {pool.num_gpus:g} GPUs and {pool.num_cpus:g} CPUs each")
                run = score_edits_on_ray(records, spec, settings, pool, batch_size=batch_size, **inputs)
        except (RayConnectionError, SettingError) as exc:  # the pool or the address in params.yaml
            raise click.ClickException(str(exc)) from exc
    else:
        models = spec.load()
        run = score_edits(records, models, settings, batch_size=batch_size, **inputs)
    with atomic_dir(out) as tmp:
        write_outputs(run.per_edit, run.metrics, tmp)
    errors = int(run.per_edit["error"].notna().sum())
    click.echo(f"score {edit_type.name}: {len(run.per_edit)} edits, {errors} errors -> {out}")


if __name__ == "__main__":
    main()
