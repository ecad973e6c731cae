"""The metric models: tiny ones built offline and seeded, real ones loaded from hub ids or local folders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ale_edit.bench.metric_models import build_tiny_clip
from scoring_helpers import CLIP_MEAN, CLIP_STD, models  # noqa: F401  (fixture)

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
