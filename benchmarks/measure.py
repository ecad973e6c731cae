"""What the benchmarks share: the SD-1.5 architecture with random weights, time and peak-memory meters, running a
measurement in its own process, and the table's formatting.

Peak memory on CPU is the growth of the resident set during the measured work, read from the kernel's high-water
mark (``/proc/self/clear_refs`` resets VmHWM, VmHWM is read after; no sampling), in a process of its own per
variant, with ``MALLOC_MMAP_THRESHOLD_=131072`` so that freed blocks go back to the OS and RSS follows live
memory. On CUDA it is ``max_memory_allocated() - memory_allocated()`` around the work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

MiB = 2**20
RESULT_TAG = "BENCHMARK_RESULT "


# -- models ---------------------------------------------------------------------------------------------------------
def build_sd15_unet(seed: int = 0):
    """SD-1.5's UNet architecture with LCM_Dreamshaper_v7's guidance projection, seeded random weights."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
        attention_head_dim=8, norm_num_groups=32, time_cond_proj_dim=256,
    )


def build_sd15_models(device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The whole LCM_Dreamshaper_v7 architecture (UNet, VAE, CLIP ViT-L text encoder, tokenizer, LCM scheduler)
    with seeded random weights, as ``ale_edit.models.DiffusionModels``: built offline, nothing downloaded."""
    from diffusers import AutoencoderKL, LCMScheduler
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel

    diffusers_logging.set_verbosity_error()  # "modules that should be kept in float32: []" on every .to(dtype)

    from ale_edit.models import DiffusionModels, lcm_scheduler_config
    from ale_edit.tokenizer import clip_tokenizer

    unet = build_sd15_unet(seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        latent_channels=4, norm_num_groups=32, sample_size=768, scaling_factor=0.18215,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        hidden_act="quick_gelu",
    ))
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    unet.to(device, dtype)
    text_encoder.to(device, dtype)
    vae.to(device)  # fp32, as the library loads it
    return DiffusionModels(unet, vae, text_encoder, clip_tokenizer(), LCMScheduler(**lcm_scheduler_config()),
                           "sd15-random", device, dtype)


# -- time -----------------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- memory ---------------------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def current_rss() -> int:
    try:
        return _status_kib("VmRSS") * 1024
    except (OSError, KeyError):
        import psutil

        return psutil.Process().memory_info().rss


@contextmanager
def rss_peak_meter():
    """Yields a dict; on exit it holds ``base`` (RSS before), ``peak`` (max RSS during) and ``method``."""
    result = {"base": current_rss()}
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        _status_kib("VmHWM")
        method = "VmHWM"
    except (OSError, KeyError):
        method = "psutil-1ms"
    stop = threading.Event()
    samples = [result["base"]]
    if method == "psutil-1ms":
        import psutil

        proc = psutil.Process()

        def sample():
            while not stop.is_set():
                samples.append(proc.memory_info().rss)
                time.sleep(0.001)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
    try:
        yield result
    finally:
        if method == "VmHWM":
            result["peak"] = _status_kib("VmHWM") * 1024
        else:
            stop.set()
            thread.join()
            result["peak"] = max(samples)
        result["method"] = method


@contextmanager
def cuda_peak_meter(device: torch.device):
    """Yields a dict; on exit ``peak`` is the most memory allocated above what was allocated before."""
    sync(device)
    result = {"base": torch.cuda.memory_allocated(device)}
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield result
    finally:
        sync(device)
        result["peak"] = torch.cuda.max_memory_allocated(device)
        result["method"] = "cuda.max_memory_allocated"


class TensorPeak(TorchDispatchMode):
    """Live bytes of the tensors created under it (tracked per storage, freed via finalizers), and their peak.

    Independent of the C allocator, so deterministic: a check on RSS, which also counts malloc's caching and
    fragmentation."""

    def __init__(self):
        super().__init__()
        self.live: dict = {}
        self.current = self.peak = 0
        self.peak_at = ""

    def _free(self, key):
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if storage.nbytes() and key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    weakref.finalize(storage, self._free, key)
                    if self.current > self.peak:
                        self.peak, self.peak_at = self.current, f"{func} -> {tuple(t.shape)}"
        return out


# -- one measurement per process ------------------------------------------------------------------------------------
def emit(result: dict) -> None:
    """In a child: hand the parent its result (one tagged JSON line on stdout)."""
    print(RESULT_TAG + json.dumps(result), flush=True)


def run_child(cmd: list[str], label: str) -> dict:
    """Run ``cmd`` (a benchmark re-invoking itself for one variant) and return its emitted result, or
    ``{"error": why}`` when it failed or was killed for memory."""
    # A fixed mmap threshold (which also turns off glibc's dynamic one, that grows to 32 MiB) sends every
    # allocation over 128 KiB to mmap, returned to the OS on free, so RSS follows the live tensors instead of
    # malloc's cache. Set either variable yourself to override.
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")
    print(f"  memory: {label} in its own process ...", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit status {proc.returncode}"
        print(f"  memory: {label} failed: {why}", flush=True)
        return {"error": why}
    return json.loads(lines[-1][len(RESULT_TAG):])


# -- the table ------------------------------------------------------------------------------------------------------
def fmt_mib(n) -> str:
    return "-" if n is None else f"{n / MiB:,.0f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r) -> str:
    return "-" if r is None else f"{r:.3f}"


def verdict(r, target) -> str:
    return "n/a" if r is None else ("met" if r <= target else "MISSED")
