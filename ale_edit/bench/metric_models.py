"""Loading the models the ALE-Bench metrics need: CLIP, DINO ViT-B/8 and LPIPS (SqueezeNet).

Each loads from a hub id or a local directory for real use, or is built tiny from a config with seeded random
weights (``"tiny"``), offline, for tests. The real models are the ones the published numbers were computed with:

- CLIP ViT-L/14, OpenAI weights (``openai/clip-vit-large-patch14``), as torchmetrics' ``CLIPScore`` loads it, with
  the PIL-based CLIP image processor (bicubic resize of the short side to 224, centre crop, CLIP mean/std) that
  transformers 4.x used by default;
- DINO ViT-B/8 (``facebook/dino-vitb8``, transformers ``ViTModel``); the structure distance reads the last layer's
  keys with a forward hook on its key projection (see ``dino_key_projection``);
- LPIPS with the SqueezeNet backbone, torchmetrics' module. Its linear heads ship inside torchmetrics; its backbone's
  ImageNet weights are torchvision's ``squeezenet1_1-b8a52dc0.pth``: a file given explicitly (``lpips_weights``,
  params.yaml's ``score.lpips_weights``, ``--lpips-weights``), else torchvision's download cache
  (``$TORCH_HOME/hub/checkpoints``), so a machine without internet needs that file once, in either place.

Metrics run in float32 by default on every device (the published numbers are fp32); pass a dtype to change that.
The device comes from ``ale_edit.models.resolve_device``.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, ViTConfig, ViTModel

from ..errors import ModelUnavailableError
from ..models import pretrained_kwargs, resolve_device, resolve_dtype
from ..preflight import check_models, metric_needs
from ..tokenizer import clip_tokenizer

try:  # transformers >= 5: the PIL-based processor is the one that reproduces transformers 4.x's default
    from transformers import CLIPImageProcessorPil as _ClipImageProcessor
except ImportError:  # transformers 4.x: its CLIPImageProcessor is the PIL-based one
    from transformers import CLIPImageProcessor as _ClipImageProcessor

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
DEFAULT_DINO_MODEL = "facebook/dino-vitb8"
DEFAULT_LPIPS_NET = "squeeze"
TINY = "tiny"
REAL = "real"
PRESETS = (REAL, TINY)
LPIPS_NETS = (DEFAULT_LPIPS_NET, TINY)
TINY_LPIPS_SIZE = 64  # the tiny LPIPS resizes its input to this, so full-size test images stay cheap on CPU
TINY_CLIP_WIDTH = 32
TINY_CLIP_OFFSET = 8.0  # length of the tiny CLIP's shared LayerNorm offset (see build_tiny_clip)


@dataclass
class MetricModels:
    """CLIP (model, tokenizer, image processor), DINO and LPIPS, on one device, in eval mode, without gradients."""

    clip: CLIPModel
    clip_tokenizer: CLIPTokenizer
    clip_processor: object
    dino: ViTModel
    lpips: nn.Module
    device: torch.device
    dtype: torch.dtype
    names: dict[str, str] = field(default_factory=dict)


def build_tiny_clip(seed: int = 0) -> CLIPModel:
    """A CLIP model with the real 49,408-token vocabulary and 77 positions, 224-px input, tiny and seeded.

    Plain random weights make image and text features as often anti- as positively correlated, so the clamped
    CLIP score is 0 for nearly every pair and no test could tell a right leakage computation from a wrong one.
    So both towers share a seeded offset in their final LayerNorm (its bias, ``TINY_CLIP_OFFSET`` long, larger
    than the normalised features' own length, sqrt(32)) and one projection matrix: every feature is
    W (offset + input-dependent part), scores are positive (about 40-70) and still differ with the pixels and
    the words. It proves plumbing only: the numbers mean nothing about images and texts.
    """
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=TINY_CLIP_WIDTH, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=TINY_CLIP_WIDTH, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            image_size=224, patch_size=32,
        ),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
        offset = torch.randn(TINY_CLIP_WIDTH)
    with torch.no_grad():
        offset *= TINY_CLIP_OFFSET / offset.norm()
        model.vision_model.post_layernorm.bias.copy_(offset)
        model.text_model.final_layer_norm.bias.copy_(offset)
        model.text_projection.weight.copy_(model.visual_projection.weight)
    return model


def build_tiny_dino(seed: int = 0) -> ViTModel:
    """A ViT with DINO ViT-B/8's patch size (8) and 224-px positions, 2 layers of width 32, random weights."""
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=224, patch_size=8, qkv_bias=True, layer_norm_eps=1e-6,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ViTModel(config, add_pooling_layer=False)


class UnusedPoolerReportFilter(logging.Filter):
    """Drops transformers' load report when all it lists is the pooler left out on purpose (DINO's checkpoints
    hold one, the structure distance never reads it); any other unexpected or missing key is still reported.

    (A ``ViTModel`` subclass that declares the pooler ignorable would be custom code to transformers 5, which then
    skips the key renaming the checkpoint needs.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "LOAD REPORT" not in text:
            return True
        rows = [[cell.strip() for cell in line.split("|")] for line in text.splitlines() if line.count("|") >= 2]
        entries = [(key, status) for key, status, *_ in rows if status and status != "Status"]
        return not (entries and all(k.startswith("pooler.") and s == "UNEXPECTED" for k, s in entries))


def build_lpips(net: str = DEFAULT_LPIPS_NET, seed: int = 0, *, pretrained_backbone: bool = True,
                weights: str | os.PathLike | None = None) -> nn.Module:
    """torchmetrics' LPIPS module with the SqueezeNet backbone.

    ``"squeeze"``: ImageNet-trained backbone (torchvision weights, downloaded once into the torch hub cache) and
    the LPIPS linear heads shipped with torchmetrics; this is what ``LearnedPerceptualImagePatchSimilarity(
    net_type="squeeze")`` holds. ``pretrained_backbone=False`` keeps that architecture, input size and heads over
    a seeded random backbone (nothing downloaded: benchmarks of the real cost). ``"tiny"``: the same over a random
    backbone, reading its input resized to ``TINY_LPIPS_SIZE`` px (torchmetrics' ``resize``), so nothing is
    downloaded and 1000-px images score in milliseconds. ``weights``: torchvision's SqueezeNet 1.1 state dict file
    for the backbone of ``"squeeze"``, instead of torchvision's download cache.
    """
    # The module class is private in torchmetrics, but it is exactly what the public metric wraps (``metric.net``),
    # and the public metric cannot be built without the download, nor give per-image or spatial scores.
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {LPIPS_NETS}")
    if net == TINY or not pretrained_backbone:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _NoTrainLpips(net="squeeze", pnet_rand=True, resize=TINY_LPIPS_SIZE if net == TINY else None)
    if weights:
        return _lpips_from_file(_NoTrainLpips(net="squeeze", pnet_rand=True), weights)
    try:
        return _NoTrainLpips(net="squeeze")
    except (OSError, RuntimeError) as exc:  # urllib's URLError is an OSError
        raise ModelUnavailableError(
            f"cannot load LPIPS' SqueezeNet backbone ({exc}). torchvision downloads squeezenet1_1 weights into "
            f"{torch.hub.get_dir()}/checkpoints once; copy the file there on an offline machine (or give its path "
            f"as score.lpips_weights / --lpips-weights), or use 'tiny'."
        ) from exc


def _lpips_from_file(lpips: nn.Module, path: str | os.PathLike) -> nn.Module:
    """``lpips`` with its SqueezeNet backbone read from torchvision's state dict file ``path``: the backbone's
    ``slices.<s>.<i>.*`` are torchvision's ``features.<i>.*``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        lpips.net.load_state_dict({k: features[k.split(".", 2)[2]] for k in lpips.net.state_dict()})
    except (OSError, RuntimeError, KeyError, AttributeError, pickle.UnpicklingError) as exc:
        raise ModelUnavailableError(
            f"cannot read LPIPS' SqueezeNet weights from {str(path)!r} ({type(exc).__name__}: {exc}); it must be "
            f"torchvision's squeezenet1_1 state dict (squeezenet1_1-b8a52dc0.pth)"
        ) from exc
    return lpips


def load_clip(name: str = DEFAULT_CLIP_MODEL, *, seed: int = 0) -> tuple[CLIPModel, CLIPTokenizer, object]:
    """CLIP model, tokenizer and PIL-based image processor from a hub id or local folder; ``"tiny"`` offline."""
    if name == TINY:
        return build_tiny_clip(seed), clip_tokenizer(), _ClipImageProcessor()
    kwargs = pretrained_kwargs(name)
    try:
        model = CLIPModel.from_pretrained(name, **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(name, **kwargs)
        processor = _ClipImageProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"cannot load the CLIP model {name!r} ({exc}). Give a hub id reachable from here, a local folder "
            f"saved with save_pretrained (model, tokenizer and preprocessor_config.json), or 'tiny'."
        ) from exc
    return model, tokenizer, processor


def load_dino(name: str = DEFAULT_DINO_MODEL, *, seed: int = 0) -> ViTModel:
    """DINO ViT from a hub id or local folder (without the unused pooler); ``"tiny"`` builds one offline."""
    if name == TINY:
        return build_tiny_dino(seed)
    report_filter, logger = UnusedPoolerReportFilter(), logging.getLogger("transformers.modeling_utils")
    logger.addFilter(report_filter)
    try:
        return ViTModel.from_pretrained(name, add_pooling_layer=False, **pretrained_kwargs(name))
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"cannot load the DINO model {name!r} ({exc}). Give a hub id reachable from here, a local ViTModel "
            f"folder, or 'tiny'."
        ) from exc
    finally:
        logger.removeFilter(report_filter)


def dino_key_projection(model: ViTModel) -> nn.Module:
    """The last transformer layer's key projection (output: keys of all heads, concatenated, CLS token first).

    transformers 5 names it ``layers[-1].attention.k_proj``; 4.x named it ``encoder.layer[-1].attention.attention
    .key``. Both are a Linear whose output, split into heads, is what DINO's ``qkv`` gives as keys.
    """
    layers = getattr(model, "layers", None)
    if layers is None and hasattr(model, "encoder"):
        layers = model.encoder.layer
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no transformer layers where a ViT keeps them")
    attention = layers[-1].attention
    for path in ("k_proj", "attention.key", "key"):
        module = attention
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return module
    raise TypeError(f"cannot find the key projection of the last layer of {type(model).__name__}")


def metric_model_names(preset: str = REAL, *, clip: str | None = None, dino: str | None = None,
                       lpips: str | None = None) -> dict[str, str]:
    """{"clip", "dino", "lpips": the model each loads}: the preset's defaults, ``clip``/``dino``/``lpips`` overriding
    one each."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {PRESETS}")
    tiny = preset == TINY
    return {"clip": clip or (TINY if tiny else DEFAULT_CLIP_MODEL),
            "dino": dino or (TINY if tiny else DEFAULT_DINO_MODEL),
            "lpips": lpips or (TINY if tiny else DEFAULT_LPIPS_NET)}


@dataclass(frozen=True)
class MetricModelSpec:
    """What ``load_metric_models`` is called with: the score stage loads it, or sends it to each Ray actor, which
    loads its own."""

    preset: str = REAL
    clip: str | None = None
    dino: str | None = None
    lpips: str | None = None
    device: str | None = None
    dtype: str | None = "fp32"
    lpips_weights: str | None = None

    def names(self) -> dict[str, str]:
        return metric_model_names(self.preset, clip=self.clip, dino=self.dino, lpips=self.lpips)

    def load(self) -> "MetricModels":
        return load_metric_models(self.preset, clip=self.clip, dino=self.dino, lpips=self.lpips, device=self.device,
                                  dtype=self.dtype, lpips_weights=self.lpips_weights)


def load_metric_models(
    preset: str = REAL,
    *,
    clip: str | None = None,
    dino: str | None = None,
    lpips: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "fp32",
    seed: int = 0,
    lpips_weights: str | os.PathLike | None = None,
) -> MetricModels:
    """Load all metric models. ``preset`` ``"real"`` or ``"tiny"`` picks the defaults; ``clip``/``dino`` (a hub
    id, a local folder or ``"tiny"``) and ``lpips`` (``"squeeze"`` or ``"tiny"``) override one model each.

    ``dtype`` applies to CLIP and DINO (``None``/``"auto"``: ``resolve_dtype``'s choice); LPIPS always runs in fp32.
    ``lpips_weights``: the SqueezeNet weights file of the real LPIPS (see ``build_lpips``). Every model is found
    first (``preflight``): a missing one is named, with the others, before any loads.
    """
    names = metric_model_names(preset, clip=clip, dino=dino, lpips=lpips)
    clip_name, dino_name, lpips_name = names["clip"], names["dino"], names["lpips"]
    device = resolve_device(device)
    dtype = resolve_dtype(device, dtype)
    check_models(metric_needs(clip_name, dino_name, lpips_name, lpips_weights))

    clip_model, tokenizer, processor = load_clip(clip_name, seed=seed)
    dino_model = load_dino(dino_name, seed=seed + 1)
    lpips_model = build_lpips(lpips_name, seed=seed + 2, weights=lpips_weights)
    for module, module_dtype in ((clip_model, dtype), (dino_model, dtype), (lpips_model, torch.float32)):
        module.requires_grad_(False)
        module.eval()
        module.to(device=device, dtype=module_dtype)
    return MetricModels(
        clip=clip_model, clip_tokenizer=tokenizer, clip_processor=processor, dino=dino_model, lpips=lpips_model,
        device=device, dtype=dtype, names=names,
    )
