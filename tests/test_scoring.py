"""ALE-Bench scoring: the scorer (what the models see, pairing, bad input, soft weights, memory-bounded chunks),
the settings and the ``score`` command."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ale_edit.bench.dataset import load_prompt_instances, masks_for_image, image_path
from ale_edit.bench.metric_models import MetricModels, build_lpips
from ale_edit.bench.scoring import (
    BACKGROUND, METRIC_COLUMNS, PIXEL_METRICS, EditRecord, Scorer, ScoreSettings, prepare_edit, score_settings,
    score_settings_from_params,
)
from ale_edit.commands.score import score
from ale_edit.io import load_mask
from scoring_helpers import CLIP_MEAN, CLIP_STD, box, models, scorer_for, write_edit  # noqa: F401  (fixture)


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


class _RegionCodeScorer(Scorer):
    """CLIP replaced by a lookup keyed on which region an image shows (read from its grey levels)."""

    codes = {50: BACKGROUND, 100: 0, 150: 1, 200: 2}

    def __init__(self, models, table, texts):
        super().__init__(models, progress=False)
        self.table, self.texts, self.background_levels = table, texts, []

    def clip_scores(self, images, texts, **_):
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


# -- DINO structure distance -----------------------------------------------------------------------------------


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
        "--no-progress", "--resize-edited", "-o", str(out),
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


# -- soft mask weights -------------------------------------------------------------------------------------------


def test_binary_masks_score_the_same_with_either_weighting(tmp_path, models):
    rng = np.random.default_rng(20)
    source = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    edited = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    masks = {"cup": box((96, 128), 10, 20, 40, 60), "book": box((96, 128), 50, 70, 90, 120)}
    records = [write_edit(tmp_path, "two", source, edited, masks, ["red cup", "blue book"]),
               write_edit(tmp_path, "one", source, edited, masks, ["red cup"])]
    binary = scorer_for(models, mask_weights="binary").score_records(records)
    soft = scorer_for(models, mask_weights="soft").score_records(records)
    assert binary["error"].isna().all() and soft["error"].isna().all()
    for name in ("bg_fraction",) + METRIC_COLUMNS:
        np.testing.assert_array_equal(binary[name].to_numpy(), soft[name].to_numpy(), err_msg=name)


def test_soft_weights_by_hand_through_the_scorer(tmp_path, models):
    rng = np.random.default_rng(21)
    source = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    edited = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    cup = np.zeros((16, 16), np.uint8)
    cup[4:12, 4:12] = 128  # antialiased edge
    cup[5:11, 5:11] = 255
    book = np.zeros((16, 16), np.uint8)
    book[9:14, 9:14] = 200  # overlaps the cup's edge: the union takes the larger weight
    book[10:13, 10:13] = 255
    record = write_edit(tmp_path, "soft", source, edited, {"cup": cup, "book": book}, ["red cup", "blue book"])

    def by_hand(weight):
        w32 = weight.astype(np.float32)[..., None]
        s = (source.astype(np.float32) / 255) * w32
        e = (edited.astype(np.float32) / 255) * w32
        return np.mean((e.astype(np.float64) - s) ** 2)

    row = scorer_for(models, mask_weights="soft").score_records([record]).iloc[0]
    weight = 1.0 - np.maximum(cup, book) / 255.0
    mse = by_hand(weight)
    assert row["bg_mse"] == pytest.approx(mse, rel=1e-6)
    assert row["bg_psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-6)
    assert row["bg_fraction"] == pytest.approx(weight.mean(), rel=1e-12)
    # binary: 128/255 and 200/255 are both >= 0.5, so the grey pixels are object, not background
    binary = scorer_for(models).score_records([record]).iloc[0]
    assert binary["bg_mse"] == pytest.approx(by_hand(((cup == 0) & (book == 0)).astype(np.float64)), rel=1e-6)
    assert binary["bg_mse"] != pytest.approx(mse, rel=1e-3)


def test_clip_reads_soft_pixels_as_the_authors(tmp_path, models):
    rng = np.random.default_rng(22)
    edited = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    cup = np.zeros((224, 224), np.uint8)
    cup[20:120, 20:120] = 90
    cup[30:110, 30:110] = 255
    book = np.zeros((224, 224), np.uint8)
    book[100:200, 100:200] = 170
    book[110:190, 110:190] = 255
    record = write_edit(tmp_path, "soft", edited, edited, {"cup": cup, "book": book}, ["red cup", "blue book"])
    seen = []
    handle = models.clip.vision_model.register_forward_pre_hook(
        lambda _m, _args, kwargs: seen.append(kwargs["pixel_values"].clone()), with_kwargs=True)
    try:
        scorer_for(models, mask_weights="soft").score_records([record])
    finally:
        handle.remove()
    seen = torch.cat(seen).numpy()
    weights = [1.0 - np.maximum(cup, book) / 255.0, cup / 255.0, book / 255.0]  # I_e x (1 - M), m_cup, m_book
    assert len(seen) == len(weights)
    for weight in weights:
        pixels = np.uint8(edited * weight[..., None])  # the authors' np.uint8(img * mask), float64 product
        normalised = ((pixels / 255.0 - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1).astype(np.float32)
        assert sum(np.allclose(seen[k], normalised, atol=1e-5) for k in range(len(seen))) == 1


# -- edited images of another size ---------------------------------------------------------------------------


def test_an_edited_image_of_another_size_is_an_error_row_unless_resized(ale_bench, tmp_path, models):
    (inst,) = load_prompt_instances(ale_bench, n_objects=1, edit_types="color", images="natural_img02")[:1]
    small = tmp_path / "small.png"
    Image.fromarray(np.full((32, 64, 3), 120, np.uint8)).save(small)  # 64 wide, 32 high
    record = EditRecord.for_instance(inst, source_image=image_path(ale_bench, inst.image), edited_image=small,
                                     masks=masks_for_image(ale_bench, inst.image))
    row = scorer_for(models).score_records([record]).iloc[0]
    assert "the edited image is 64x32, the source image is 1000x1000" in row["error"]
    assert row["resized_from"] is None and row[list(METRIC_COLUMNS)].isna().all()
    resized = scorer_for(models, resize_edited=True).score_records([record]).iloc[0]
    assert resized["error"] is None and resized["resized_from"] == "64x32"
    assert resized["bg_mse"] > 0 and not math.isnan(resized["te_leakage"])
    same = EditRecord(**{**record.__dict__, "edited_image": record.source_image})
    assert scorer_for(models, resize_edited=True).score_records([same]).iloc[0]["resized_from"] is None


# -- bounded memory --------------------------------------------------------------------------------------------


def test_chunked_scoring_equals_the_unchunked_computation(tmp_path, models):
    """Pixel metrics in chunks of a pixel budget give the numbers of one call per batch: exactly for MSE and PSNR,
    to 1e-6 for the rest (convolutions may sum in another order in another batch)."""
    rng = np.random.default_rng(23)
    full_lpips = MetricModels(**{**models.__dict__, "lpips": build_lpips("squeeze", pretrained_backbone=False)})
    records = []
    for k, shape in enumerate([(96, 128)] * 3 + [(80, 64)] * 2 + [(96, 128)]):
        source = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        edited = np.clip(source + rng.integers(-40, 40, source.shape), 0, 255).astype(np.uint8)
        masks = {"cup": box(shape, 5, 5, 30, 40), "book": box(shape, 40, 20, 70, 50)}
        records.append(write_edit(tmp_path, f"e{k}", source, edited, masks, ["red cup", "blue book"][: 1 + k % 2]))
    unchunked = Scorer(full_lpips, pixel_budget=None, batch_size=6, progress=False)
    chunked = Scorer(full_lpips, pixel_budget=2 * 96 * 128, batch_size=16, progress=False)  # 2 images per call
    reference = unchunked.score_records(records)
    got = chunked.score_records(records, batch_size=6)
    assert chunked.batch_size == 16  # the call's batch size is passed down, not stored
    assert reference["error"].isna().all() and (reference["bg_lpips"] > 0).all()
    for name in ("bg_mse", "bg_psnr", "bg_mse_region", "bg_psnr_region"):
        np.testing.assert_array_equal(got[name].to_numpy(), reference[name].to_numpy(), err_msg=name)
    for name in METRIC_COLUMNS:
        np.testing.assert_allclose(got[name].to_numpy(), reference[name].to_numpy(), rtol=0, atol=1e-6,
                                   err_msg=name)
    with pytest.raises(ValueError, match="pixel_budget must be at least 1"):
        Scorer(models, pixel_budget=0)


# -- the tiny CLIP tells leakage apart -------------------------------------------------------------------------


def test_tiny_clip_leakage_follows_the_pixels_inside_and_outside_the_masks(ale_bench, tmp_path, models):
    """Plumbing, on a real ALE-Bench edit: TE reads only the background, TI and Edited only the objects."""
    inst = load_prompt_instances(ale_bench, n_objects=2, edit_types="color", images="natural_img02")[0]
    masks = masks_for_image(ale_bench, inst.image)
    source = np.array(Image.open(image_path(ale_bench, inst.image)).convert("RGB"))
    first, second = (load_mask(masks[phrase]) for phrase in inst.sources)
    union = first | second
    outside, inside = source.copy(), source.copy()
    outside[~union] = 255 - outside[~union]
    inside[first] = (0, 0, 255)
    records = []
    for name, pixels in (("same", source), ("outside", outside), ("inside", inside)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        records.append(EditRecord.for_instance(inst, edit_id=name, source_image=image_path(ale_bench, inst.image),
                                               edited_image=tmp_path / f"{name}.png", masks=masks))
    rows = scorer_for(models).score_records(records).set_index("edit_id")
    clip = ["te_leakage", "te_leakage_joined", "ti_leakage", "edited_clip"]
    assert (rows[clip] > 10).all().all()  # positive scores, not the clamp's 0
    same, out, ins = rows.loc["same", clip], rows.loc["outside", clip], rows.loc["inside", clip]
    for name in ("te_leakage", "te_leakage_joined"):
        assert abs(out[name] - same[name]) > 0.1 and ins[name] == pytest.approx(same[name], abs=1e-4), name
    for name in ("ti_leakage", "edited_clip"):
        assert abs(ins[name] - same[name]) > 0.1 and out[name] == pytest.approx(same[name], abs=1e-4), name


# -- settings ----------------------------------------------------------------------------------------------------


def test_score_settings_from_compat_and_explicit_values():
    assert score_settings() == ScoreSettings()
    assert (ScoreSettings().mask_weights, ScoreSettings().te_variant) == ("binary", "mean")
    authors = score_settings("authors")
    assert (authors.mask_weights, authors.te_variant, authors.te_column) == ("soft", "joined", "te_leakage_joined")
    assert authors.compat == {"profile": "authors", "overridden": {},
                              "from_profile": {"score.mask_weights": "soft", "score.te_variant": "joined",
                                               "score.resize_edited": True}}
    assert authors.resize_edited and not score_settings().resize_edited
    assert not score_settings("authors", resize_edited=False).resize_edited  # an explicit value wins
    mixed = score_settings_from_params({"mask_weights": "binary", "te_variant": None, "dino_input": "corrected",
                                        "resize_edited": True}, "authors")
    assert (mixed.mask_weights, mixed.te_variant, mixed.dino_input, mixed.resize_edited) == (
        "binary", "joined", "corrected", True)
    assert mixed.compat["overridden"] == {"score.mask_weights": "binary"}
    assert mixed.compat["from_profile"] == {"score.te_variant": "joined", "score.resize_edited": True}
    assert mixed.scorer_options() == {"mask_weights": "binary", "dino_input": "corrected", "resize_edited": True}
    assert score_settings_from_params({}, "none") == ScoreSettings()
    with pytest.raises(ValueError, match="unknown te_variant 'median'"):
        score_settings(te_variant="median")
    with pytest.raises(ValueError, match="unknown compat profile 'paper'"):
        score_settings("paper")


def test_score_command_with_compat_records_its_settings(ale_bench, tmp_path):
    # artificial_img02's table mask has antialiased edges: soft weights change the background's share
    (inst,) = [p for p in load_prompt_instances(ale_bench, n_objects=1, images="artificial_img02")
               if p.sources == ("table",)][:1]
    folder = tmp_path / "results" / "1" / inst.edit_type / inst.image
    folder.mkdir(parents=True)
    # An edit at the working size, 768 px, of a 1000 px source: the authors' evaluator resizes it back.
    edited = Image.open(image_path(ale_bench, inst.image)).resize((768, 768), Image.BICUBIC)
    edited.save(folder / f"edit_{inst.index}.png")
    table = np.array(Image.open(masks_for_image(ale_bench, inst.image)["table"]).convert("L")) / 255.0

    def run(*options):
        out = tmp_path / "scores" / "-".join(options).replace("--", "")
        result = CliRunner().invoke(score, [str(tmp_path / "results"), "--bench", str(ale_bench), "--models", "tiny",
                                            "--device", "cpu", "--no-progress", "-o", str(out), *options])
        assert result.exit_code == 0, result.output
        return result.output, json.loads((out / "metrics.json").read_text()), pd.read_parquet(out / "per_edit.parquet")

    output, metrics, per_edit = run("--compat", "authors")
    settings = metrics["settings"]
    assert (settings["mask_weights"], settings["te_variant"]) == ("soft", "joined")
    assert settings["compat"] == {"profile": "authors", "overridden": {},
                                  "from_profile": {"score.mask_weights": "soft", "score.te_variant": "joined",
                                                   "score.resize_edited": True}}
    assert settings["models"] == {"clip": "tiny", "dino": "tiny", "lpips": "tiny"}
    assert per_edit.attrs["settings"] == settings
    assert "TE reported: joined (joined prompt)" in output and '"te_leakage_joined"' in output
    row = per_edit.set_index("edit_id").loc[inst.key]
    assert settings["resize_edited"] and row["resized_from"] == "768x768" and pd.isna(row["error"])
    assert row["bg_fraction"] == pytest.approx(1 - table.mean(), rel=1e-12)

    output, metrics, per_edit = run("--compat", "authors", "--mask-weights", "binary", "--te-variant", "mean")
    assert metrics["settings"]["compat"]["overridden"] == {"score.mask_weights": "binary", "score.te_variant": "mean"}
    assert "TE reported: mean (eq. 6)" in output and '"te_leakage"' in output
    assert per_edit.set_index("edit_id").loc[inst.key, "bg_fraction"] == pytest.approx(1 - (table >= 0.5).mean())

    _, metrics, per_edit = run()
    assert metrics["settings"]["compat"] == {"profile": "none", "from_profile": {}, "overridden": {}}
    assert (metrics["settings"]["mask_weights"], metrics["settings"]["te_variant"]) == ("binary", "mean")
    assert "--resize-edited" in per_edit.set_index("edit_id").loc[inst.key, "error"]  # profile none: not resized
