"""The metric definitions as pure functions: background fidelity (binary and soft weights), LPIPS' map, CLIP's
masked pixels and leakage pairing, DINO's input and keys."""

import math

import numpy as np
import pytest
import torch

from ale_edit.bench.metric_models import build_lpips
from ale_edit.bench.metrics import (
    BACKGROUND, background_metrics, clip_region_metrics, dino_preprocess, dino_self_similarity,
    keys_self_similarity, lpips_with_map, ssim_with_map, weighted_pixels,
)
from scoring_helpers import models  # noqa: F401  (fixture)



# -- background fidelity ------------------------------------------------------------------------------------


def test_mse_and_psnr_by_hand():
    source = torch.zeros(1, 3, 8, 8)
    edited = source.clone()
    edited[0, :, 0, 0] = 0.5  # a background pixel, off by 0.5 in all channels
    edited[0, :, 7, 7] = 1.0  # inside the edited object: must not count
    background = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    background[..., 4:, 4:] = False  # 16 object pixels, 48 background pixels
    out = background_metrics(source, edited, background, lpips=None)
    # whole image (published): 3 channels x 0.25 over 3 x 64 values
    assert out["bg_mse"].item() == pytest.approx(0.25 / 64)
    assert out["bg_psnr"].item() == pytest.approx(10 * math.log10(64 / 0.25))
    # background pixels only: over 3 x 48 values
    assert out["bg_mse_region"].item() == pytest.approx(0.25 / 48)
    assert out["bg_psnr_region"].item() == pytest.approx(10 * math.log10(48 / 0.25))
    assert math.isnan(out["bg_lpips"].item())  # no LPIPS net given

    from torchmetrics.image import PeakSignalNoiseRatio

    published = PeakSignalNoiseRatio(data_range=1.0)(edited * background, source * background)
    assert out["bg_psnr"].item() == pytest.approx(published.item())


def test_ssim_is_torchmetrics_and_matches_scikit_image_inside():
    from skimage.metrics import structural_similarity
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    rng = np.random.default_rng(1)
    a = rng.random((64, 80, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ta, tb = (torch.from_numpy(x).permute(2, 0, 1)[None].contiguous() for x in (a, b))
    reference = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1, channel_axis=2)
    values, full = ssim_with_map(tb, ta)
    # scikit-image averages the map without its 5-pixel border; torchmetrics' map there is the same.
    assert full[..., 5:-5, 5:-5].mean().item() == pytest.approx(reference, abs=1e-4)
    # torchmetrics averages the whole map, reflect-padded borders included: close, not equal.
    assert abs(values.item() - reference) < 5e-3
    everything = torch.ones(1, 1, 64, 80, dtype=torch.bool)
    out = background_metrics(ta, tb, everything, lpips=None)
    published = StructuralSimilarityIndexMeasure(data_range=1.0)(tb, ta).item()
    assert out["bg_ssim"].item() == pytest.approx(published, abs=1e-6)
    assert out["bg_ssim_region"].item() == pytest.approx(published, abs=1e-6)


def test_ssim_in_strips_is_the_one_call_map():
    from torchmetrics.functional.image import structural_similarity_index_measure

    rng = np.random.default_rng(14)
    a = torch.from_numpy(rng.random((2, 3, 61, 40), dtype=np.float32))
    b = torch.from_numpy(rng.random((2, 3, 61, 40), dtype=np.float32))
    values, full = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none",
                                                       return_full_image=True)
    for strip_pixels in (None, 2 * 40 * 6, 2 * 40 * 20, 10**6):  # 6-row strips (the least), 20 rows, one strip
        got_values, got_map = ssim_with_map(a, b, strip_pixels=strip_pixels)
        assert torch.equal(got_map, full) and torch.equal(got_values, values), strip_pixels


def test_changes_inside_the_objects_do_not_touch_background_metrics(models):
    rng = np.random.default_rng(2)
    source = torch.from_numpy(rng.random((2, 3, 64, 64), dtype=np.float32))
    background = torch.ones(2, 1, 64, 64, dtype=torch.bool)
    background[:, :, 16:48, 16:48] = False
    inside = torch.where(background, source, torch.rand_like(source))
    out = background_metrics(source, inside, background, lpips=models.lpips)
    assert torch.all(out["bg_mse"] == 0) and torch.all(out["bg_lpips"] == 0) and torch.all(out["bg_lpips_region"] == 0)
    assert torch.allclose(out["bg_ssim_region"], torch.ones(2, dtype=torch.float64), atol=1e-6)

    outside = torch.where(background, torch.rand_like(source), source)
    out = background_metrics(source, outside, background, lpips=models.lpips)
    fraction = background.float().mean().item()
    # the region MSE is the whole-image MSE renormalised to the background's share of the pixels
    assert torch.allclose(out["bg_mse_region"], out["bg_mse"] / fraction, rtol=1e-4)
    assert torch.all(out["bg_psnr_region"] < out["bg_psnr"])
    assert torch.all(out["bg_ssim_region"] < out["bg_ssim"])


def _grey_edged_weight(size: int = 16) -> np.ndarray:
    """Background weight 1 - M of a square object with an antialiased edge: 0 inside, 1 - 128/255 on its ring."""
    levels = np.zeros((size, size), np.uint8)
    levels[4:12, 4:12] = 128  # the edge ring
    levels[5:11, 5:11] = 255  # the object
    return 1.0 - levels / 255.0


def test_soft_weights_by_hand(models):
    rng = np.random.default_rng(11)
    source = rng.random((3, 16, 16), dtype=np.float32)
    edited = np.clip(source + rng.normal(0, 0.2, source.shape), 0, 1).astype(np.float32)
    w = _grey_edged_weight()
    w32 = w.astype(np.float32)
    out = background_metrics(torch.from_numpy(source)[None], torch.from_numpy(edited)[None],
                             torch.from_numpy(w)[None, None], lpips=models.lpips)
    # published: both images times the weight (float32), MSE and PSNR over the whole image
    s, e = source * w32, edited * w32
    mse = np.mean((e.astype(np.float64) - s.astype(np.float64)) ** 2)
    assert out["bg_mse"].item() == pytest.approx(mse, rel=1e-6)
    assert out["bg_psnr"].item() == pytest.approx(10 * math.log10(1 / mse), rel=1e-6)
    # region: the squared-error map of the masked images, weighted by w, over channels x sum(w)
    region = (w * ((e.astype(np.float64) - s) ** 2)).sum() / (3 * w.sum())
    assert out["bg_mse_region"].item() == pytest.approx(region, rel=1e-6)
    assert out["bg_psnr_region"].item() == pytest.approx(10 * math.log10(1 / region), rel=1e-6)
    assert region != pytest.approx(mse / (w > 0).mean(), rel=1e-3)  # the grey ring counts by its weight
    _, ssim_map = ssim_with_map(torch.from_numpy(e)[None], torch.from_numpy(s)[None])
    ssim_region = (w * ssim_map[0].double().numpy()).sum() / (3 * w.sum())
    assert out["bg_ssim_region"].item() == pytest.approx(ssim_region, abs=1e-6)
    _, lpips_map = lpips_with_map(models.lpips, torch.from_numpy(e)[None] * 2 - 1, torch.from_numpy(s)[None] * 2 - 1)
    lpips_region = (w * lpips_map[0, 0].double().numpy()).sum() / w.sum()
    assert out["bg_lpips_region"].item() == pytest.approx(lpips_region, rel=1e-6)


def test_binary_weights_as_floats_or_bools_agree(models):
    rng = np.random.default_rng(12)
    source = torch.from_numpy(rng.random((2, 3, 32, 32), dtype=np.float32))
    edited = torch.from_numpy(rng.random((2, 3, 32, 32), dtype=np.float32))
    background = torch.ones(2, 1, 32, 32, dtype=torch.bool)
    background[0, :, 8:20, 8:20] = False
    background[1] = False  # nothing outside the edit: NaN
    as_bool = background_metrics(source, edited, background, models.lpips)
    as_float = background_metrics(source, edited, background.double(), models.lpips)
    for name, value in as_bool.items():
        assert torch.equal(value[:1], as_float[name][:1]), name
        assert value[1].isnan() and as_float[name][1].isnan(), name


def test_lpips_map_comes_from_the_same_pass_as_its_value():
    """One pass gives torchmetrics' per-image LPIPS and exactly the map of LPIPS' own spatial mode."""
    from torchmetrics.functional.image.lpips import _lpips_update

    rng = np.random.default_rng(13)
    a = torch.from_numpy(rng.random((2, 3, 72, 96), dtype=np.float32)) * 2 - 1
    b = torch.from_numpy(rng.random((2, 3, 72, 96), dtype=np.float32)) * 2 - 1
    for net in (build_lpips("tiny"), build_lpips("squeeze", pretrained_backbone=False)):
        with torch.no_grad():
            values, spatial = lpips_with_map(net, a, b)
            assert torch.equal(values, _lpips_update(a, b, net, normalize=False))
            net.spatial = True
            try:
                reference = net(a, b)
            finally:
                net.spatial = False
        assert spatial.shape == (2, 1, 72, 96) and torch.equal(spatial, reference)
        assert torch.all(values > 0)


# -- CLIP ------------------------------------------------------------------------------------------------------


def test_weighted_pixels_truncate_like_the_authors():
    image = np.array([[[10, 200, 255], [7, 9, 255]]], dtype=np.uint8)  # 1x2 pixels
    weight = np.array([[0.5, 128 / 255]])
    out = weighted_pixels(image, weight)
    assert out.dtype == np.uint8
    # float64 products truncated, not rounded: 255 * 0.5 = 127.5 -> 127, 7 * 128/255 = 3.51 -> 3, 9 * 128/255 = 4.52 -> 4
    assert out.tolist() == [[[5, 100, 127], [3, 4, 128]]]
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(weighted_pixels(image, mask.astype(np.float64)), np.where(mask[..., None], image, 0))


def test_leakage_pairs_from_known_scores():
    targets = ["t0", "t1", "t2"]
    v = [[1, 2, 4], [8, 16, 32], [64, 128, 256]]  # CLIP(I_e x m_j, y_i) = v[i][j]
    table = {(j, targets[i]): v[i][j] for i in range(3) for j in range(3)}
    table.update({(BACKGROUND, "t0"): 1000, (BACKGROUND, "t1"): 2000, (BACKGROUND, "t2"): 6000,
                  (BACKGROUND, "t0 and t1 and t2"): 5})
    out = clip_region_metrics(targets, lambda region, text: table[(region, text)])
    assert out["ti_leakage"] == pytest.approx((2 + 4 + 8 + 32 + 64 + 128) / 6)
    assert out["edited_clip"] == pytest.approx((1 + 16 + 256) / 3)
    assert out["te_leakage"] == pytest.approx(3000)
    assert out["te_leakage_joined"] == 5

    one = clip_region_metrics(["t1"], lambda region, text: table[(region, text)] if region == BACKGROUND
                              else {0: 7}[region] + (text == "t1"))
    assert math.isnan(one["ti_leakage"])
    assert one["edited_clip"] == 8 and one["te_leakage"] == 2000 and one["te_leakage_joined"] == 2000
    none = clip_region_metrics(["t0"], lambda region, text: table[(0, text)], has_background=False)
    assert math.isnan(none["te_leakage"]) and math.isnan(none["te_leakage_joined"]) and none["edited_clip"] == 1


# -- DINO structure distance -----------------------------------------------------------------------------------


def test_structure_uses_last_layer_keys_with_cls(models):
    rng = np.random.default_rng(7)
    image = torch.from_numpy(rng.integers(0, 256, (1, 3, 100, 300), dtype=np.uint8))
    pixels = dino_preprocess(image, "corrected")
    assert pixels.shape == (1, 3, 160, 480)  # short side 224 would make the long side 672 > 480
    model = models.dino
    with torch.no_grad():
        sim = dino_self_similarity(model, pixels)
        hidden = model(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states
        last = model.layers[-1]
        keys = last.attention.k_proj(last.layernorm_before(hidden[-2]))
    assert keys.shape == (1, 1 + (160 // 8) * (480 // 8), 32)
    assert torch.allclose(sim, keys_self_similarity(keys), atol=1e-5)
    assert torch.allclose(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(1, keys.shape[1]), atol=1e-5)

    published = dino_preprocess(image, "published")
    # the published input is the corrected one with pixels in 0-255 instead of 0-1, before normalisation
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(published * std + mean, 255 * (pixels * std + mean), atol=1e-2)
