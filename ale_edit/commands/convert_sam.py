"""``ale-edit convert-sam``: a segment-anything checkpoint (``sam_vit_h_4b8939.pth``, ViT-B/L/H) as a transformers
``SamModel`` folder, which ``--segmenter`` and ``model.segmenter`` load.

The image encoder's width, depth and global-attention blocks are read from the checkpoint itself (a block with
global attention has relative positions over the whole 64x64 grid, a windowed one over its 14x14 window); the number
of heads is SAM's for that width (ViT-B 12, ViT-L and ViT-H 16). The weights are renamed key by key, none dropped
but the pixel mean and std (the processor's) and none left unset: the mapping is checked both ways.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import click

from ..errors import EditInputError

# segment-anything's image encoder per width: (name, heads), as its build_sam_vit_b/l/h set them.
VARIANTS = {768: ("vit_b", 12), 1024: ("vit_l", 16), 1280: ("vit_h", 16)}

# Substrings of segment-anything's names and transformers' for them, applied in this order.
RENAMES = (
    ("image_encoder.", "vision_encoder."),
    ("patch_embed.proj.", "patch_embed.projection."),
    (".blocks.", ".layers."),
    ("neck.0.", "neck.conv1."),
    ("neck.1.", "neck.layer_norm1."),
    ("neck.2.", "neck.conv2."),
    ("neck.3.", "neck.layer_norm2."),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("point_embeddings.", "point_embed."),
    ("mask_downscaling.0.", "mask_embed.conv1."),
    ("mask_downscaling.1.", "mask_embed.layer_norm1."),
    ("mask_downscaling.3.", "mask_embed.conv2."),
    ("mask_downscaling.4.", "mask_embed.layer_norm2."),
    ("mask_downscaling.6.", "mask_embed.conv3."),
    ("output_upscaling.0.", "upscale_conv1."),
    ("output_upscaling.1.", "upscale_layer_norm."),
    ("output_upscaling.3.", "upscale_conv2."),
    (".norm_final_attn.", ".layer_norm_final_attn."),
)
# The MLP heads: segment-anything's layers.0 / 1 / 2 are transformers' proj_in / layers.0 / proj_out.
MLP_HEAD = re.compile(r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.layers\.(\d)\.")
MLP_LAYERS = {"0": "proj_in", "1": "layers.0", "2": "proj_out"}
NORM = re.compile(r"\.norm(\d)?\.")
PROCESSOR_ONLY = ("pixel_mean", "pixel_std")


def transformers_key(key: str) -> str:
    """The transformers ``SamModel`` name of segment-anything's state dict key ``key``."""
    for old, new in RENAMES:
        key = key.replace(old, new)
    key = MLP_HEAD.sub(lambda m: f"{m.group(1)}.{MLP_LAYERS[m.group(2)]}.", key)
    return NORM.sub(lambda m: f".layer_norm{m.group(1) or ''}.", key)


def transformers_state(state: dict) -> dict:
    """segment-anything's state dict under transformers' ``SamModel`` names (the pixel mean and std left out)."""
    renamed = {transformers_key(k): v for k, v in state.items() if k not in PROCESSOR_ONLY}
    # transformers keeps the prompt encoder's positional matrix twice: the image's copy is the same tensor.
    shared = renamed["prompt_encoder.shared_embedding.positional_embedding"]
    renamed["shared_image_embedding.positional_embedding"] = shared
    return renamed


def sam_config(state: dict):
    """The ``SamConfig`` of a segment-anything state dict, and the variant's name (``vit_b`` ...)."""
    from transformers import SamConfig, SamVisionConfig

    try:
        width = state["image_encoder.patch_embed.proj.weight"].shape[0]
        blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
        grid = state["image_encoder.pos_embed"].shape[1]
        global_blocks = [i for i in blocks
                         if state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] == 2 * grid - 1]
    except (KeyError, AttributeError, IndexError) as exc:
        raise EditInputError(f"not a segment-anything SAM state dict (no {exc})") from None
    if width not in VARIANTS:
        raise EditInputError(f"a SAM image encoder of width {width}: segment-anything's are {sorted(VARIANTS)}")
    name, heads = VARIANTS[width]
    vision = SamVisionConfig(hidden_size=width, num_hidden_layers=len(blocks), num_attention_heads=heads,
                             global_attn_indexes=global_blocks)
    return SamConfig(vision_config=vision), name


def convert(checkpoint: str | Path, out_dir: str | Path) -> str:
    """Write ``out_dir`` (a ``SamModel`` with its ``SamProcessor``) from a segment-anything checkpoint; returns the
    variant's name."""
    import torch
    from transformers import SamModel, SamProcessor
    from transformers.models.sam.image_processing_sam import SamImageProcessor

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise EditInputError(f"cannot read {str(checkpoint)!r} as a PyTorch checkpoint ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())})") from None
    if not isinstance(state, dict):
        raise EditInputError(f"{str(checkpoint)!r} holds a {type(state).__name__}, not a state dict")
    config, name = sam_config(state)
    model = SamModel(config)
    renamed = transformers_state(state)
    expected = model.state_dict()
    unknown, missing = sorted(set(renamed) - set(expected)), sorted(set(expected) - set(renamed))
    wrong = sorted(k for k in set(renamed) & set(expected) if renamed[k].shape != expected[k].shape)
    if unknown or missing or wrong:
        raise EditInputError(f"{str(checkpoint)!r} does not map onto SamModel ({name}): unknown {unknown[:5]}, "
                             f"missing {missing[:5]}, of another shape {wrong[:5]}")
    model.load_state_dict(renamed, strict=True)
    SamProcessor(image_processor=SamImageProcessor()).save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return name


@click.command("convert-sam")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def convert_sam(checkpoint, out_dir):
    """Convert a segment-anything CHECKPOINT (.pth, ViT-B/L/H) into OUT_DIR, a transformers SAM folder for
    --segmenter / model.segmenter."""
    try:
        name = convert(checkpoint, out_dir)
    except EditInputError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out_dir} (SAM {name}); use it as --segmenter {out_dir}")
