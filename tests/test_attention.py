"""The attention processors and the controller: masked cross-attention, region blending, Q,K injection."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from ale_edit.attention import (
    EditController, RegionGuidedCrossAttention, SelfAttentionInjection, _to_heads, injection_active,
)

T, D = 77, 16


def make_attention(cross: bool) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=12, cross_attention_dim=D if cross else None, heads=3, dim_head=4).eval()


def make_controller(masks, owner, restricted=None, schedules=(1.0,), region_values=None, k=None):
    b, k_, h, w = masks.shape
    restricted = torch.ones(b, k_, dtype=torch.bool) if restricted is None else restricted
    if region_values is None:
        torch.manual_seed(1)
        region_values = torch.randn(b, 1 + k_, T, D)
    return EditController(num_steps=10, schedules=torch.tensor(schedules), object_masks=masks, restricted=restricted,
                          token_owner=owner, region_values=region_values)


@pytest.mark.parametrize("schedule,steps,expected", [
    (1.0, 15, list(range(14))), (0.5, 15, list(range(7))), (0.6, 15, list(range(8))), (0.0, 15, []),
])
def test_injection_schedule(schedule, steps, expected):
    assert [k for k in range(steps) if injection_active(schedule, k, steps)] == expected


def test_self_attention_injection_uses_source_qk_and_own_v():
    attn = make_attention(cross=False)
    torch.manual_seed(2)
    x = torch.randn(8, 6, 12)  # 4 branches x B=2
    ctl = make_controller(torch.ones(2, 1, 2, 3, dtype=torch.bool), torch.full((2, T), -1), schedules=(1.0, 0.0))
    proc = SelfAttentionInjection(ctl)
    ctl.begin_step(0)
    out = proc.attend(attn, x, None)
    q, k, v = (_to_heads(attn, f(x)) for f in (attn.to_q, attn.to_k, attn.to_v))
    plain = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(8, 6, 12)
    # Edit 0 injects (schedule 1.0), edit 1 does not (0.0). Chunks: su=0..1, tu=2..3, sc=4..5, tc=6..7.
    for src, tgt in ((0, 2), (4, 6)):
        injected = F.scaled_dot_product_attention(q[src], k[src], v[tgt]).transpose(0, 1).reshape(6, 12)
        assert torch.allclose(out[tgt], injected, atol=1e-6)
        assert not torch.allclose(out[tgt], plain[tgt], atol=1e-4)
        assert torch.allclose(out[tgt + 1], plain[tgt + 1], atol=1e-6)  # edit 1: untouched
    for source_chunk in (0, 1, 4, 5):
        assert torch.allclose(out[source_chunk], plain[source_chunk], atol=1e-6)


def cross_inputs(b=1, n=6):
    torch.manual_seed(3)
    return torch.randn(4 * b, n, 12), torch.randn(4 * b, T, D)


def test_full_mask_single_object_equals_plain_attention_with_ore_values():
    attn = make_attention(cross=True)
    x, ctx = cross_inputs()
    owner = torch.full((1, T), -1)
    owner[0, 1:4] = 0
    ctl = make_controller(torch.ones(1, 1, 2, 3, dtype=torch.bool), owner)
    out = RegionGuidedCrossAttention(ctl).attend(attn, x, ctx)
    q = _to_heads(attn, attn.to_q(x[3:]))
    k = _to_heads(attn, attn.to_k(ctx[3:]))
    v_ore = _to_heads(attn, attn.to_v(ctl.region_values[:, 1]))
    expected = F.scaled_dot_product_attention(q, k, v_ore).transpose(1, 2).reshape(1, 6, 12)
    assert torch.allclose(out[3:], expected, atol=1e-5)
    # The other branches are plain attention on their own context.
    q0, k0, v0 = (_to_heads(attn, f(a)) for f, a in ((attn.to_q, x[:3]), (attn.to_k, ctx[:3]), (attn.to_v, ctx[:3])))
    plain = F.scaled_dot_product_attention(q0, k0, v0).transpose(1, 2).reshape(3, 6, 12)
    assert torch.allclose(out[:3], plain, atol=1e-5)


def test_object_tokens_get_zero_probability_outside_their_mask():
    attn = make_attention(cross=True)
    x, ctx = cross_inputs()
    masks = torch.zeros(1, 2, 2, 3, dtype=torch.bool)
    masks[0, 0, 0, :2] = True  # object 0: pixels 0, 1
    masks[0, 1, 1, :] = True  # object 1: pixels 3, 4, 5
    owner = torch.full((1, T), -1)
    owner[0, 1:3] = 0
    owner[0, 4:6] = 1
    ctl = make_controller(masks, owner)
    proc = RegionGuidedCrossAttention(ctl)
    q = _to_heads(attn, attn.to_q(x[3:]))
    k = _to_heads(attn, attn.to_k(ctx[3:]))
    probs = proc.masked_probabilities(attn, q, k)[0]  # (heads, N, T)
    inside0, inside1 = masks[0, 0].flatten(), masks[0, 1].flatten()
    assert torch.all(probs[:, ~inside0][:, :, 1:3] == 0)
    assert torch.all(probs[:, inside0][:, :, 1:3] > 0)
    assert torch.all(probs[:, ~inside1][:, :, 4:6] == 0)
    assert torch.all(probs[:, inside1][:, :, 4:6] > 0)
    assert torch.all(probs[:, :, 0] > 0) and torch.all(probs[:, :, 3] > 0)  # BOS and "and": everywhere
    assert torch.allclose(probs.sum(-1), torch.ones(3, 6))


def test_region_blend_uses_each_objects_ore_and_overlaps_count_as_background():
    attn = make_attention(cross=True)
    x, ctx = cross_inputs()
    masks = torch.zeros(1, 2, 2, 3, dtype=torch.bool)
    masks[0, 0, 0, :] = True  # object 0: pixels 0, 1, 2
    masks[0, 1, :, 2] = True  # object 1: pixels 2, 5 (pixel 2 overlaps)
    owner = torch.full((1, T), -1)
    ctl = make_controller(masks, owner)
    proc = RegionGuidedCrossAttention(ctl)
    out = proc.attend(attn, x, ctx)[3]
    q = _to_heads(attn, attn.to_q(x[3:]))
    k = _to_heads(attn, attn.to_k(ctx[3:]))
    probs = proc.masked_probabilities(attn, q, k)
    per_region = [(probs @ _to_heads(attn, attn.to_v(ctl.region_values[:, r]))).transpose(1, 2).reshape(6, 12)
                  for r in range(3)]
    expected_region = [1, 1, 0, 0, 0, 2]  # background 0, object 0 -> 1, object 1 -> 2; pixel 2 claimed twice
    for pixel, region in enumerate(expected_region):
        assert torch.allclose(out[pixel], per_region[region][pixel], atol=1e-5)


def test_unrestricted_object_tokens_attend_everywhere():
    masks = torch.zeros(1, 1, 2, 3, dtype=torch.bool)
    owner = torch.full((1, T), -1)
    owner[0, 1:3] = 0
    ctl = make_controller(masks, owner, restricted=torch.zeros(1, 1, dtype=torch.bool))
    rm = ctl.region_masks(6, torch.device("cpu"), torch.float32)
    assert rm.allowed.all()
    assert torch.equal(rm.regions[0, 0], torch.ones(6)) and torch.equal(rm.regions[0, 1], torch.zeros(6))


def test_masks_follow_each_layer_resolution():
    masks = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks[0, 0, :4, :4] = True  # top-left quadrant
    owner = torch.full((1, T), -1)
    owner[0, 1] = 0
    ctl = make_controller(masks, owner)
    for side in (8, 4, 2):
        rm = ctl.region_masks(side * side, torch.device("cpu"), torch.float32)
        grid = rm.allowed[0, :, 1].reshape(side, side)
        assert grid[: side // 2, : side // 2].all() and grid.sum() == side * side // 4
    with pytest.raises(ValueError, match="cannot place"):
        ctl.region_masks(7, torch.device("cpu"), torch.float32)


def test_layer_indices_follow_the_forward_pass(tiny_models):
    from ale_edit.attention import install_processors, transformer_blocks_in_call_order

    unet = tiny_models.unet
    order = transformer_blocks_in_call_order(unet)
    assert [n.split(".")[0] for n in order] == ["down_blocks"] * 2 + ["mid_block"] + ["up_blocks"] * 4
    seen = []

    class Recorder:
        def __init__(self, is_cross, layer):
            self.is_cross, self.layer = is_cross, layer

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
