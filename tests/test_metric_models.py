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


def test_dino_checkpoint_with_its_unused_pooler_loads_without_a_load_report(tmp_path):
    """DINO's hub checkpoints hold a pooler the structure distance never reads: it is left out without a report;
    anything else amiss in a checkpoint is still reported."""
    import logging

    from transformers import ViTConfig, ViTModel

    from ale_edit.bench.metric_models import load_dino

    reports = []
    handler = logging.Handler()
    handler.emit = lambda record: reports.append(record.getMessage())
    logger = logging.getLogger("transformers.modeling_utils")  # where transformers logs its load report
    logger.addHandler(handler)
    try:
        config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           image_size=224, patch_size=8)
        torch.manual_seed(0)
        full = ViTModel(config)  # with the pooler, as facebook/dino-vitb8 is saved
        full.save_pretrained(tmp_path / "dino")
        dino = load_dino(str(tmp_path / "dino"))
        assert dino.pooler is None
        assert all(torch.equal(v, full.state_dict()[k]) for k, v in dino.state_dict().items())
        assert not [r for r in reports if "LOAD REPORT" in r]
        ViTModel.from_pretrained(tmp_path / "dino", add_pooling_layer=False)  # transformers alone reports it
        (report,) = [r for r in reports if "LOAD REPORT" in r]
        assert "pooler.dense.weight" in report and "UNEXPECTED" in report
        # A checkpoint missing a real weight is still reported through load_dino.
        ViTModel(ViTConfig(**{**config.to_dict(), "num_hidden_layers": 1})).save_pretrained(tmp_path / "short")
        config.save_pretrained(tmp_path / "short")  # the config says 2 layers, the weights hold 1
        reports.clear()
        load_dino(str(tmp_path / "short"))
        (report,) = [r for r in reports if "LOAD REPORT" in r]
        assert "MISSING" in report and "layers.1" in report
    finally:
        logger.removeHandler(handler)


def test_lpips_backbone_from_a_weights_file(tmp_path):
    """score.lpips_weights: torchvision's SqueezeNet 1.1 state dict, read into LPIPS' backbone slices."""
    import torchvision

    from ale_edit.bench.metric_models import build_lpips, load_metric_models
    from ale_edit.errors import ModelUnavailableError

    torch.manual_seed(3)
    squeezenet = torchvision.models.squeezenet1_1(weights=None)
    path = tmp_path / "squeezenet1_1-b8a52dc0.pth"
    torch.save(squeezenet.state_dict(), path)
    lpips = build_lpips("squeeze", weights=path)
    features = squeezenet.features.state_dict()
    backbone = lpips.net.state_dict()
    assert len(backbone) == len(features) == 50  # 26 convolutions' weights and biases
    assert all(torch.equal(v, features[k.split(".", 2)[2]]) for k, v in backbone.items())
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(lpips.net(x)[-1], torch.relu(squeezenet.features(x)))  # its last slice is SqueezeNet's output
    models = load_metric_models("tiny", lpips="squeeze", lpips_weights=path, device="cpu")
    assert torch.equal(models.lpips.net.slices[0][0].weight, squeezenet.features[0].weight)
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ModelUnavailableError, match="cannot read LPIPS' SqueezeNet weights from .*other.pth"):
        build_lpips("squeeze", weights=tmp_path / "other.pth")
