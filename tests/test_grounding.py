"""Grounded-SAM mask extraction, on tiny random-weight models built offline, and disk dilation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation

from ale_edit import grounding
from ale_edit.errors import EditInputError
from ale_edit.masks import dilate_mask, dilation_radius
from ale_edit.grounding import (
    Detection,
    GroundingModels,
    detect_masks,
    detection_prompt,
    load_grounding_models,
    phrase_labels,
    segment_boxes,
    select_detections,
)

BENCH = Path(__file__).parents[2] / "shared" / "ale_bench"


@pytest.fixture(scope="module")
def tiny() -> GroundingModels:
    return load_grounding_models("tiny", "tiny", device="cpu")


@pytest.fixture(scope="module")
def bench_image() -> Image.Image:
    images = sorted((BENCH / "images").glob("*.jpg")) if (BENCH / "images").is_dir() else []
    if not images:
        pytest.skip(f"ALE-Bench images not found under {BENCH / 'images'}")
    with Image.open(images[0]) as im:
        # Not square, so a (height, width) mix-up shows in the mask's shape.
        return im.convert("RGB").resize((96, 72))


def _box_mask(box, height, width) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# ---------------------------------------------------------------------------------------------------------------
# End to end on the tiny models


def test_tiny_grounded_sam_end_to_end_is_well_formed_and_deterministic(tiny, bench_image):
    phrases = ["cat", "dog", "red car"]
    first = detect_masks(bench_image, phrases, tiny)
    second = detect_masks(bench_image, phrases, tiny)
    assert list(first) == phrases
    for phrase in phrases:
        mask = first[phrase]
        assert mask is None or (mask.dtype == bool and mask.shape == (72, 96) and mask.any()), phrase
        if mask is None:
            assert second[phrase] is None
        else:
            assert np.array_equal(mask, second[phrase])


def test_tiny_models_are_built_deterministically(bench_image):
    a = load_grounding_models("tiny", "tiny", device="cpu", seed=3)
    b = load_grounding_models("tiny", "tiny", device="cpu", seed=3)
    c = load_grounding_models("tiny", "tiny", device="cpu", seed=4)
    for x, y in ((a.detector, b.detector), (a.segmenter, b.segmenter)):
        for (name, p), q in zip(x.state_dict().items(), y.state_dict().values()):
            assert torch.equal(p, q), name
    assert not torch.equal(
        next(iter(a.segmenter.parameters())), next(iter(c.segmenter.parameters()))
    ), "the seed must change the weights"
    assert a.dtype == torch.float32 and a.device.type == "cpu"


def test_sam_masks_a_forced_detection_at_image_resolution(tiny, bench_image, monkeypatch):
    """The SAM half for real: a stub detection's box goes through the tiny SAM to a bool mask of the image's size."""
    box = (10.0, 8.0, 60.0, 50.0)
    monkeypatch.setattr(grounding, "run_detector", lambda *a, **k: [Detection("cat", 0.9, box)])
    first = detect_masks(bench_image, ["cat", "dog"], tiny)
    second = detect_masks(bench_image, ["cat", "dog"], tiny)
    assert first["dog"] is None
    mask = first["cat"]
    assert mask is not None and mask.dtype == bool and mask.shape == (72, 96)
    assert 0 < mask.sum() < mask.size
    assert np.array_equal(mask, second["cat"])
    # The box is the prompt SAM sees: another box gives another mask.
    other = segment_boxes(bench_image, [(50.0, 30.0, 95.0, 71.0)], tiny)[0]
    assert not np.array_equal(mask, other)


def test_segment_boxes_binarises_sam_logits_at_probability_half(tiny, bench_image, monkeypatch):
    boxes = [(10.0, 8.0, 60.0, 50.0), (0.0, 0.0, 95.0, 71.0)]
    masks = segment_boxes(bench_image, boxes, tiny)
    processor = tiny.segmenter_processor
    inputs = processor(images=bench_image, input_boxes=[[list(b) for b in boxes]], return_tensors="pt")
    with torch.no_grad():
        out = tiny.segmenter(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                             multimask_output=False)
    logits = processor.post_process_masks(
        out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False)[0][:, 0]
    # In float64: float32's sigmoid rounds logits within ~3e-8 of 0 to exactly 0.5.
    probs = torch.sigmoid(logits.double())
    assert len(masks) == 2
    for mask, prob in zip(masks, probs):
        assert np.array_equal(mask, (prob > 0.5).numpy())
    assert segment_boxes(bench_image, [], tiny) == []


# ---------------------------------------------------------------------------------------------------------------
# Label filtering and box choice


def test_only_exact_labels_are_kept_and_the_best_box_wins(tiny, bench_image, monkeypatch):
    detections = [
        Detection("cat dog", 0.99, (0, 0, 10, 10)),      # two phrases merged: dropped
        Detection("cat", 0.50, (20, 20, 30, 30)),
        Detection("cat", 0.80, (40, 10, 70, 60)),        # best "cat"
        Detection("dog [SEP]", 0.95, (5, 5, 15, 15)),    # special token in the label: dropped
        Detection("red", 0.90, (1, 1, 9, 9)),            # fragment of "red car": dropped
        Detection("cat", 0.60, (60, 60, 90, 70)),
    ]
    sent_boxes = []

    def fake_segment(image, boxes, models):
        sent_boxes.extend(boxes)
        return [_box_mask(b, image.height, image.width) for b in boxes]

    monkeypatch.setattr(grounding, "run_detector", lambda *a, **k: detections)
    monkeypatch.setattr(grounding, "segment_boxes", fake_segment)
    result = detect_masks(bench_image, ["cat", "dog", "red car"], tiny, keep="best")
    assert sent_boxes == [(40, 10, 70, 60)]
    assert np.array_equal(result["cat"], _box_mask((40, 10, 70, 60), 72, 96))
    assert result["dog"] is None
    assert result["red car"] is None

    # The default, as the authors' code: every box labelled "cat" is segmented and the masks are ORed.
    sent_boxes.clear()
    union = detect_masks(bench_image, ["cat", "dog", "red car"], tiny)
    assert sent_boxes == [(40, 10, 70, 60), (60, 60, 90, 70), (20, 20, 30, 30)]
    expected = np.zeros((72, 96), bool)
    for box in sent_boxes:
        expected |= _box_mask(box, 72, 96)
    assert np.array_equal(union["cat"], expected)
    assert union["dog"] is None and union["red car"] is None


def test_select_detections_matches_decoded_phrase_form_and_breaks_ties_by_order(tiny):
    labels = phrase_labels(["T-Shirt", "Red car"], tiny.detector_processor.tokenizer)
    # BERT's decode spaces out punctuation; the phrase is compared in that same form.
    assert labels == {"T-Shirt": "t - shirt", "Red car": "red car"}
    first = Detection("red car", 0.7, (1, 1, 2, 2))
    chosen = select_detections(labels, [
        Detection("t-shirt", 0.99, (0, 0, 1, 1)),
        Detection("t - shirt", 0.6, (3, 3, 4, 4)),
        first,
        Detection("red car", 0.7, (5, 5, 6, 6)),
        Detection("Red car", 0.9, (7, 7, 8, 8)),
    ])
    assert chosen["T-Shirt"].box == (3, 3, 4, 4)
    assert chosen["Red car"] is first
    assert select_detections({"cat": "cat"}, []) == {"cat": None}


def test_an_empty_sam_mask_counts_as_not_found(tiny, bench_image, monkeypatch):
    monkeypatch.setattr(grounding, "run_detector", lambda *a, **k: [Detection("cat", 0.9, (1, 1, 5, 5))])
    monkeypatch.setattr(grounding, "segment_boxes", lambda image, boxes, models: [np.zeros((72, 96), bool)])
    assert detect_masks(bench_image, ["cat"], tiny) == {"cat": None}


# ---------------------------------------------------------------------------------------------------------------
# The prompt


def test_detection_prompt_form():
    assert detection_prompt(["a", "b", "c"]) == "a. b. c."
    assert detection_prompt(["Red Car", "  dog ", "t-shirt"]) == "red car. dog. t-shirt."
    assert detection_prompt(["cat"]) == "cat."


def test_prompt_sent_to_the_detector(tiny, bench_image, monkeypatch):
    sent = []
    real_processor = tiny.detector_processor

    class Spy:
        def __call__(self, *args, **kwargs):
            sent.append(kwargs.get("text"))
            return real_processor(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(real_processor, name)

    monkeypatch.setattr(tiny, "detector_processor", Spy())
    detect_masks(bench_image, ["Red car", "dog", "green apple"], tiny)
    assert sent == ["red car. dog. green apple."]
    # What the model reads is that text, tokenized: "." after each phrase.
    ids = real_processor(images=bench_image, text=sent[0], return_tensors="pt")["input_ids"][0].tolist()
    assert real_processor.tokenizer.decode(ids, skip_special_tokens=True) == "red car. dog. green apple."


# ---------------------------------------------------------------------------------------------------------------
# Bad phrases


@pytest.mark.parametrize("phrases", [["cat", "cat"], ["Cat", "cat "], ["red  car", "dog", "Red car"]])
def test_duplicate_phrases_raise(tiny, bench_image, phrases):
    with pytest.raises(EditInputError, match="duplicate"):
        detect_masks(bench_image, phrases, tiny)


@pytest.mark.parametrize("phrases", [["cat", ""], ["cat. dog"], "cat"])
def test_bad_phrases_raise_before_any_model_runs(bench_image, phrases):
    # models=None: the error must come from validating the phrases, not from a model call.
    with pytest.raises(EditInputError):
        detect_masks(bench_image, phrases, None)


def test_no_phrases_gives_no_masks(bench_image):
    assert detect_masks(bench_image, [], None) == {}


# ---------------------------------------------------------------------------------------------------------------
# Loading from local folders


def test_saved_tiny_models_load_back_from_local_folders(tiny, bench_image, tmp_path, monkeypatch):
    tiny.save_pretrained(tmp_path)
    loaded = load_grounding_models(tmp_path / "detector", tmp_path / "segmenter", device="cpu")
    assert isinstance(loaded.segmenter, type(tiny.segmenter))
    prompt = detection_prompt(["cat", "dog"])
    a = grounding.run_detector(bench_image, prompt, tiny)
    b = grounding.run_detector(bench_image, prompt, loaded)
    assert [(d.label, d.box) for d in a] == [(d.label, d.box) for d in b]
    box = [(10.0, 8.0, 60.0, 50.0)]
    assert np.array_equal(segment_boxes(bench_image, box, tiny)[0], segment_boxes(bench_image, box, loaded)[0])


def test_a_sam2_video_checkpoint_loads_as_the_image_segmenter(bench_image, tmp_path):
    """SAM 2.1 checkpoints in transformers' format say model_type "sam2_video"; the image model is read from them."""
    from transformers import (
        Sam2HieraDetConfig, Sam2ImageProcessor, Sam2Model, Sam2Processor, Sam2VideoConfig, Sam2VideoModel,
        Sam2VisionConfig,
    )

    backbone = Sam2HieraDetConfig(
        hidden_size=8, image_size=[128, 128], blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
    )
    config = Sam2VideoConfig(
        vision_config=Sam2VisionConfig(
            backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16),
        image_size=128, memory_attention_hidden_size=32, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=32, memory_encoder_hidden_size=32, memory_encoder_output_channels=8,
        mask_downsampler_embed_dim=32, memory_fuser_embed_dim=32, memory_fuser_intermediate_dim=32,
    )
    torch.manual_seed(0)
    Sam2VideoModel(config).save_pretrained(tmp_path)
    Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": 128, "width": 128})).save_pretrained(tmp_path)

    models = load_grounding_models("tiny", tmp_path, device="cpu")
    assert type(models.segmenter) is Sam2Model
    assert isinstance(models.segmenter_processor, Sam2Processor)
    masks = segment_boxes(bench_image, [(10.0, 8.0, 60.0, 50.0), (0.0, 0.0, 95.0, 71.0)], models)
    assert [m.shape for m in masks] == [(72, 96), (72, 96)]
    assert all(m.dtype == bool for m in masks)


@pytest.mark.slow
def test_the_published_sam2_1_architecture_loads_from_the_hub_cache_and_segments_a_box(bench_image, tmp_path,
                                                                                      monkeypatch):
    """SAM 2.1 Hiera-T as published (transformers' default Sam2VideoConfig is facebook/sam2.1-hiera-tiny's, the
    smallest SAM 2.1; Hiera-L, the authors', differs only in widths and depths), random weights, saved in the
    Hugging Face cache's layout and read offline by hub id through the preflight and the loader."""
    from huggingface_hub import constants
    from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor, Sam2VideoConfig, Sam2VideoModel

    repo, commit = "facebook/sam2.1-hiera-tiny", "0" * 40
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        video = Sam2VideoModel(Sam2VideoConfig())
    video.save_pretrained(snapshot)
    Sam2Processor(image_processor=Sam2ImageProcessor()).save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    models = load_grounding_models("tiny", repo, device="cpu")
    assert type(models.segmenter) is Sam2Model and models.segmenter.config.model_type == "sam2_video"
    saved, loaded = video.state_dict(), models.segmenter.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)  # every weight of the image model read back
    boxes = [(10.0, 8.0, 60.0, 50.0), (40.0, 20.0, 95.0, 71.0)]
    masks = segment_boxes(bench_image, boxes, models)
    assert [m.shape for m in masks] == [(72, 96), (72, 96)] and all(m.dtype == bool for m in masks)
    assert not np.array_equal(masks[0], masks[1])  # the box prompts the mask
    assert all(np.array_equal(a, b) for a, b in zip(masks, segment_boxes(bench_image, boxes, models)))


# ---------------------------------------------------------------------------------------------------------------
# Dilation


def _disk(radius: float, size: int) -> np.ndarray:
    c = size // 2
    y, x = np.ogrid[:size, :size]
    return (x - c) ** 2 + (y - c) ** 2 <= radius ** 2


@pytest.mark.parametrize("radius", [0.5, 1, 1.5, 2, 2.5, 3.7, 5, 12])
def test_a_pixel_dilates_to_the_exact_disk(radius):
    size = 41
    pixel = np.zeros((size, size), dtype=bool)
    pixel[size // 2, size // 2] = True
    assert np.array_equal(dilate_mask(pixel, radius), _disk(radius, size))


def test_radius_zero_is_unchanged_and_a_copy():
    rng = np.random.default_rng(0)
    mask = rng.random((30, 40)) > 0.8
    out = dilate_mask(mask, 0)
    assert np.array_equal(out, mask) and out is not mask


def test_dilation_matches_binary_dilation_by_a_disk_and_is_monotone():
    rng = np.random.default_rng(1)
    mask = rng.random((60, 70)) > 0.97
    previous = mask
    for radius in (1, 2, 3, 5, 8):
        out = dilate_mask(mask, radius)
        r = int(radius)
        y, x = np.ogrid[-r : r + 1, -r : r + 1]
        assert np.array_equal(out, binary_dilation(mask, structure=x ** 2 + y ** 2 <= r ** 2)), radius
        assert (out >= mask).all(), "dilation must never shrink the mask"
        assert (out >= previous).all(), "a larger radius must cover a smaller one"
        assert out.sum() > previous.sum()
        previous = out


def test_dilation_edge_cases():
    empty = np.zeros((10, 10), dtype=bool)
    assert not dilate_mask(empty, 5).any()
    full = np.ones((10, 10), dtype=bool)
    assert dilate_mask(full, 3).all()
    with pytest.raises(ValueError):
        dilate_mask(full, -1)
    with pytest.raises(ValueError):
        dilate_mask(np.ones((2, 2, 2), dtype=bool), 1)


def test_dilation_radius():
    assert dilation_radius(0.04, 512) == 20  # floored, as the authors' int(...)
    assert dilation_radius(0.04, 768) == 30
    assert dilation_radius(0.0, 512) == 0.0
    with pytest.raises(ValueError):
        dilation_radius(-0.01, 512)


def test_the_command_line_and_the_masks_stage_give_identical_masks(ale_bench, tmp_path):
    """Grounded-SAM runs in fp32 in both, whatever the diffusion model's --dtype (bf16 here: the detector in bf16
    misses the cup this fp32 run finds)."""
    import json

    import pandas as pd
    from click.testing import CliRunner

    from ale_edit.cli import main
    from stage_utils import bench_stage, invoke, smoke_params, write_params

    image = ale_bench / "images" / "artificial_img05.jpg"
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["edit", str(image), "-e", "cup=gold cup", "-e", "book=red book", "--model",
                                       "tiny", "--size", "64", "--steps", "2", "--dtype", "bf16", "--dilation", "0",
                                       "--save-masks", str(out), "-o", str(out / "edit.png")])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "edit.json").read_text())
    assert record["mask_sources"]["cup"] == "detected" and record["grounding"]["dtype"] == "fp32"

    params = smoke_params(ale_bench, masks__source="auto")
    params["bench"]["images"] = ["artificial_img05"]
    bench = bench_stage(tmp_path, params)
    edits = tmp_path / "edits.parquet"
    pd.DataFrame({"image": ["artificial_img05"], "sources": [["cup", "book"]]}).to_parquet(edits)
    masks = tmp_path / "masks"
    result = invoke("masks", ["--params", str(write_params(tmp_path / "params.yaml", params)), "--bench", str(bench),
                              "--edits", str(edits), "--out", str(masks)])
    assert result.exit_code == 0, result.output
    records = {r["phrase"]: r for r in json.loads((masks / "masks.json").read_text())}
    assert {p: r["origin"] for p, r in records.items()} == record["mask_sources"]
    stage_mask = np.array(Image.open(masks / records["cup"]["file"]))
    cli_mask = np.array(Image.open(out / "cup_mask.png"))
    assert stage_mask.any() and np.array_equal(stage_mask, cli_mask)
    assert json.loads((masks / "models.json").read_text()) == {
        "source": "auto", "detector": "tiny", "segmenter": "tiny", "dtype": "fp32",
        "compat": {"profile": "none", "from_profile": {}, "overridden": {}}}
