"""Stage edit: every edit of one edit type, batched, resumable, in this process or on a pool of Ray actors
(edit.backend); images in the authors' layout."""

import json
from dataclasses import replace
from pathlib import Path

import click
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from _common import atomic_dir, edit_type_of, edit_type_option, load_params, stage_command
from _models import model_name, preflight, score_model_needs
from params import EditRayParams, ray_section

from ale_edit.atomic import atomic_path, write_json
from ale_edit.bench.backends import BACKENDS, RayConnectionError, RayMissingError, require_ray
from ale_edit.bench.instances import ERROR_COLUMN, split_failed
from ale_edit.bench.runner import EditorSpec, collect, make_jobs, run_jobs, settings_identity, shard, timings
from ale_edit.options import SettingError
from ale_edit.preflight import diffusion_need
from ale_edit.settings import EditSettings

WORK = Path(".ale-edit-work")
LOGS = Path("logs")


@stage_command()
@edit_type_option
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--bench", default="data/bench", show_default=True)
@click.option("--edits", default="data/prompts/edits.parquet", show_default=True)
@click.option("--masks", default="data/masks", show_default=True)
@click.option("--embeddings", default="data/embeddings/text.parquet", show_default=True)
@click.option("--out", default=None, help="Output folder [default: results/<type key>].")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="local: edit in this process; ray: in a pool of Ray actors (params.yaml's edit.ray) "
                   "[default: params.yaml's edit.backend].")
@click.option("--shard-index", default=0, show_default=True, type=click.IntRange(0))
@click.option("--num-shards", default=1, show_default=True, type=click.IntRange(1),
              help="Split the edits over processes or GPUs by hand (backend ray does it for you); shards only fill "
                   "the work folder, a run with --num-shards 1 (or dvc repro) then assembles the results without "
                   "redoing any edit.")
def main(type_key, params_file, bench, edits, masks, embeddings, out, backend, shard_index, num_shards):
    params = load_params(params_file)
    name = model_name(params, "diffusion")
    # The score stage's models too: a missing one is named now, not after hours of edits.
    preflight([diffusion_need(name), *score_model_needs(params)])
    if shard_index >= num_shards:
        raise click.BadParameter(f"{shard_index} is not below --num-shards {num_shards}", param_hint="--shard-index")
    backend = backend or params["edit"].get("backend", "local")
    ray_options = ray_section(EditRayParams, params["edit"].get("ray"))
    if backend == "ray":
        try:
            require_ray()  # before anything loads
        except RayMissingError as exc:
            raise click.ClickException(str(exc)) from exc
    settings = EditSettings.from_params(params)
    edit_type = edit_type_of(type_key)
    key = edit_type.key
    out = Path(out or f"results/{key}")
    table = pd.read_parquet(edits)
    table = table[table["edit_type"] == edit_type.name].reset_index(drop=True)
    has_errors = ERROR_COLUMN in table.columns  # PIE-Bench: entries without a pair are carried, not edited
    table, failed = split_failed(table)
    batch_size = int(params["edit"]["batch_size"])
    carried = f" ({len(failed)} error rows carried)" if len(failed) else ""
    click.echo(f"edit {edit_type.name}: {len(table)} edits{carried}, method {settings.method} "
               f"(compat {settings.compat}), {settings.steps} steps at {settings.size} px, batch {batch_size}, "
               f"model {name}, backend {backend}"
               + (f", shard {shard_index + 1} of {num_shards}" if num_shards > 1 else ""))
    bench = Path(bench)
    manifest = json.loads((bench / "manifest.json").read_text())
    image_paths = {e["image"]: bench / e["file"] for e in manifest["images"]}
    mask_records = json.loads((Path(masks) / "masks.json").read_text())
    spec = EditorSpec(name, params["model"]["device"], params["model"]["dtype"], settings)
    schedule = float(params["schedule"][key])
    work = WORK / "edit" / key

    def jobs_for(identity):
        return make_jobs(table, image_paths, mask_records, Path(masks), schedule=schedule,
                         seed=int(params["edit"]["seed"]), identity=identity)

    if backend == "ray":
        from ale_edit.bench.ray_backend import plan_pool, ray_cluster
        from ale_edit.bench.ray_edit import run_jobs_on_ray

        try:
            with ray_cluster(ray_options):
                pool = plan_pool(ray_options, params["model"]["device"])
                spec = replace(spec, device=pool.device)
                click.echo(f"edit {edit_type.name}: Ray at {ray_options.address}, up to {pool.workers} actors "
                           f"with {pool.num_gpus:g} GPUs and {pool.num_cpus:g} CPUs each")
                jobs = jobs_for(spec.identity())
                done_now = run_jobs_on_ray(spec, shard(jobs, shard_index, num_shards), work, pool,
                                           batch_size=batch_size, embeddings=embeddings)
        except (RayConnectionError, SettingError) as exc:  # the pool or the address in params.yaml
            raise click.ClickException(str(exc)) from exc
        texts = "texts encoded by the actors"
    else:
        editor = spec.load(embeddings)
        cached = len(editor.text_encoder.cache)
        jobs = jobs_for(settings_identity(editor))
        done_now = run_jobs(editor, shard(jobs, shard_index, num_shards), work, batch_size=batch_size)
        texts = f"{editor.text_encoder.encoded} texts encoded ({cached} cached)"
    click.echo(f"edit {edit_type.name}: {done_now} edited now, {len(jobs) - done_now} already done or in other shards; "
               f"{texts}")
    if num_shards > 1:
        return
    seconds = timings(jobs, work)
    with atomic_dir(out) as tmp:
        results = collect(jobs, work, tmp, failed=failed if has_errors else None, schedule=schedule)
        with atomic_path(tmp / "edits.parquet") as path:
            pq.write_table(pa.Table.from_pandas(results, preserve_index=False), path)
    for job in jobs:  # the results are safely in place: the work copies are no longer needed
        for suffix in (".png", ".json"):
            (work / f"{job.fingerprint}{suffix}").unlink(missing_ok=True)
    # Runtime facts go to a log DVC does not track: two identical runs keep identical outputs and dvc.lock hashes.
    write_json(LOGS / f"edit-{key}.json", {"seconds": seconds, "total_seconds": round(sum(seconds.values()), 3)})
    n_failed = int(results[ERROR_COLUMN].notna().sum())
    click.echo(f"edit {edit_type.name}: {len(results)} edits, {n_failed} failed (error rows) -> {out} "
               f"(times: {LOGS / f'edit-{key}.json'})")


if __name__ == "__main__":
    main()
