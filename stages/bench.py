"""Stage bench: materialise the benchmark under data/bench (images, binary masks, the edits' prompts, manifest):
ALE-Bench (the authors' instances), or PIE-Bench with bench.kind pie (its entries of bench.pie_types)."""

import click

from _common import atomic_dir, load_params, stage_command

from ale_edit.atomic import write_json
from ale_edit.bench.materialize import available_images, bench_source, materialize, select_images
from ale_edit.bench.pie import materialize_pie
from ale_edit.errors import EditInputError


@stage_command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--out", default="data/bench", show_default=True)
def main(params_file, out):
    p = load_params(params_file)["bench"]
    if p.get("kind", "ale") == "pie":
        return pie(p, out)
    click.echo(f"bench: from {p['source']}" + (f" at {p['rev']}" if p.get("rev") and str(p["source"]).endswith(".git")
                                                 else "") + f", images {p.get('images') or 'all'}")
    try:
        with bench_source(str(p["source"]), p.get("rev"), p.get("subdir", "ale_bench")) as root:
            images = select_images(available_images(root), p.get("images") or [], int(p.get("limit") or 0))
            with atomic_dir(out) as tmp:
                manifest = materialize(root, tmp, images)
                manifest.update(source=str(p["source"]), rev=p.get("rev"))
                write_json(tmp / "manifest.json", manifest)
    except EditInputError as exc:
        raise click.ClickException(str(exc)) from exc
    n_masks = sum(len(e["objects"]) for e in manifest["images"])
    click.echo(f"bench: {len(images)} images, {n_masks} masks, {len(manifest['skipped'])} stray files skipped -> {out}")


def pie(p, out):
    types = list(p["pie_types"])
    click.echo(f"bench: PIE-Bench from {p['source']}, types {', '.join(types)}, entries {p.get('images') or 'all'}")
    try:
        with atomic_dir(out) as tmp:
            manifest = materialize_pie(str(p["source"]), tmp, types=types, images=p.get("images") or [],
                                       limit=int(p.get("limit") or 0))
            manifest.update(source=str(p["source"]))
            write_json(tmp / "manifest.json", manifest)
    except EditInputError as exc:
        raise click.ClickException(str(exc)) from exc
    entries = manifest["images"]
    failed = sum(1 for e in entries if e["pie"]["error"])
    click.echo(f"bench: PIE-Bench {len(entries)} entries ({failed} without an edit: no pair), "
               f"{len(manifest['skipped'])} of unknown type skipped -> {out}")


if __name__ == "__main__":
    main()
