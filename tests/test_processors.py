"""Processor installation: every attention layer gets its block's place in the forward pass and its level."""

import torch

from ale_edit.processors import install_processors, transformer_blocks_in_call_order


def test_layer_indices_follow_the_forward_pass(tiny_models):
    unet = tiny_models.unet
    order = transformer_blocks_in_call_order(unet)
    assert [n.split(".")[0] for n in order] == ["down_blocks"] * 2 + ["mid_block"] + ["up_blocks"] * 4
    seen = []

    class Recorder:
        def __init__(self, layer):
            self.is_cross, self.layer = layer.is_cross, layer.index

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
            seen.append((self.layer, self.is_cross))
            from diffusers.models.attention_processor import AttnProcessor2_0

            return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, **kwargs)

    previous = install_processors(unet, Recorder)
    try:
        unet(torch.randn(4, 4, 8, 8), 999, encoder_hidden_states=torch.randn(4, 77, 32))
    finally:
        unet.set_attn_processor(previous)
    # Self then cross attention of block 0, 1, 2, ...: the indices count the blocks in the order they run.
    assert seen == [(i, cross) for i in range(len(order)) for cross in (False, True)]
