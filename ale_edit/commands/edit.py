"""``ale-edit edit``: edit one image with ALE-Edit or a baseline.

The sampler's options come from the settings dataclass's fields (``settings.EditSettings``), the methods and
their labels from the registry (``methods``); the default method's options are flags of their own (its Options
dataclass's fields: ``--no-bb``, ``--eos``, ...), any method's can be set with ``--set METHOD.KEY=VALUE``.
Everything is checked before a model loads.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ..atomic import OutputWriteError, save_image, write_json
from ..edit_types import EDIT_TYPE_KEYS, EDIT_TYPES
from ..editor import MAX_SEED, EditRequest, Editor, validate_request
from ..errors import EditInputError
from ..io import load_mask, orientation_note, read_image, save_mask
from ..methods import DEFAULT_METHOD, method_class, method_classes, method_names
from ..compat import provenance
from ..models import (
    DEFAULT_DETECTOR, DEFAULT_DETECTOR_DTYPE, DEFAULT_DIFFUSION_MODEL, DEFAULT_SEGMENTER, DTYPES, TINY,
    grounding_model_names, load_diffusion_models, resolve_device, resolve_dtype,
)
from ..options import SettingError
from ..pairs import PairError, mask_file_name, parse_pair, split_assignment
from ..paths import check_output_image_path
from ..preflight import check_models, diffusion_need, grounding_needs
from ..settings import EditSettings
from ..text import check_edit_lengths
from .options import Number, given, parse_sets, settings_options

DEFAULT_OPTIONS = method_class(DEFAULT_METHOD).Options  # the default method's options: flags of their own


def methods_help() -> str:
    """Every method with its label, the default first."""
    return "; ".join(f"{name}: {cls.label}" for name, cls in method_classes().items())


@click.command("edit")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-e", "--edit", "edits", multiple=True, required=True, metavar="SOURCE=TARGET",
              help='An object to edit and what it becomes, e.g. -e "cup=cup made of gold". 1 to 3 of them.')
@click.option("--mask", "mask_args", multiple=True, metavar="SOURCE=FILE",
              help="A mask file for a source phrase; phrases without one are found with Grounded-SAM.")
@click.option("--type", "edit_type", type=click.Choice(EDIT_TYPES + tuple(k for k in EDIT_TYPE_KEYS
                                                                         if k not in EDIT_TYPES)), default=None,
              help="Edit type: picks the self-attention injection schedule.")
@click.option("--schedule", type=Number("schedule", 0, 1), default=None,
              help="Fraction of steps with self-attention Q,K injection (overrides --type).")
@click.option("--method", type=click.Choice(method_names()), default=DEFAULT_METHOD, show_default=True,
              help=f"The editing method, all on the same sampler ({methods_help()}).")
@click.option("--set", "set_args", multiple=True, metavar="METHOD.KEY=VALUE",
              help="An option of the method, as in params.yaml, e.g. --set p2p.cross_replace=0.6. Repeatable.")
@settings_options(EditSettings, "edit")
@settings_options(DEFAULT_OPTIONS)
@click.option("--model", default=DEFAULT_DIFFUSION_MODEL, show_default=True,
              help="Diffusion model: hub id, local diffusers folder, or 'tiny' (random weights, offline, every "
                   "model tiny).")
@click.option("--detector", default=None, help=f"Grounding DINO id or folder [default: {DEFAULT_DETECTOR}].")
@click.option("--segmenter", default=None,
              help=f"SAM or SAM 2 id or transformers folder (a segment-anything .pth: convert it with ale-edit "
                   f"convert-sam) [default: {DEFAULT_SEGMENTER}; --compat authors: facebook/sam2.1-hiera-large].")
@click.option("--detector-dtype", default=DEFAULT_DETECTOR_DTYPE, show_default=True,
              type=click.Choice(("auto", *DTYPES)),
              help="Grounding DINO's and SAM's dtype, apart from --dtype: their thresholds can flip in fp16.")
@click.option("--seed", default=42, show_default=True, type=click.IntRange(0, MAX_SEED))
@click.option("--box-threshold", default=0.45, show_default=True, type=Number("masks.box_threshold", 0, 1))
@click.option("--text-threshold", default=0.4, show_default=True, type=Number("masks.text_threshold", 0, 1))
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="auto: fp16 on CUDA, fp32 on CPU.")
@click.option("--save-masks", type=click.Path(path_type=Path), default=None, help="Write the masks used here.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The edited image (.png, .jpg, .webp, ...); its JSON record is written beside it.")
def edit(image, edits, mask_args, edit_type, schedule, method, set_args, model, detector, segmenter, detector_dtype,
         seed, box_threshold, text_threshold, device, dtype, save_masks, output, **settings):
    """Edit IMAGE: each -e SOURCE=TARGET changes one object; writes the image and a JSON record beside it."""
    try:
        pairs = [parse_pair(e) for e in edits]
    except PairError as exc:
        raise click.BadParameter(str(exc), param_hint="-e/--edit") from exc
    try:
        mask_files = dict(split_assignment(m, "SOURCE=FILE") for m in mask_args)
    except PairError as exc:
        raise click.BadParameter(str(exc), param_hint="--mask") from exc
    edit_settings = build_settings(method, settings, set_args)
    try:
        resolve_dtype(resolve_device(device), dtype)  # a device or dtype this machine lacks: named, up front
        check_output_image_path(output)
        if save_masks is not None:
            check_output_image_path(Path(save_masks) / mask_file_name("mask"))
        source, orientation = read_image(image)  # as it displays: its EXIF orientation applied
        # Check the pairs and which phrases have masks before reading any mask file.
        validate_request(EditRequest(source, pairs, dict.fromkeys(mask_files), edit_type, schedule, seed))
        check_edit_lengths(pairs)  # the tokenizer alone: an over-long phrase is named before a model loads
        masks = {p: load_mask(f, source.size, name=p) for p, f in mask_files.items()}
        request = EditRequest(source, pairs, masks, edit_type=edit_type, schedule=schedule, seed=seed)
        grounding = grounding_model_names(edit_settings.compat, detector, segmenter, tiny=model == TINY)
        detects = method_class(method).uses_masks and any(p not in masks for p, _ in pairs)
        # Every model this edit needs is found before any loads: a missing one is named in seconds.
        check_models([diffusion_need(model)]
                     + (grounding_needs(grounding["detector"], grounding["segmenter"]) if detects else []))
        models = load_diffusion_models(model, device, dtype)
        editor = Editor(models, edit_settings)
        if detects:
            editor.detector = _detector(grounding["detector"], grounding["segmenter"], device, detector_dtype,
                                        box_threshold, text_threshold)
        result = editor.edit(request)
    except EditInputError as exc:
        raise click.ClickException(str(exc)) from exc
    record = dict(result.record, image=str(image), output=str(output),
                  mask_files={p: str(f) for p, f in mask_files.items()}, exif_orientation=orientation)
    if note := orientation_note(image, orientation):
        record["warnings"] = [f"{note}; edited so, the output is stored upright", *record["warnings"]]
    if detects:
        record["grounding"] = grounding_record(grounding, edit_settings.compat, detector_dtype)
    try:
        if save_masks is not None:
            record["saved_masks"] = {}
            for phrase, mask in result.masks.items():
                if mask is not None:
                    path = Path(save_masks) / mask_file_name(phrase)
                    save_mask(path, mask)
                    record["saved_masks"][phrase] = str(path)
        save_image(output, result.image)
        write_json(output.with_suffix(".json"), record)
    except OutputWriteError as exc:  # a full disk: named, and no half-written file
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {output} and {output.with_suffix('.json')} ({result.record['seconds']:.1f} s)")
    for note in record["fallbacks"] + record["warnings"]:
        click.echo(f"warning: {note}", err=True)


def build_settings(method: str, values: dict, set_args) -> EditSettings:
    """The edit's settings from the common options, the default method's flags and ``--set``; named errors, no
    model."""
    flags_given = given(DEFAULT_OPTIONS, values)
    if flags_given and method != DEFAULT_METHOD:
        flags = ", ".join("--" + k.replace("_", "-") for k in flags_given)
        raise click.UsageError(f"{flags}: options of {method_class(DEFAULT_METHOD).label}, not of --method "
                               f"{method} (its options: --set {method}.KEY=VALUE)")
    sets = parse_sets(set_args, method_names())
    others = sorted(set(sets) - {method})
    if others:
        raise click.UsageError(f"--set {others[0]}.*: options of {others[0]}, but --method is {method}")
    try:
        return EditSettings(method=method, options={**flags_given, **sets.get(method, {})},
                            **given(EditSettings, values))
    except SettingError as exc:
        raise click.UsageError(str(exc)) from exc


def grounding_record(names: dict, compat_profile: str, detector_dtype: str) -> dict:
    """The edit record's ``grounding``: the detector and segmenter used, their dtype, and whether the segmenter is
    the compat profile's (``model.segmenter``) or another."""
    return {**names, "dtype": detector_dtype,
            "compat": provenance(compat_profile, {"model.segmenter": names["segmenter"]}, prefix="model.")}


def _detector(detector, segmenter, device, dtype, box_threshold, text_threshold):
    from ..grounding import detect_masks, load_grounding_models

    models = load_grounding_models(detector=detector, segmenter=segmenter, device=device, dtype=dtype)
    return functools.partial(detect_masks, models=models, box_threshold=box_threshold, text_threshold=text_threshold)
