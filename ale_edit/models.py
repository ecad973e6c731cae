"""Loading the editing engine's models: from a hub id or a local directory, or tiny from configs, offline.

Device and dtype are chosen here and nowhere else: CUDA in fp16 when present, else CPU in fp32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import torch

from . import compat
from .errors import EditInputError, ModelUnavailableError
from .tokenizer import clip_tokenizer

if TYPE_CHECKING:  # diffusers and transformers are imported where models are built: seconds saved at start-up
    from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

DEFAULT_DIFFUSION_MODEL = "SimianLuo/LCM_Dreamshaper_v7"
# Grounded-SAM, as the paper names it: Grounding DINO (the checkpoint the authors load) and SAM ViT-H, the
# segment-anything weights Grounded-SAM ships with. compat "authors" segments with SAM 2.1 Hiera-L instead.
DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-base"
DEFAULT_SEGMENTER = "facebook/sam-vit-huge"
# Grounding DINO and SAM decide boxes, labels and masks by thresholds that fp16 can flip: fp32 unless asked.
DEFAULT_DETECTOR_DTYPE = "fp32"
DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp32": torch.float32, "float32": torch.float32}
TINY = "tiny"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else CPU. A device this machine does not have is a named
    ``EditInputError``, before any model loads."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EditInputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise EditInputError(f"device {device!r}: no CUDA device is available on this machine (use auto or cpu)")
        if resolved.index is not None and resolved.index >= count:
            raise EditInputError(f"device {device!r}: this machine has {count} CUDA device(s)")
    elif resolved.type != "cpu":
        raise EditInputError(f"device {device!r}: only cpu and cuda are supported")
    return resolved


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``None`` or ``"auto"``: fp16 on CUDA, fp32 elsewhere (CPU kernels for fp16 are slow or missing)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise EditInputError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def grounding_model_names(compat_profile: str = "none", detector: str | None = None, segmenter: str | None = None,
                          *, tiny: bool = False) -> dict[str, str]:
    """{"detector", "segmenter": the model each loads}: the one given, else ``"tiny"`` with ``tiny``, else the
    compat profile's (``model.segmenter``), else the default."""
    if tiny:
        return {"detector": detector or TINY, "segmenter": segmenter or TINY}
    return {"detector": detector or DEFAULT_DETECTOR,
            "segmenter": compat.resolve(compat_profile, "model.segmenter", segmenter or None, DEFAULT_SEGMENTER)}


@dataclass
class DiffusionModels:
    """The latent consistency model and what it needs: UNet, VAE, CLIP text encoder and tokenizer, scheduler."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: LCMScheduler
    name: str
    device: torch.device
    dtype: torch.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save in the diffusers folder layout, so ``load_diffusion_models(directory)`` reads it back."""
        directory = Path(directory)
        self.unet.save_pretrained(directory / "unet")
        self.vae.save_pretrained(directory / "vae")
        self.text_encoder.save_pretrained(directory / "text_encoder")
        self.tokenizer.save_pretrained(directory / "tokenizer")
        self.scheduler.save_pretrained(directory / "scheduler")


def lcm_scheduler_config() -> dict:
    """The scheduler configuration of LCM_Dreamshaper_v7 (SD 1.5's betas, LCM's 50 original steps)."""
    return dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        original_inference_steps=50, clip_sample=False, set_alpha_to_one=True, steps_offset=1,
        prediction_type="epsilon", timestep_spacing="leading", timestep_scaling=10.0,
    )


def build_tiny_diffusion_models(seed: int = 0) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """A UNet, VAE and text encoder of the SD-1.x family, small enough for tests, with seeded random weights.

    The shape of the real thing is kept where the method depends on it: cross-attention at two resolutions and
    in the mid block, self-attention beside it, an LCM guidance projection, the VAE's 8x downscale and 4 latent
    channels, the real 49,408-token vocabulary and 77 positions.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
        time_cond_proj_dim=16,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        )
    )
    return unet, vae, text_encoder


def pretrained_kwargs(name: str) -> dict:
    """``from_pretrained``'s keywords for ``name``: a local folder must not fall back to the hub (and its misleading
    network errors)."""
    return dict(local_files_only=True) if Path(name).is_dir() else {}


def load_diffusion_models(
    name: str = DEFAULT_DIFFUSION_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    seed: int = 0,
) -> DiffusionModels:
    """Load the diffusion backbone from a hub id or a local diffusers folder; ``"tiny"`` builds it offline."""
    from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from .preflight import check_models, diffusion_need

    device = resolve_device(device)
    dtype = resolve_dtype(device, dtype)
    check_models([diffusion_need(name)])
    if name == TINY:
        unet, vae, text_encoder = build_tiny_diffusion_models(seed)
        tokenizer = clip_tokenizer()
        scheduler = LCMScheduler(**lcm_scheduler_config())
    else:
        kwargs = pretrained_kwargs(name)
        try:
            unet = UNet2DConditionModel.from_pretrained(name, subfolder="unet", torch_dtype=dtype, **kwargs)
            # The VAE runs in fp32 on every device: SD 1.x's VAE overflows in fp16 on bright images.
            vae = AutoencoderKL.from_pretrained(name, subfolder="vae", torch_dtype=torch.float32, **kwargs)
            text_encoder = CLIPTextModel.from_pretrained(name, subfolder="text_encoder", torch_dtype=dtype, **kwargs)
            tokenizer = CLIPTokenizer.from_pretrained(name, subfolder="tokenizer", **kwargs)
            scheduler = LCMScheduler.from_pretrained(name, subfolder="scheduler", **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(
                f"cannot load the diffusion model {name!r} ({exc}). Give a hub id reachable from here, a local "
                f"diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/), or 'tiny' for the "
                f"offline random-weight model used in tests."
            ) from exc
    # LCM needs its own scheduler whatever the folder holds; keep the folder's betas.
    if not isinstance(scheduler, LCMScheduler):
        scheduler = LCMScheduler.from_config(scheduler.config)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
        module.eval()
    for module in (unet, text_encoder):
        module.to(device)
        if module.dtype != dtype:
            module.to(dtype)
    vae.to(device)
    return DiffusionModels(unet, vae, text_encoder, tokenizer, scheduler, name, device, dtype)


def load_text_encoder(
    name: str = DEFAULT_DIFFUSION_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    seed: int = 0,
) -> tuple[CLIPTokenizer, CLIPTextModel, torch.dtype]:
    """Only the tokenizer and text encoder of a diffusion model (the embed stage needs no UNet or VAE)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    from .preflight import check_models, diffusion_need

    device = resolve_device(device)
    dtype = resolve_dtype(device, dtype)
    check_models([diffusion_need(name, text_encoder_only=True)])
    if name == TINY:
        text_encoder = build_tiny_diffusion_models(seed)[2]
        tokenizer = clip_tokenizer()
    else:
        kwargs = pretrained_kwargs(name)
        try:
            text_encoder = CLIPTextModel.from_pretrained(name, subfolder="text_encoder", torch_dtype=dtype, **kwargs)
            tokenizer = CLIPTokenizer.from_pretrained(name, subfolder="tokenizer", **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"cannot load the text encoder of {name!r} ({exc})") from exc
    text_encoder.requires_grad_(False).eval().to(device)
    if text_encoder.dtype != dtype:
        text_encoder.to(dtype)
    return tokenizer, text_encoder, dtype
