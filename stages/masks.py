"""Stage masks: the masks every edit uses, from Grounded-SAM and/or imported refined masks, with their origin."""

import functools
import json
from pathlib import Path

import click
import pandas as pd
from tqdm.auto import tqdm

from _common import atomic_dir, load_params, stage_command
from _models import model_name, preflight

from ale_edit.atomic import write_json
from ale_edit.compat import provenance
from ale_edit.models import DEFAULT_DETECTOR_DTYPE
from ale_edit.preflight import grounding_needs
from ale_edit.bench.edit_masks import build_edit_masks, mask_phrase_sets
from ale_edit.bench.instances import split_failed
from ale_edit.images import working_size
from ale_edit.io import load_image


@stage_command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--bench", default="data/bench", show_default=True)
@click.option("--edits", default="data/prompts/edits.parquet", show_default=True)
@click.option("--out", default="data/masks", show_default=True)
def main(params_file, bench, edits, out):
    params = load_params(params_file)
    p, size = params["masks"], int(params["edit"]["size"])
    names = {"detector": model_name(params, "detector"), "segmenter": model_name(params, "segmenter"),
             "dtype": params["model"].get("detector_dtype", DEFAULT_DETECTOR_DTYPE)}
    if p["source"] != "manual":
        preflight(grounding_needs(names["detector"], names["segmenter"]))
    bench = Path(bench)
    manifest = json.loads((bench / "manifest.json").read_text())
    entries = {e["image"]: e for e in manifest["images"]}
    manual_root = Path(p["manual_dir"]) if p.get("manual_dir") else bench / "masks"
    sets = mask_phrase_sets(split_failed(pd.read_parquet(edits))[0])  # an error row (PIE-Bench) has no phrase
    click.echo(f"masks: {p['source']} masks for {sum(len(v) for v in sets.values())} phrase sets over {len(sets)} "
               f"images at {size} px")
    detect = None
    if p["source"] != "manual":
        from ale_edit.grounding import detect_masks, load_grounding_models

        models = load_grounding_models(names["detector"], names["segmenter"], device=params["model"]["device"],
                                       dtype=names["dtype"])
        detect = functools.partial(detect_masks, models=models, box_threshold=float(p["box_threshold"]),
                                   text_threshold=float(p["text_threshold"]))
    records = []
    with atomic_dir(out) as tmp:
        for image_name, phrase_sets in tqdm(sets.items(), desc="masks"):
            image = load_image(bench / entries[image_name]["file"])
            # Masks are made at the working size the editor sees, as the authors detect on the resized image.
            image = image.resize(working_size(image, size))
            manual_dir = manual_root / image_name
            manual = {f.name.split("_", 1)[0]: f for f in manual_dir.glob("*_mask.png")} if manual_dir.is_dir() else {}
            records += build_edit_masks(image, image_name, phrase_sets, tmp, source=p["source"], manual=manual,
                                        detect=detect)
        write_json(tmp / "masks.json", records)
        # Which Grounded-SAM made the detected masks (the segmenter follows edit.compat when model.segmenter is null);
        # refined masks only: none.
        grounded = {**names, "compat": provenance(params["edit"].get("compat") or "none",
                                                  {"model.segmenter": names["segmenter"]}, prefix="model.")}
        write_json(tmp / "models.json", {"source": p["source"], **(grounded if detect is not None else {})})
    counts = pd.Series([r["origin"] for r in records]).value_counts().to_dict()
    click.echo(f"masks ({p['source']}): {counts} -> {out}")


if __name__ == "__main__":
    main()
