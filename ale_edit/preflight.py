"""Preflight: every model a run will need is found before any work starts or any model loads.

A model is a hub id, a local folder, ``"tiny"`` (built offline, needs nothing) or, for LPIPS' backbone, a weights
file. A name that looks like a path (it starts with ``.``, ``/`` or ``~``, holds more than one ``/``, names a file
such as ``.pth``, or its first folder exists here) is a local path and is never taken as a hub id: it must exist and
hold its config files. A hub id must be in the local Hugging Face cache when the hub cannot be used: when
``HF_HUB_OFFLINE=1``, or when one quick connection to the hub fails (a short timeout, no retries). The hub being
unreachable, the loads that follow then read the cache offline instead of retrying each file.

Every miss is collected and raised as one ``ModelUnavailableError`` whose message is one line naming each missing
model and how to provide it, in seconds rather than after minutes of loading and retries.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

from .errors import ModelUnavailableError
from .models import TINY

LPIPS_SQUEEZE_FILE = "squeezenet1_1-b8a52dc0.pth"  # torchvision's SqueezeNet1_1_Weights file (checked in tests)
LPIPS_URL_HOST = "download.pytorch.org"
SEGMENTER_TYPES = ("sam", "sam2", "sam2_video")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
CONNECT_TIMEOUT_S = 3.0

# The files each kind of model folder must hold (subfolders of a diffusers pipeline included); "a|b": either.
# A processor is saved as preprocessor_config.json on the hub, as processor_config.json by transformers 5.
PROCESSOR = "preprocessor_config.json|processor_config.json"
DIFFUSION_FILES = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer_config.json",
                   "scheduler/scheduler_config.json")
TEXT_ENCODER_FILES = ("text_encoder/config.json", "tokenizer/tokenizer_config.json")
PROCESSOR_FILES = ("config.json", PROCESSOR)
CLIP_FILES = ("config.json", PROCESSOR, "tokenizer_config.json")
CONFIG_FILES = ("config.json",)


@dataclass(frozen=True)
class ModelNeed:
    """A model a run needs: what it is (``"segmenter"``), its name (hub id, folder or ``"tiny"``) and the files
    it must have (relative to its folder or repository)."""

    role: str
    name: str
    files: tuple[str, ...] = CONFIG_FILES
    hint: str = ""  # how to provide it, beyond "a hub id, a local folder or 'tiny'"


@dataclass(frozen=True)
class WeightsFileNeed:
    """A weights file a run needs (LPIPS' backbone): ``path`` given explicitly by ``setting``, or the default
    location it is downloaded to from ``url_host``."""

    role: str
    path: Path
    setting: str
    given: bool
    url_host: str = LPIPS_URL_HOST


def looks_like_path(name: str) -> bool:
    """Whether ``name`` means a local path rather than a hub id ("owner/name" or "name")."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        return True
    if name.lower().endswith(CHECKPOINT_SUFFIXES):
        return True
    return Path(name).exists() or (("/" in name) and Path(name.split("/", 1)[0]).is_dir())


@functools.lru_cache(maxsize=None)
def reachable(host: str, port: int = 443, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """One TCP connection to ``host`` with a short timeout, once per process: no retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_asked() -> bool:
    """``HF_HUB_OFFLINE`` is set: no download is to be tried, from the hub or (for LPIPS) torchvision."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """True when the Hugging Face hub must not or cannot be used: ``HF_HUB_OFFLINE`` set, or it is unreachable."""
    from huggingface_hub import constants

    return offline_asked() or not reachable(urlparse(constants.ENDPOINT).hostname or "huggingface.co")


def go_offline() -> None:
    """Make the loads that follow read the local cache only (the hub did not answer): no retries per file."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def _folder_problem(need: ModelNeed, folder: Path) -> str | None:
    if need.role == "segmenter" and folder.suffix.lower() in CHECKPOINT_SUFFIXES:
        what = "a checkpoint file" if folder.is_file() else "a checkpoint file name (no such file)"
        return (f"the segmenter {need.name!r} is {what}, not a transformers folder: convert a segment-anything "
                f"checkpoint with `ale-edit convert-sam {need.name} OUT_DIR` and give OUT_DIR")
    if not folder.is_dir():
        return f"the {need.role} {need.name!r}: no such folder"
    missing = [f for f in need.files if not any((folder / a).is_file() for a in f.split("|"))]
    if missing:
        return f"the {need.role} {need.name!r}: the folder has no {_file_list(missing)}"
    if need.role == "segmenter":
        return _segmenter_type_problem(need.name, folder / "config.json")
    return None


def _file_list(files: list[str]) -> str:
    """"a, b|c" -> "a, b or c" (``|`` separates a file's alternatives)."""
    return ", ".join(f.replace("|", " or ") for f in files)


def _segmenter_type_problem(name: str, config: Path) -> str | None:
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as exc:
        return f"the segmenter {name!r}: its config.json cannot be read ({exc})"
    if model_type not in SEGMENTER_TYPES:
        return (f"the segmenter {name!r} is a {model_type!r} model; it must be SAM or SAM 2 (model_type "
                f"{', '.join(SEGMENTER_TYPES)})")
    return None


def _cache_problem(need: ModelNeed) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = {f: next((p for a in f.split("|") if isinstance(p := try_to_load_from_cache(need.name, a), str)), None)
             for f in need.files}
    missing = [f for f, path in found.items() if path is None]
    if missing:
        hint = f" ({need.hint})" if need.hint else ""
        return (f"the {need.role} {need.name!r} is not in the local Hugging Face cache (no {_file_list(missing)}) "
                f"and the hub is offline: download it where the hub is reachable (`hf download {need.name}`), "
                f"or give a local folder{hint}")
    if need.role == "segmenter":
        return _segmenter_type_problem(need.name, Path(found["config.json"]))
    return None


def _weights_problem(need: WeightsFileNeed, offline: bool) -> str | None:
    if need.path.is_file():
        return None
    if need.given:
        return f"the {need.role} file {str(need.path)!r} ({need.setting}): no such file"
    if offline:
        return (f"the {need.role} file {str(need.path)!r} is missing and cannot be downloaded offline: copy "
                f"{need.path.name} there (or set TORCH_HOME) or give its path with {need.setting}")
    return None


def model_problems(needs: Iterable[ModelNeed | WeightsFileNeed]) -> list[str]:
    """What is missing, one phrase per model; empty when every model can be loaded. Checks the network at most
    once per host, and only when a hub id or a weights file is not already here."""
    problems, hub_needs = [], []
    for need in needs:
        if isinstance(need, WeightsFileNeed):
            if not need.path.is_file():
                offline = not need.given and (offline_asked() or not reachable(need.url_host))
                problem = _weights_problem(need, offline)
                if problem:
                    problems.append(problem)
        elif need.name == TINY:
            continue
        elif looks_like_path(need.name):
            problem = _folder_problem(need, Path(need.name).expanduser())
            if problem:
                problems.append(problem)
        else:
            hub_needs.append(need)
    if hub_needs and hub_offline():
        go_offline()
        problems += [p for p in map(_cache_problem, hub_needs) if p]
    return problems


def check_models(needs: Iterable[ModelNeed | WeightsFileNeed]) -> None:
    """Raise ``ModelUnavailableError`` with one line naming every model that cannot be loaded."""
    problems = model_problems(list(needs))
    if problems:
        raise ModelUnavailableError(f"{len(problems)} model(s) not available: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------------------
# What each run needs


def diffusion_need(name: str, *, text_encoder_only: bool = False) -> ModelNeed:
    files = TEXT_ENCODER_FILES if text_encoder_only else DIFFUSION_FILES
    return ModelNeed("diffusion model", name, files, "a diffusers folder: unet/, vae/, text_encoder/, tokenizer/, "
                                                      "scheduler/")


def grounding_needs(detector: str, segmenter: str) -> list[ModelNeed]:
    return [ModelNeed("detector", detector, PROCESSOR_FILES),
            ModelNeed("segmenter", segmenter, PROCESSOR_FILES,
                      "a segment-anything .pth converts with `ale-edit convert-sam`")]


def metric_needs(clip: str, dino: str, lpips: str, lpips_weights: str | os.PathLike | None = None,
                 setting: str = "score.lpips_weights") -> list[ModelNeed | WeightsFileNeed]:
    """CLIP, DINO and, for the real LPIPS, its SqueezeNet weights file (``lpips_weights``, else torchvision's
    download location under ``$TORCH_HOME``)."""
    needs: list[ModelNeed | WeightsFileNeed] = [ModelNeed("CLIP model", clip, CLIP_FILES),
                                                ModelNeed("DINO model", dino, CONFIG_FILES)]
    if lpips != TINY:
        needs.append(lpips_weights_need(lpips_weights, setting))
    return needs


def lpips_weights_need(lpips_weights: str | os.PathLike | None, setting: str) -> WeightsFileNeed:
    if lpips_weights:
        return WeightsFileNeed("LPIPS SqueezeNet weights", Path(lpips_weights).expanduser(), setting, True)
    return WeightsFileNeed("LPIPS SqueezeNet weights", default_lpips_weights(), setting, False)


def default_lpips_weights() -> Path:
    """Where torchvision keeps the SqueezeNet 1.1 weights LPIPS uses: ``$TORCH_HOME/hub/checkpoints``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_SQUEEZE_FILE
