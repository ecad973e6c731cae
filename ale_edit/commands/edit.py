"""``ale-edit edit``: edit one image with ALE-Edit."""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path

import click
import numpy as np
from PIL import Image

from ..atomic import save_image, write_json
from ..editor import SCHEDULES, EditRequest, Editor, EditSettings, validate_request
from ..errors import EditInputError
from ..io import load_image, load_mask
from ..models import DEFAULT_DIFFUSION_MODEL, TINY, load_diffusion_models
from ..methods import METHODS
from ..methods.baselines import FPE_SELF_REPLACE, MASACTRL_START_LAYER, MASACTRL_START_STEP
from ..methods.infedit import INFEDIT_CROSS_REPLACE, INFEDIT_THRESH_E, INFEDIT_THRESH_M
from ..methods.p2p import P2P_CROSS_REPLACE, P2P_LOCAL_BLEND
from ..text import EOS_TREATMENTS, ORE_ZEROINGS

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-base"
DEFAULT_SEGMENTER = "facebook/sam-vit-huge"


def parse_assignment(value: str, option: str) -> tuple[str, str]:
    """Split ``"left=right"`` at the first "=", both sides non-empty after stripping."""
    if "=" not in value:
        raise click.BadParameter(f"{value!r} is not of the form SOURCE=TARGET", param_hint=option)
    left, right = (part.strip() for part in value.split("=", 1))
    if not left or not right:
        raise click.BadParameter(f"{value!r} has an empty side", param_hint=option)
    return left, right


def mask_file_name(phrase: str) -> str:
    """ALE-Bench's convention, ``<phrase>_mask.png``, with path separators made safe."""
    return re.sub(r"[/\\]", "-", phrase) + "_mask.png"


@click.command("edit")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-e", "--edit", "edits", multiple=True, required=True, metavar="SOURCE=TARGET",
              help='An object to edit and what it becomes, e.g. -e "cup=cup made of gold". 1 to 3 of them.')
@click.option("--mask", "mask_args", multiple=True, metavar="SOURCE=FILE",
              help="A mask file for a source phrase; phrases without one are found with Grounded-SAM.")
@click.option("--type", "edit_type", type=click.Choice(sorted(SCHEDULES)), default=None,
              help="Edit type: picks the self-attention injection schedule.")
@click.option("--schedule", type=click.FloatRange(0, 1), default=None,
              help="Fraction of steps with self-attention Q,K injection (overrides --type).")
@click.option("--model", default=DEFAULT_DIFFUSION_MODEL, show_default=True,
              help="Diffusion model: hub id, local diffusers folder, or 'tiny' (random weights, offline, every "
                   "model tiny).")
@click.option("--detector", default=None, help=f"Grounding DINO id or folder [default: {DEFAULT_DETECTOR}].")
@click.option("--segmenter", default=None, help=f"SAM id or folder [default: {DEFAULT_SEGMENTER}].")
@click.option("--steps", default=15, show_default=True, type=click.IntRange(1))
@click.option("--size", default=768, show_default=True, type=int, help="Working size (longer side).")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--dilation", default=0.04, show_default=True, type=click.FloatRange(0),
              help="Mask dilation radius as a fraction of --size.")
@click.option("--box-threshold", default=0.45, show_default=True, type=float)
@click.option("--text-threshold", default=0.4, show_default=True, type=float)
@click.option("--guidance", default=2.0, show_default=True, type=float, help="Target-branch guidance scale.")
@click.option("--eos", type=click.Choice(EOS_TREATMENTS), default="ore", show_default=True,
              help="ORE's treatment of the EOS/padding slots.")
@click.option("--ore-zeroing", type=click.Choice(ORE_ZEROINGS), default="other_phrases", show_default=True)
@click.option("--ore-index-quirk", is_flag=True, help="Reproduce the authors' substituted-base indexing.")
@click.option("--ore/--no-ore", "use_ore", default=True, show_default=True)
@click.option("--rgb-cam/--no-rgb-cam", default=True, show_default=True)
@click.option("--bb/--no-bb", default=True, show_default=True, help="Background blending.")
@click.option("--final-blend", is_flag=True, help="Also blend the final pred_x0 with the source on the background.")
@click.option("--method", type=click.Choice(METHODS), default="ale", show_default=True,
              help="ALE-Edit, or a baseline on the same sampler (fpe: Free-Prompt-Editing; masactrl: MasaCtrl; "
                   "p2p: Prompt-to-Prompt; infedit: InfEdit).")
@click.option("--masactrl-start-step", default=MASACTRL_START_STEP, show_default=True, type=click.IntRange(0))
@click.option("--masactrl-start-layer", default=MASACTRL_START_LAYER, show_default=True, type=click.IntRange(0))
@click.option("--fpe-self-replace", default=FPE_SELF_REPLACE, show_default=True, type=click.FloatRange(0, 1),
              help="Free-Prompt-Editing's fraction of steps with self-attention map replacement.")
@click.option("--p2p-cross-replace", default=P2P_CROSS_REPLACE, show_default=True, type=click.FloatRange(0, 1),
              help="Prompt-to-Prompt's fraction of steps with cross-attention map replacement.")
@click.option("--p2p-local-blend", is_flag=True, help="Prompt-to-Prompt's optional local blend on the target words.")
@click.option("--infedit-cross-replace", default=INFEDIT_CROSS_REPLACE, show_default=True,
              type=click.FloatRange(0, 1), help="InfEdit's fraction of steps with cross-attention refinement.")
@click.option("--infedit-thresh-e", default=INFEDIT_THRESH_E, show_default=True, type=click.FloatRange(0, 1),
              help="InfEdit's local-blend threshold on the target words.")
@click.option("--infedit-thresh-m", default=INFEDIT_THRESH_M, show_default=True, type=click.FloatRange(0, 1),
              help="InfEdit's mutual-blend threshold.")
@click.option("--vae-latent", type=click.Choice(["mode", "sample"]), default="mode", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="auto: fp16 on CUDA, fp32 on CPU.")
@click.option("--save-masks", type=click.Path(path_type=Path), default=None, help="Write the masks used here.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The edited image (.png).")
def edit(image, edits, mask_args, edit_type, schedule, model, detector, segmenter, steps, size, seed, dilation,
         box_threshold, text_threshold, guidance, eos, ore_zeroing, ore_index_quirk, use_ore, rgb_cam, bb,
         final_blend, method, masactrl_start_step, masactrl_start_layer, fpe_self_replace, p2p_cross_replace,
         p2p_local_blend, infedit_cross_replace, infedit_thresh_e, infedit_thresh_m, vae_latent, device, dtype,
         save_masks, output):
    """Edit IMAGE: each -e SOURCE=TARGET changes one object; writes the image and a JSON record beside it."""
    pairs = [parse_assignment(e, "-e/--edit") for e in edits]
    mask_files = dict(parse_assignment(m, "--mask") for m in mask_args)
    try:
        settings = EditSettings(
            steps=steps, size=size, guidance_target=guidance, dilation=dilation, ore=use_ore, rgb_cam=rgb_cam,
            bb=bb, eos=eos, ore_zeroing=ore_zeroing, ore_index_quirk=ore_index_quirk, final_blend=final_blend,
            vae_latent=vae_latent, method=method, masactrl_start_step=masactrl_start_step,
            masactrl_start_layer=masactrl_start_layer, fpe_self_replace=fpe_self_replace,
            p2p_cross_replace=p2p_cross_replace, p2p_local_blend=p2p_local_blend,
            infedit_cross_replace=infedit_cross_replace, infedit_thresh_e=infedit_thresh_e,
            infedit_thresh_m=infedit_thresh_m,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        source = load_image(image)
        # Check the pairs and which phrases have masks before reading any mask file.
        validate_request(EditRequest(source, pairs, dict.fromkeys(mask_files), edit_type, schedule, seed))
        masks = {p: load_mask(f, source.size, name=p) for p, f in mask_files.items()}
        request = EditRequest(source, pairs, masks, edit_type=edit_type, schedule=schedule, seed=seed)
        models = load_diffusion_models(model, device, dtype)
        detect = None
        if method == "ale" and any(p not in masks for p, _ in pairs):
            detect = _detector(detector or (TINY if model == TINY else DEFAULT_DETECTOR),
                               segmenter or (TINY if model == TINY else DEFAULT_SEGMENTER),
                               device, dtype, box_threshold, text_threshold)
        result = Editor(models, settings, detect).edit(request)
    except EditInputError as exc:
        raise click.ClickException(str(exc)) from exc
    save_image(output, result.image)
    record = dict(result.record, image=str(image), output=str(output), mask_files={p: str(f) for p, f in mask_files.items()})
    if save_masks is not None:
        record["saved_masks"] = {}
        for phrase, mask in result.masks.items():
            if mask is not None:
                path = Path(save_masks) / mask_file_name(phrase)
                save_image(path, Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)))
                record["saved_masks"][phrase] = str(path)
    write_json(output.with_suffix(".json"), record)
    click.echo(f"wrote {output} and {output.with_suffix('.json')} ({result.record['seconds']:.1f} s)")
    for fallback in result.record["fallbacks"]:
        click.echo(f"warning: {fallback}", err=True)


def _detector(detector, segmenter, device, dtype, box_threshold, text_threshold):
    from ..grounding import detect_masks, load_grounding_models

    models = load_grounding_models(detector=detector, segmenter=segmenter, device=device, dtype=dtype)
    return functools.partial(detect_masks, models=models, box_threshold=box_threshold, text_threshold=text_threshold)
