"""Stage prompts: the edit table (one row per edit, stable ids), imported from the authors or generated; on
PIE-Bench, one edit per entry with its whole prompts, an entry without a pair kept as an error row."""

import json
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq

from _common import edit_type_of, load_params, stage_command

from ale_edit.atomic import atomic_path
from ale_edit.bench.dataset import load_prompt_instances
from ale_edit.bench.instances import (
    edit_table, generate_instances, load_attribute_dictionary, row_prompts, split_failed,
)
from ale_edit.bench.materialize import load_objects, manifest_kind
from ale_edit.bench.pie import pie_edit_table
from ale_edit.errors import EditInputError
from ale_edit.text import check_edit_lengths
from ale_edit.tokenizer import clip_tokenizer


@stage_command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--bench", default="data/bench", show_default=True)
@click.option("--dictionary", default="data/attributes.yaml", show_default=True)
@click.option("--out", default="data/prompts/edits.parquet", show_default=True)
def main(params_file, bench, dictionary, out):
    p = load_params(params_file)["prompts"]
    manifest = json.loads((Path(bench) / "manifest.json").read_text())
    if manifest_kind(manifest) == "pie":
        return pie(p, manifest, out)
    objects = load_objects(manifest)
    types = [edit_type_of(k).name for k in p["edit_types"]]
    counts, n = [int(c) for c in p["object_counts"]], int(p["instances"])
    click.echo(f"prompts: {p['mode']} instances, {n} per image, type and count; types {', '.join(types)}; "
               f"counts {counts}")
    try:
        if p["mode"] == "official":
            found = load_prompt_instances(bench, n_objects=counts, edit_types=types, images=sorted(objects))
            instances = [i for i in found if i.index < n]
            if not instances:
                raise EditInputError(f"no official instances under {bench}/prompts for these images, types and counts")
        elif p["mode"] == "generated":
            instances = generate_instances(objects, load_attribute_dictionary(dictionary), edit_types=types,
                                           object_counts=counts, instances=n, seed=int(p["seed"]))
        else:
            raise EditInputError(f"prompts.mode must be 'official' or 'generated', not {p['mode']!r}")
        for i in instances:
            unknown = sorted(set(i.sources) - set(objects[i.image]))
            if unknown:
                raise EditInputError(f"edit {i.key} names {unknown}, which have no mask in the benchmark")
        table = edit_table(instances)
    except EditInputError as exc:
        raise click.ClickException(str(exc)) from exc
    write_table(table, out)
    click.echo(f"prompts ({p['mode']}): {len(table)} edits over {table['image'].nunique()} images -> {out}")


def pie(p, manifest, out):
    types = [edit_type_of(k).name for k in p["edit_types"]]
    table = pie_edit_table(manifest, types)
    write_table(table, out)
    failed = int(table["error"].notna().sum())
    click.echo(f"prompts (PIE-Bench): {len(table)} edits of {', '.join(types)}, {failed} of them error rows (no pair) "
               f"-> {out}")


def check_lengths(table):
    """Every edit's prompts fit the text encoder, checked with the tokenizer alone before any stage loads a model;
    else the stage stops naming the edit (an entry without a pair, PIE-Bench's error row, has no prompts)."""
    tokenizer = clip_tokenizer()
    for row in split_failed(table)[0].itertuples():
        try:
            check_edit_lengths(list(zip(row.sources, row.targets)), row_prompts(row), tokenizer)
        except EditInputError as exc:
            raise EditInputError(f"edit {row.edit_id}: {exc}") from exc


def write_table(table, out):
    check_lengths(table)
    with atomic_path(out) as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)


if __name__ == "__main__":
    main()
