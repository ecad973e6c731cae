"""``ale-edit convert-sam``: a segment-anything checkpoint becomes a transformers SAM folder that segments a box as
segment-anything's own predictor does.

The image encoder is segment-anything's ViT-B (width 768, 12 heads, its prompt encoder and mask decoder in full) at
depth 2 instead of 12, one windowed and one global-attention block, so the test takes seconds: the conversion reads
depth and global blocks from the checkpoint, so the same code converts the full ViT-B/L/H.
"""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ale_edit.cli import main
from ale_edit.commands.convert_sam import sam_config, transformers_key, transformers_state
from ale_edit.grounding import load_grounding_models, segment_boxes

segment_anything = pytest.importorskip("segment_anything")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from segment_anything.build_sam import _build_sam

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sam = _build_sam(encoder_embed_dim=768, encoder_depth=2, encoder_num_heads=12, encoder_global_attn_indexes=[1],
                         checkpoint=None)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_depth2.pth"
    torch.save(sam.state_dict(), path)
    return sam.eval(), path


def test_converted_checkpoint_segments_a_box_as_segment_anything(checkpoint, tmp_path):
    sam, path = checkpoint
    out = tmp_path / "sam-hf"
    result = CliRunner().invoke(main, ["convert-sam", str(path), str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (SAM vit_b)" in result.output
    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    box = [20, 10, 90, 70]
    predictor = segment_anything.SamPredictor(sam)
    predictor.set_image(image)
    logits, _, _ = predictor.predict(box=np.array(box), multimask_output=False, return_logits=True)
    models = load_grounding_models("tiny", str(out), device="cpu")
    (mask,) = segment_boxes(Image.fromarray(image), [box], models)
    expected = logits[0] > 0  # SamPredictor's mask_threshold
    assert 0 < expected.sum() < expected.size
    assert np.abs(logits[0]).min() > 1e-6  # no pixel sits on the threshold: equality is not luck
    assert np.array_equal(mask, expected)


@pytest.mark.parametrize("width,depth,heads,global_blocks,name", [
    (768, 12, 12, [2, 5, 8, 11], "vit_b"), (1024, 24, 16, [5, 11, 17, 23], "vit_l"),
    (1280, 32, 16, [7, 15, 23, 31], "vit_h"),
])
def test_each_published_sam_maps_onto_sam_model_key_for_key(width, depth, heads, global_blocks, name):
    """segment-anything's build_sam_vit_b/l/h, built on the meta device (shapes, no weights)."""
    from segment_anything.build_sam import _build_sam
    from transformers import SamModel

    with torch.device("meta"):
        state = _build_sam(encoder_embed_dim=width, encoder_depth=depth, encoder_num_heads=heads,
                           encoder_global_attn_indexes=global_blocks, checkpoint=None).state_dict()
        config, found = sam_config(state)
        expected = SamModel(config).state_dict()
    assert found == name and config.vision_config.global_attn_indexes == global_blocks
    assert config.vision_config.num_attention_heads == heads and config.vision_config.num_hidden_layers == depth
    renamed = transformers_state(state)
    assert set(renamed) == set(expected)
    assert all(renamed[k].shape == expected[k].shape for k in expected)


def test_every_key_is_renamed_as_transformers_names_it():
    assert transformers_key("image_encoder.blocks.3.norm1.weight") == "vision_encoder.layers.3.layer_norm1.weight"
    assert transformers_key("mask_decoder.output_hypernetworks_mlps.2.layers.1.bias") == \
        "mask_decoder.output_hypernetworks_mlps.2.layers.0.bias"
    assert transformers_key("mask_decoder.iou_prediction_head.layers.2.weight") == \
        "mask_decoder.iou_prediction_head.proj_out.weight"
    assert transformers_key("prompt_encoder.mask_downscaling.4.bias") == "prompt_encoder.mask_embed.layer_norm2.bias"


def test_what_is_not_a_segment_anything_checkpoint_is_named(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    result = CliRunner().invoke(main, ["convert-sam", str(bad), str(tmp_path / "out")])
    assert result.exit_code == 1 and "not a segment-anything SAM state dict" in result.output
    (tmp_path / "text.pth").write_text("not a checkpoint")
    result = CliRunner().invoke(main, ["convert-sam", str(tmp_path / "text.pth"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "cannot read" in result.output and len(result.output.strip().splitlines()) == 1
