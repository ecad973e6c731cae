"""``ale-edit score``: score a folder of edited images against ALE-Bench."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..bench.metric_models import DEFAULT_CLIP_MODEL, DEFAULT_DINO_MODEL, LPIPS_NETS, PRESETS, metric_model_names
from ..bench.scoring import (
    DINO_INPUTS, LAYOUTS, MASK_WEIGHTS, TE_VARIANT_LABELS, TE_VARIANTS, headline_metrics, score_results,
)
from ..compat import COMPAT_PROFILES
from ..errors import EditInputError
from ..preflight import check_models, metric_needs

DTYPES = ("fp32", "fp16", "bf16", "auto")


@click.command("score")
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--bench", "bench_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The ALE-Bench folder (images/, masks/, prompts/).")
@click.option("--layout", type=click.Choice(LAYOUTS), default="authors", show_default=True,
              help="Results layout; authors: <n objects>/<edit type>/<image>/edit_<index>.png.")
@click.option("--models", "preset", type=click.Choice(PRESETS), default="real", show_default=True,
              help="real: the published metric models; tiny: random-weight models, offline (tests).")
@click.option("--clip-model", default=None,
              help=f"CLIP hub id, local folder or 'tiny' (overrides --models) [real: {DEFAULT_CLIP_MODEL}].")
@click.option("--dino-model", default=None,
              help=f"DINO ViT hub id, local folder or 'tiny' (overrides --models) [real: {DEFAULT_DINO_MODEL}].")
@click.option("--lpips-net", type=click.Choice(LPIPS_NETS), default=None,
              help="LPIPS network (overrides --models) [real: squeeze].")
@click.option("--compat", "compat_profile", type=click.Choice(COMPAT_PROFILES), default="none", show_default=True,
              help="authors: score as the authors' evaluation code does (soft mask weights, TE on the joined "
                   "prompt); --mask-weights and --te-variant given explicitly win.")
@click.option("--mask-weights", type=click.Choice(MASK_WEIGHTS), default=None,
              help="binary: masks binarised at 0.5; soft: antialiased masks as weights (grey level / 255), as the "
                   "authors' code [default: from --compat; none: binary].")
@click.option("--te-variant", type=click.Choice(tuple(TE_VARIANTS)), default=None,
              help="The TE reported: mean (the paper's eq. 6, mean over targets) or joined (the joined target "
                   "prompt, as the authors' code); both are computed [default: from --compat; none: mean].")
@click.option("--lpips-weights", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="LPIPS' SqueezeNet weights (torchvision's squeezenet1_1-b8a52dc0.pth) [default: torchvision's "
                   "download cache, $TORCH_HOME/hub/checkpoints].")
@click.option("--resize-edited/--no-resize-edited", default=None,
              help="Resize an edited image of another size than its source (bicubic, as the authors' code) and "
                   "record its size in the resized_from column; without it such an edit is an error row "
                   "[default: from --compat; none: no, authors: yes].")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1),
              help="Edits loaded at a time, and the batch size of CLIP and DINO (the pixel metrics run in chunks "
                   "of about one 1000x1000 image, whatever the batch size).")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="fp32", show_default=True,
              help="CLIP/DINO dtype (auto: fp16 on CUDA); the published numbers are fp32.")
@click.option("--dino-input", type=click.Choice(DINO_INPUTS), default="published", show_default=True,
              help="published: 0-255 pixels into DINO's ImageNet normalisation, as the authors' code; "
                   "corrected: 0-1.")
@click.option("--require-all", is_flag=True,
              help="Score every benchmark edit; a missing result folder gives error rows (default: only edits "
                   "whose <n>/<type>/<image> folder exists).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for per_edit.parquet and metrics.json.")
def score(results_dir, bench_dir, layout, preset, clip_model, dino_model, lpips_net, compat_profile, mask_weights,
          te_variant, lpips_weights, resize_edited, batch_size, device, dtype, dino_input, require_all, progress,
          out_dir):
    """Score the edited images in RESULTS_DIR: leakage (TE, TI), edit CLIP score, structure, background fidelity.

    Writes OUT/per_edit.parquet (one row per edit, with an `error` column for edits that could not be scored)
    and OUT/metrics.json (the settings, then means overall, by edit type, by number of objects and by both).
    """
    try:
        names = metric_model_names(preset, clip=clip_model, dino=dino_model, lpips=lpips_net)
        check_models(metric_needs(names["clip"], names["dino"], names["lpips"], lpips_weights, "--lpips-weights"))
        run = score_results(
            results_dir, bench_dir, out_dir, layout=layout, models=preset, clip_model=clip_model,
            dino_model=dino_model, lpips_net=lpips_net, device=device, dtype=dtype, batch_size=batch_size,
            dino_input=dino_input, compat=compat_profile, mask_weights=mask_weights, te_variant=te_variant,
            resize_edited=resize_edited, require_all=require_all, progress=progress, lpips_weights=lpips_weights,
        )
    except (EditInputError, OSError) as exc:  # bad benchmark/results input, or a model that cannot be loaded
        raise click.ClickException(str(exc)) from exc
    overall = run.metrics["overall"]
    settings = run.metrics["settings"]
    click.echo(f"scored {overall['count'] - overall['errors']} of {overall['count']} edits -> {out_dir}")
    click.echo(f"mask weights {settings['mask_weights']}; TE reported: {settings['te_variant']} "
               f"({TE_VARIANT_LABELS[settings['te_variant']]}); compat {compat_profile}")
    headline = headline_metrics(run.metrics)["overall"]
    click.echo(json.dumps({k: v for k, v in headline.items() if k not in ("count", "errors")}, indent=2))
    if overall["errors"]:
        failed = run.per_edit[run.per_edit["error"].notna()]
        click.echo(f"{len(failed)} edits not scored (see the error column), e.g. "
                   f"{failed['edit_id'].iloc[0]}: {failed['error'].iloc[0]}", err=True)
