"""ALE-Bench scoring: metric definitions, what the models see, bad input, aggregates and the ``score`` command."""

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ale_edit.bench.dataset import EDIT_TYPES, load_prompt_instances, masks_for_image, image_path
from ale_edit.bench.metric_models import build_tiny_clip, load_metric_models
from ale_edit.bench.scoring import (
    BACKGROUND, METRIC_COLUMNS, PIXEL_METRICS, EditRecord, Scorer, aggregate, background_metrics,
    clip_region_metrics, dino_preprocess, dino_self_similarity, empty_row, keys_self_similarity, per_edit_frame,
    prepare_edit, ssim_with_map, to_jsonable,
)
from ale_edit.commands.score import score
from ale_edit.io import load_mask

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@pytest.fixture(scope="module")
def models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_metric_models("tiny", device="cpu")


def scorer_for(models, **kwargs) -> Scorer:
    return Scorer(models, progress=False, **kwargs)


def write_edit(tmp_path: Path, name: str, source: np.ndarray, edited: np.ndarray | None, masks: dict,
               targets: list[str], edit_type: str = "color") -> EditRecord:
    """Write PNGs for an edit (``edited=None``: the source file itself is the edit) and return its record."""
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(source).save(folder / "source.png")
    if edited is not None:
        Image.fromarray(edited).save(folder / "edited.png")
    mask_paths = {}
    for phrase, mask in masks.items():
        mask_paths[phrase] = folder / f"{phrase}_mask.png"
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(mask_paths[phrase])
    sources = list(masks)[: len(targets)]
    return EditRecord(
        edit_id=name, source_image=folder / "source.png",
        edited_image=folder / ("source.png" if edited is None else "edited.png"), masks=mask_paths,
        edits=tuple(zip(sources, targets)), edit_type=edit_type, n_objects=len(targets), image=name, index=0,
    )


def box(shape, top, left, bottom, right) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


# -- identity and background fidelity ----------------------------------------------------------------------------


def test_identity_is_perfect_and_a_background_change_is_not(tmp_path, models):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    masks = {"cup": box((96, 128), 10, 20, 40, 60), "book": box((96, 128), 50, 70, 90, 120)}
    damaged = source.copy()
    damaged[0:30, 70:128] = rng.integers(0, 256, (30, 58, 3), dtype=np.uint8)  # outside both objects
    same = write_edit(tmp_path, "same", source, None, masks, ["red cup", "blue book"])
    changed = write_edit(tmp_path, "changed", source, damaged, masks, ["red cup", "blue book"])
    df = scorer_for(models).score_records([same, changed])

    row = df.iloc[0]
    assert row["error"] is None
    assert row["bg_mse"] == 0 and row["bg_mse_region"] == 0
    assert row["bg_psnr"] == math.inf and row["bg_psnr_region"] == math.inf  # kept, not capped
    assert row["bg_ssim"] == pytest.approx(1, abs=1e-6) and row["bg_ssim_region"] == pytest.approx(1, abs=1e-6)
    assert row["bg_lpips"] == 0 and row["bg_lpips_region"] == 0
    assert row["structure_distance"] == pytest.approx(0, abs=1e-12)
    assert row["bg_fraction"] == pytest.approx(1 - (masks["cup"] | masks["book"]).mean())

    other = df.iloc[1]
    assert other["bg_mse"] > 0 and math.isfinite(other["bg_psnr"]) and other["bg_ssim"] < 0.99
    assert other["bg_lpips"] > 0 and other["bg_lpips_region"] > 0 and other["structure_distance"] > 0


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


def test_empty_background_gives_nan_not_an_error(tmp_path, models):
    source = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    record = write_edit(tmp_path, "all", source, None, {"wall": np.ones((64, 64), bool)}, ["brick wall"])
    row = scorer_for(models).score_records([record]).iloc[0]
    assert row["error"] is None and row["bg_fraction"] == 0
    for name in PIXEL_METRICS + ("te_leakage", "te_leakage_joined", "ti_leakage"):
        assert math.isnan(row[name]), name
    assert not math.isnan(row["edited_clip"]) and not math.isnan(row["structure_distance"])


# -- CLIP ------------------------------------------------------------------------------------------------------


def _hand_cosines(models, images, texts) -> np.ndarray:
    clip = models.clip
    pixels = models.clip_processor(images=[Image.fromarray(a) for a in images], return_tensors="pt")["pixel_values"]
    tokens = models.clip_tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)
        txt = clip.text_projection(clip.text_model(**tokens).pooler_output)
    return torch.nn.functional.cosine_similarity(img[:, None], txt[None], dim=-1).numpy()


def test_clip_score_is_100_times_positive_cosine(models):
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (50 + 30 * i, 70, 3), dtype=np.uint8) for i in range(3)]
    texts = ["a red cup", "a photo of a dog and a cat"]
    cos = _hand_cosines(models, images, texts)
    got = scorer_for(models).clip_scores(images, texts)
    np.testing.assert_allclose(got, 100 * np.maximum(cos, 0), atol=1e-4)
    # The same with the text projection negated: every cosine changes sign, so the clamp is exercised both ways.
    weight = models.clip.text_projection.weight
    try:
        with torch.no_grad():
            weight.neg_()
        flipped = scorer_for(models).clip_scores(images, texts)
    finally:
        with torch.no_grad():
            weight.neg_()
    np.testing.assert_allclose(flipped, 100 * np.maximum(-cos, 0), atol=1e-4)
    assert (got > 0).sum() + (flipped > 0).sum() == cos.size and np.abs(cos).min() > 1e-3


def test_clip_sees_the_edited_image_with_masked_pixels_black(tmp_path, models):
    rng = np.random.default_rng(5)
    source = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    edited = rng.integers(1, 256, (224, 224, 3), dtype=np.uint8)  # no pixel is black by itself
    masks = {"cup": box((224, 224), 0, 0, 100, 100), "book": box((224, 224), 120, 60, 200, 224)}
    record = write_edit(tmp_path, "seen", source, edited, masks, ["red cup", "blue book"])
    seen = []
    handle = models.clip.vision_model.register_forward_pre_hook(
        lambda _m, _args, kwargs: seen.append(kwargs["pixel_values"].clone()), with_kwargs=True)
    try:
        scorer_for(models).score_records([record])
    finally:
        handle.remove()
    seen = torch.cat(seen).numpy()
    union = masks["cup"] | masks["book"]
    expected = [np.where(m[..., None], edited, 0) for m in (~union, masks["cup"], masks["book"])]
    assert len(seen) == len(expected)  # I_e x (1 - M), I_e x m_cup, I_e x m_book; nothing else
    black = (-CLIP_MEAN / CLIP_STD)[:, None]
    for pixels, mask in zip(expected, (~union, masks["cup"], masks["book"])):
        normalised = ((pixels / 255.0 - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1).astype(np.float32)
        match = [k for k in range(len(seen)) if np.allclose(seen[k], normalised, atol=1e-5)]
        assert len(match) == 1
        np.testing.assert_allclose(seen[match[0]][:, ~mask], np.broadcast_to(black, (3, (~mask).sum())), atol=1e-5)


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


class _RegionCodeScorer(Scorer):
    """CLIP replaced by a lookup keyed on which region an image shows (read from its grey levels)."""

    codes = {50: BACKGROUND, 100: 0, 150: 1, 200: 2}

    def __init__(self, models, table, texts):
        super().__init__(models, progress=False)
        self.table, self.texts, self.background_levels = table, texts, []

    def clip_scores(self, images, texts):
        out = np.zeros((len(images), len(texts)))
        for r, image in enumerate(images):
            levels = set(np.unique(image)) - {0}
            if 50 in levels:
                self.background_levels.append(levels)
                region = BACKGROUND
            else:
                (level,) = levels
                region = self.codes[level]
            for c, text in enumerate(texts):
                out[r, c] = self.table[(region, self.texts.index(text))]
        return out


def test_scorer_pairs_regions_with_targets(tmp_path, models):
    shape = (64, 96)
    masks = {"a": box(shape, 0, 0, 20, 20), "b": box(shape, 30, 0, 50, 20), "c": box(shape, 0, 40, 20, 60),
             "plate": box(shape, 40, 60, 64, 96)}  # the plate is not edited: it belongs to the background
    edited = np.full((*shape, 3), 50, np.uint8)
    for level, phrase in ((100, "a"), (150, "b"), (200, "c"), (250, "plate")):
        edited[masks[phrase]] = level
    targets = ["gold a", "red b", "big c"]
    texts = targets + [" and ".join(targets)]
    table = {(j, i): 10 * i + j for i in range(4) for j in range(3)}
    table.update({(BACKGROUND, i): 1000 * (i + 1) for i in range(4)})
    record = write_edit(tmp_path, "pairs", np.zeros_like(edited), edited, masks, targets)
    scorer = _RegionCodeScorer(models, table, texts)
    row = scorer.score_records([record]).iloc[0]
    assert row["error"] is None
    assert scorer.background_levels == [{50, 250}]  # M is the union of the edited objects only
    assert row["ti_leakage"] == pytest.approx(np.mean([10 * i + j for i in range(3) for j in range(3) if i != j]))
    assert row["edited_clip"] == pytest.approx(np.mean([11 * i for i in range(3)]))
    assert row["te_leakage"] == pytest.approx(2000) and row["te_leakage_joined"] == 4000


def test_edited_image_is_resized_to_the_source(tmp_path):
    rng = np.random.default_rng(6)
    source = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    record = write_edit(tmp_path, "resize", source, small, {"cup": box((60, 80), 0, 0, 10, 10)}, ["red cup"])
    prepared = prepare_edit(record)
    assert prepared.edited.shape == source.shape
    np.testing.assert_array_equal(prepared.edited, np.asarray(Image.fromarray(small).resize((80, 60), Image.BICUBIC)))


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


def test_dino_input_option_changes_structure_distance(models):
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    published = scorer_for(models).structure_distance(a, b)
    corrected = scorer_for(models, dino_input="corrected").structure_distance(a, b)
    assert published > 0 and corrected > 0 and published != pytest.approx(corrected, rel=1e-3)
    assert scorer_for(models).structure_distance(a, a) == pytest.approx(0, abs=1e-12)


# -- bad input ---------------------------------------------------------------------------------------------------


def test_bad_input_is_recorded_and_the_rest_scored(tmp_path, models):
    rng = np.random.default_rng(9)
    source = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    cup = {"cup": box((48, 48), 5, 5, 20, 20)}
    good = write_edit(tmp_path, "good", source, None, cup, ["red cup"])
    missing = write_edit(tmp_path, "missing", source, None, cup, ["red cup"])
    missing = EditRecord(**{**missing.__dict__, "edited_image": tmp_path / "nowhere.png"})
    no_mask = write_edit(tmp_path, "nomask", source, None, cup, ["red cup"])
    no_mask = EditRecord(**{**no_mask.__dict__, "edits": (("saucer", "gold saucer"),)})
    wrong_size = write_edit(tmp_path, "size", source, None, {"cup": box((24, 48), 0, 0, 5, 5)}, ["red cup"])
    empty = write_edit(tmp_path, "empty", source, None, {"cup": np.zeros((48, 48), bool)}, ["red cup"])
    unknown = write_edit(tmp_path, "unknown", source, None, cup, ["red cup"], edit_type="style")
    miscounted = EditRecord(**{**good.__dict__, "edit_id": "count", "n_objects": 2})
    records = [missing, no_mask, good, wrong_size, empty, unknown, miscounted]
    df = scorer_for(models, batch_size=3).score_records(records)
    assert list(df["edit_id"]) == [r.edit_id for r in records]
    errors = dict(zip(df["edit_id"], df["error"]))
    assert errors["good"] is None
    assert "image not found" in errors["missing"]
    assert "no mask for edited phrase 'saucer'" in errors["nomask"]
    assert "is 48x24, the source image is 48x48" in errors["size"]
    assert "is empty" in errors["empty"]
    assert "unknown edit type 'style'" in errors["unknown"]
    assert "1 edits filed under 2 objects" in errors["count"]
    good_row = df.set_index("edit_id").loc["good"]
    assert good_row["bg_mse"] == 0 and not math.isnan(good_row["edited_clip"])
    assert df.set_index("edit_id").drop(index="good")[list(METRIC_COLUMNS)].isna().all().all()


# -- real data ---------------------------------------------------------------------------------------------------


def test_real_union_is_the_edited_objects_and_identity_scores_perfect(ale_bench, models):
    (inst,) = [p for p in load_prompt_instances(ale_bench, n_objects=2, images="natural_img10") if p.index == 0][:1]
    all_masks = masks_for_image(ale_bench, "natural_img10")
    assert len(all_masks) == 4 and len(set(inst.sources)) == 2
    record = EditRecord(edit_id=inst.key, source_image=image_path(ale_bench, inst.image),
                        edited_image=image_path(ale_bench, inst.image), masks=all_masks, edits=inst.edits,
                        edit_type=inst.edit_type, n_objects=inst.n_objects, image=inst.image, index=inst.index)
    prepared = prepare_edit(record)
    loaded = {phrase: load_mask(path) for phrase, path in all_masks.items()}
    edited_union = np.logical_or.reduce([loaded[p] for p in inst.sources])
    np.testing.assert_array_equal(prepared.union, edited_union)
    others = [p for p in loaded if p not in inst.sources]
    assert all((loaded[p] & ~edited_union).any() for p in others)  # unedited objects stay in the background

    row = scorer_for(models).score_records([record]).iloc[0]
    assert row["error"] is None
    assert row["bg_mse"] == 0 and row["bg_psnr"] == math.inf and row["bg_lpips"] == 0
    # float32 SSIM (as published) loses ~1e-4 to cancellation in this image's flat areas (float64 gives 1 - 6e-14)
    assert row["bg_ssim"] == pytest.approx(1, abs=5e-4) and row["structure_distance"] == pytest.approx(0, abs=1e-12)
    assert row["bg_fraction"] == pytest.approx(1 - edited_union.mean())


# -- aggregates --------------------------------------------------------------------------------------------------


def _row(edit_type, n, error=None, **values):
    record = EditRecord(edit_id=f"{n}/{edit_type}/{len(values)}", source_image=Path("s"), edited_image=Path("e"),
                        masks={}, edits=(("a", "b"),) * n, edit_type=edit_type, n_objects=n)
    row = empty_row(record)
    row.update(values)
    row["error"] = error
    return row


def test_aggregates_skip_nan_count_and_keep_keys():
    rows = [
        _row("color", 1, te_leakage=1.0, bg_psnr=30.0),
        _row("color", 2, te_leakage=3.0, ti_leakage=2.0, bg_psnr=math.inf),
        _row("object", 2, error="image not found: x"),
        _row("object", 3, te_leakage=5.0, ti_leakage=4.0, bg_psnr=20.0),
    ]
    metrics = aggregate(per_edit_frame(rows))
    overall = metrics["overall"]
    assert overall["count"] == 4 and overall["errors"] == 1
    assert overall["te_leakage"] == pytest.approx(3.0) and overall["n"]["te_leakage"] == 3
    assert overall["ti_leakage"] == pytest.approx(3.0) and overall["n"]["ti_leakage"] == 2
    assert overall["bg_psnr"] == math.inf
    assert metrics["by_type"]["color"]["te_leakage"] == pytest.approx(2.0)
    assert metrics["by_type"]["object"]["count"] == 2 and metrics["by_type"]["object"]["te_leakage"] == 5.0
    assert metrics["by_objects"]["2"]["count"] == 2 and metrics["by_objects"]["2"]["ti_leakage"] == 2.0
    assert metrics["by_type_objects"]["object/3"]["ti_leakage"] == 4.0
    assert metrics["by_type"]["material"] == {**metrics["by_type"]["material"], "count": 0, "te_leakage": None}

    text = json.dumps(to_jsonable(metrics), allow_nan=False)
    back = json.loads(text)
    assert back["overall"]["bg_psnr"] == "inf" and back["by_type"]["material"]["te_leakage"] is None
    assert list(back["by_type"]) == list(EDIT_TYPES)
    assert list(back["by_objects"]) == ["1", "2", "3"]

    def keys(d):
        return {k: keys(v) for k, v in d.items()} if isinstance(d, dict) else None

    # a run over a different subset has the same key structure
    assert keys(aggregate(per_edit_frame(rows[:1]))) == keys(metrics)


# -- the command -------------------------------------------------------------------------------------------------


def test_score_command_on_authors_layout(ale_bench, tmp_path):
    results = tmp_path / "results"
    folder = results / "1" / "color" / "natural_img02"
    folder.mkdir(parents=True)
    source = ale_bench / "images" / "natural_img02.jpg"
    shutil.copy(source, folder / "edit_0.png")  # the source as the "edit": background untouched
    changed = np.array(Image.open(source).convert("RGB"))
    changed[:100, :100] = 0  # a corner of the background blacked out
    Image.fromarray(changed).resize((512, 512)).save(folder / "edit_1.png")  # another size: resized back
    (folder / "edit_2.png").write_bytes(b"not a png")
    (results / "1" / "color" / "natural_img01").mkdir()  # an image the bench does not have: ignored
    out = tmp_path / "scores"

    result = CliRunner().invoke(score, [
        str(results), "--bench", str(ale_bench), "--models", "tiny", "--device", "cpu", "--batch-size", "4",
        "--no-progress", "-o", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "scored 2 of 10 edits" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_edit.parquet"]  # no temp files left

    df = pd.read_parquet(out / "per_edit.parquet")
    assert list(df["index"]) == list(range(10))
    assert list(df["edit_id"]) == [f"1/color/natural_img02/{i}" for i in range(10)]
    assert df.attrs["settings"]["models"] == {"clip": "tiny", "dino": "tiny", "lpips": "tiny"}
    assert df["error"].iloc[:2].isna().all()  # None in the table; read back from Parquet as a missing string
    assert df.loc[0, "bg_mse"] == 0 and df.loc[0, "bg_psnr"] == math.inf
    assert df.loc[1, "bg_mse"] > 0 and df.loc[1, "structure_distance"] > 0
    assert "cannot be read" in df.loc[2, "error"]
    assert all("image not found" in e for e in df.loc[3:, "error"])
    assert df.loc[2:, list(METRIC_COLUMNS)].isna().all().all()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["count"] == 10 and metrics["overall"]["errors"] == 8
    assert metrics["overall"]["n"]["bg_mse"] == 2 and metrics["overall"]["bg_psnr"] == "inf"
    assert metrics["by_type"]["color"]["count"] == 10 and metrics["by_type"]["object"]["count"] == 0
    assert metrics["by_objects"]["1"]["count"] == 10 and metrics["by_type_objects"]["color/1"]["errors"] == 8
    assert metrics["overall"]["bg_mse"] == pytest.approx(df.loc[1, "bg_mse"] / 2)


def test_score_command_without_matching_results(ale_bench, tmp_path):
    (tmp_path / "results").mkdir()
    result = CliRunner().invoke(score, [str(tmp_path / "results"), "--bench", str(ale_bench), "--models", "tiny",
                                        "--device", "cpu", "-o", str(tmp_path / "out")])
    assert result.exit_code != 0 and "no edits to score" in result.output
    assert not (tmp_path / "out").exists()


def test_tiny_models_are_deterministic():
    a, b = build_tiny_clip(seed=0), build_tiny_clip(seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = build_tiny_clip(seed=1)
    assert not torch.equal(a.text_projection.weight, c.text_projection.weight)


def test_models_load_from_local_folders(tmp_path, models):
    """The real loading path (hub id or folder), exercised offline with folders of the tiny models."""
    from ale_edit.bench.metric_models import load_clip, load_dino

    clip_dir, dino_dir = tmp_path / "clip", tmp_path / "dino"
    models.clip.save_pretrained(clip_dir)
    models.clip_tokenizer.save_pretrained(clip_dir)
    # openai/clip-vit-large-patch14's preprocessor_config.json, in its legacy form (sizes as plain ints)
    (clip_dir / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN.tolist(),
        "image_std": CLIP_STD.tolist(), "resample": 3, "size": 224,
    }))
    models.dino.save_pretrained(dino_dir)
    clip, tokenizer, processor = load_clip(str(clip_dir))
    dino = load_dino(str(dino_dir))
    assert all(torch.equal(a, b) for a, b in zip(clip.state_dict().values(), models.clip.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(dino.state_dict().values(), models.dino.state_dict().values()))
    assert tokenizer("a red cup").input_ids == models.clip_tokenizer("a red cup").input_ids
    image = Image.fromarray(np.random.default_rng(10).integers(0, 256, (300, 200, 3), dtype=np.uint8))
    assert torch.equal(processor(images=[image], return_tensors="pt")["pixel_values"],
                       models.clip_processor(images=[image], return_tensors="pt")["pixel_values"])
    (tmp_path / "empty").mkdir()  # a folder is read locally only: no network, a clear error
    with pytest.raises(OSError, match="cannot load the DINO model"):
        load_dino(str(tmp_path / "empty"))
