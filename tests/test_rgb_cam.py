"""RGB-CAM: masked cross-attention and region blending with ORE values, in the target-conditional chunk."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from ale_edit.processors import to_heads as _to_heads
from ale_edit.methods.ale.rgb_cam import RegionGuidance, RegionGuidedCrossAttention

T, D = 77, 16


def make_attention(cross: bool) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=12, cross_attention_dim=D if cross else None, heads=3, dim_head=4).eval()


def make_controller(masks, owner, restricted=None, region_values=None):
    """RGB-CAM's state for these masks and token owners (random region values unless given)."""
    b, k_, h, w = masks.shape
    restricted = torch.ones(b, k_, dtype=torch.bool) if restricted is None else restricted
    if region_values is None:
        torch.manual_seed(1)
        region_values = torch.randn(b, 1 + k_, T, D)
    return RegionGuidance(object_masks=masks, restricted=restricted, token_owner=owner, region_values=region_values)


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


