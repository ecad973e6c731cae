"""Stage edit: every edit of one edit type, batched, resumable, shardable; images in the authors' layout."""

import json
from pathlib import Path

import click
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from _common import EDIT_TYPE_KEYS, atomic_dir, edit_type_of, load_params, model_name, schedule_key

from ale_edit.atomic import atomic_path
from ale_edit.bench.dataset import EDIT_TYPES
from ale_edit.bench.runner import collect, make_jobs, run_jobs, settings_identity, shard
from ale_edit.editor import Editor, EditSettings
from ale_edit.embeddings import TextEncoder, encoder_id
from ale_edit.models import load_diffusion_models

WORK = Path(".ale-edit-work")


def editor_settings(params: dict) -> EditSettings:
    e, ale, ore = params["edit"], params["ale"], params["ore"]
    return EditSettings(
        steps=int(e["steps"]), size=int(e["size"]), guidance_source=float(e["guidance_source"]),
        guidance_target=float(e["guidance_target"]), eta=float(e["eta"]), dilation=float(e["dilation"]),
        ore=bool(ale["ore"]), rgb_cam=bool(ale["rgb_cam"]), bb=bool(ale["bb"]), eos=str(ore["eos"]),
        ore_zeroing=str(ore["zeroing"]), ore_index_quirk=bool(ore["index_quirk"]),
        final_blend=bool(e["final_blend"]), vae_latent=str(e["vae_latent"]), method=str(params["method"]),
        masactrl_start_step=int(params["masactrl"]["start_step"]),
        masactrl_start_layer=int(params["masactrl"]["start_layer"]),
        fpe_self_replace=float(params["fpe"]["self_replace"]),
        p2p_cross_replace=float(params["p2p"]["cross_replace"]), p2p_local_blend=bool(params["p2p"]["local_blend"]),
        infedit_cross_replace=float(params["infedit"]["cross_replace"]),
        infedit_thresh_e=float(params["infedit"]["thresh_e"]), infedit_thresh_m=float(params["infedit"]["thresh_m"]),
    )


@click.command()
@click.option("--edit-type", "type_key", type=click.Choice(EDIT_TYPE_KEYS + EDIT_TYPES), required=True,
              help="An edit type or its params.yaml key (color_object for color+object).")
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--bench", default="data/bench", show_default=True)
@click.option("--edits", default="data/prompts/edits.parquet", show_default=True)
@click.option("--masks", default="data/masks", show_default=True)
@click.option("--embeddings", default="data/embeddings/text.parquet", show_default=True)
@click.option("--out", default=None, help="Output folder [default: results/<type key>].")
@click.option("--shard-index", default=0, show_default=True, type=int)
@click.option("--num-shards", default=1, show_default=True, type=int,
              help="Split the edits over processes or GPUs; shards only fill the work folder, a run with "
                   "--num-shards 1 (or dvc repro) then assembles the results without redoing any edit.")
def main(type_key, params_file, bench, edits, masks, embeddings, out, shard_index, num_shards):
    params = load_params(params_file)
    edit_type = edit_type_of(type_key)
    key = schedule_key(edit_type)
    out = Path(out or f"results/{key}")
    table = pd.read_parquet(edits)
    table = table[table["edit_type"] == edit_type].reset_index(drop=True)
    bench = Path(bench)
    manifest = json.loads((bench / "manifest.json").read_text())
    image_paths = {e["image"]: bench / e["file"] for e in manifest["images"]}
    mask_records = json.loads((Path(masks) / "masks.json").read_text())

    name = model_name(params, "diffusion")
    models = load_diffusion_models(name, params["model"]["device"], params["model"]["dtype"])
    text = TextEncoder(models.tokenizer, models.text_encoder, encoder_id(name, models.dtype))
    cached = text.load(embeddings)
    editor = Editor(models, editor_settings(params), text_encoder=text)
    jobs = make_jobs(table, image_paths, mask_records, Path(masks), schedule=float(params["schedule"][key]),
                     seed=int(params["edit"]["seed"]), identity=settings_identity(editor))
    work = WORK / "edit" / key
    done_now = run_jobs(editor, shard(jobs, shard_index, num_shards), work,
                        batch_size=int(params["edit"]["batch_size"]))
    click.echo(f"edit {edit_type}: {done_now} edited now, {len(jobs) - done_now} already done or in other shards; "
               f"{text.encoded} texts encoded ({cached} cached)")
    if num_shards > 1:
        return
    with atomic_dir(out) as tmp:
        results = collect(jobs, work, tmp)
        with atomic_path(tmp / "edits.parquet") as path:
            pq.write_table(pa.Table.from_pandas(results, preserve_index=False), path)
    for job in jobs:  # the results are safely in place: the work copies are no longer needed
        for suffix in (".png", ".json"):
            (work / f"{job.fingerprint}{suffix}").unlink(missing_ok=True)
    click.echo(f"edit {edit_type}: {len(results)} edits -> {out}")


if __name__ == "__main__":
    main()
