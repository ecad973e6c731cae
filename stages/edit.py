"""Stage edit: every edit of one edit type, batched, resumable, shardable; images in the authors' layout."""

import json
from pathlib import Path

import click
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from _common import atomic_dir, edit_type_of, load_params, model_name

from ale_edit.atomic import atomic_path, write_json
from ale_edit.bench.instances import ERROR_COLUMN, split_failed
from ale_edit.bench.runner import collect, make_jobs, run_jobs, settings_identity, shard, timings
from ale_edit.edit_types import EDIT_TYPE_KEYS, EDIT_TYPES, PIE_EDIT_TYPES
from ale_edit.editor import Editor
from ale_edit.embeddings import TextEncoder, encoder_id
from ale_edit.models import load_diffusion_models
from ale_edit.settings import EditSettings

WORK = Path(".ale-edit-work")
LOGS = Path("logs")


@click.command()
@click.option("--edit-type", "type_key", type=click.Choice(EDIT_TYPE_KEYS + EDIT_TYPES + PIE_EDIT_TYPES),
              required=True, help="An edit type or its params.yaml key (color_object for color+object); on PIE-Bench "
                                  "one of its types (change_color).")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--bench", default="data/bench", show_default=True)
@click.option("--edits", default="data/prompts/edits.parquet", show_default=True)
@click.option("--masks", default="data/masks", show_default=True)
@click.option("--embeddings", default="data/embeddings/text.parquet", show_default=True)
@click.option("--out", default=None, help="Output folder [default: results/<type key>].")
@click.option("--shard-index", default=0, show_default=True, type=click.IntRange(0))
@click.option("--num-shards", default=1, show_default=True, type=click.IntRange(1),
              help="Split the edits over processes or GPUs; shards only fill the work folder, a run with "
                   "--num-shards 1 (or dvc repro) then assembles the results without redoing any edit.")
def main(type_key, params_file, bench, edits, masks, embeddings, out, shard_index, num_shards):
    params = load_params(params_file)
    if shard_index >= num_shards:
        raise click.BadParameter(f"{shard_index} is not below --num-shards {num_shards}", param_hint="--shard-index")
    settings = EditSettings.from_params(params)
    edit_type = edit_type_of(type_key)
    key = edit_type.key
    out = Path(out or f"results/{key}")
    table = pd.read_parquet(edits)
    table = table[table["edit_type"] == edit_type.name].reset_index(drop=True)
    has_errors = ERROR_COLUMN in table.columns  # PIE-Bench: entries without a pair are carried, not edited
    table, failed = split_failed(table)
    name = model_name(params, "diffusion")
    carried = f" ({len(failed)} error rows carried)" if len(failed) else ""
    click.echo(f"edit {edit_type.name}: {len(table)} edits{carried}, method {settings.method} "
               f"(compat {settings.compat}), {settings.steps} steps at {settings.size} px, batch {params['edit']['batch_size']}, model {name}"
               + (f", shard {shard_index + 1} of {num_shards}" if num_shards > 1 else ""))
    bench = Path(bench)
    manifest = json.loads((bench / "manifest.json").read_text())
    image_paths = {e["image"]: bench / e["file"] for e in manifest["images"]}
    mask_records = json.loads((Path(masks) / "masks.json").read_text())

    models = load_diffusion_models(name, params["model"]["device"], params["model"]["dtype"])
    text = TextEncoder(models.tokenizer, models.text_encoder, encoder_id(name, models.dtype))
    cached = text.load(embeddings)
    editor = Editor(models, settings, text_encoder=text)
    schedule = float(params["schedule"][key])
    jobs = make_jobs(table, image_paths, mask_records, Path(masks), schedule=schedule,
                     seed=int(params["edit"]["seed"]), identity=settings_identity(editor))
    work = WORK / "edit" / key
    done_now = run_jobs(editor, shard(jobs, shard_index, num_shards), work,
                        batch_size=int(params["edit"]["batch_size"]))
    click.echo(f"edit {edit_type.name}: {done_now} edited now, {len(jobs) - done_now} already done or in other shards; "
               f"{text.encoded} texts encoded ({cached} cached)")
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
    click.echo(f"edit {edit_type.name}: {len(results)} edits -> {out} (times: {LOGS / f'edit-{key}.json'})")


if __name__ == "__main__":
    main()
