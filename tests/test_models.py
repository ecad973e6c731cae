"""Model loading: the offline CLIP tokenizer, tiny models, and the local-folder path real models take."""

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from ale_edit.models import TINY, load_diffusion_models, resolve_device, resolve_dtype
from ale_edit.tokenizer import clip_tokenizer


def test_tokenizer_matches_open_clip():
    # open_clip's SimpleTokenizer needs only ftfy/regex, but its package import pulls torchvision: load the module.
    spec = importlib.util.find_spec("open_clip")
    path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_tokenizer_only", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    reference = module.SimpleTokenizer()
    tok = clip_tokenizer()
    for text in ["a cup made of gold and red-colored book", "pink-colored wolf", "T-shirt, yoga mat & footwear!"]:
        assert tok(text, add_special_tokens=False).input_ids == reference.encode(text)
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407 and tok.pad_token_id == 49407


def test_device_and_dtype_defaults():
    assert resolve_dtype(torch.device("cpu")) == torch.float32
    assert resolve_dtype(torch.device("cuda")) == torch.float16
    assert resolve_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype(torch.device("cpu"), "fp8")


def test_tiny_models_are_deterministic_and_reload_from_a_local_folder(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = load_diffusion_models(TINY, "cpu")
        b = load_diffusion_models(TINY, "cpu")
        a.save_pretrained(tmp_path / "model")
        c = load_diffusion_models(str(tmp_path / "model"), "cpu")
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(4, 77, 32, generator=torch.Generator().manual_seed(1))
    outs = [m.unet(x, 999, encoder_hidden_states=ctx).sample for m in (a, b, c)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    ids = a.tokenizer("gold cup", return_tensors="pt").input_ids
    assert torch.equal(a.text_encoder(ids)[0], c.text_encoder(ids)[0])
    assert c.tokenizer("gold cup").input_ids == a.tokenizer("gold cup").input_ids
    assert c.scheduler.config.original_inference_steps == 50
    assert a.vae_scale_factor == 8


def test_lcm_timesteps():
    from ale_edit.sampler import lcm_timesteps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = load_diffusion_models(TINY, "cpu")
    timesteps, _ = lcm_timesteps(models.scheduler, 15)
    assert timesteps.tolist() == [999, 939, 879, 799, 739, 679, 599, 539, 479, 399, 339, 279, 199, 139, 79]


def test_unreachable_model_is_named(tmp_path):
    with pytest.raises(OSError, match="the diffusion model '.*no-such-model': no such folder"):
        load_diffusion_models(str(tmp_path / "no-such-model"), "cpu")


def test_a_folder_that_fails_to_load_is_named_on_one_line(tmp_path):
    # Every config is there (preflight passes), the weights are not: the loader's reason, on one line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_diffusion_models(TINY, "cpu").save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(OSError, match="cannot load the diffusion model") as info:
        load_diffusion_models(str(tmp_path / "model"), "cpu")
    assert "\n" not in str(info.value)


def test_grounding_models_follow_the_compat_profile_and_a_given_one_wins():
    from ale_edit.models import DEFAULT_DETECTOR, DEFAULT_SEGMENTER, grounding_model_names

    assert DEFAULT_SEGMENTER == "facebook/sam-vit-huge"  # Grounded-SAM's SAM ViT-H, the paper's
    assert grounding_model_names() == {"detector": DEFAULT_DETECTOR, "segmenter": DEFAULT_SEGMENTER}
    assert grounding_model_names("authors")["segmenter"] == "facebook/sam2.1-hiera-large"
    assert grounding_model_names("authors", segmenter="./sam")["segmenter"] == "./sam"
    assert grounding_model_names("authors", tiny=True) == {"detector": TINY, "segmenter": TINY}
