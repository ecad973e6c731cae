"""Shared fixtures: tiny offline models and the real ALE-Bench data beside the checkout."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

# Tests never reach a model hub: every model is tiny and built offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

ALE_BENCH = Path(__file__).resolve().parents[2] / "shared" / "ale_bench"


@pytest.fixture(scope="session")
def ale_bench() -> Path:
    if not (ALE_BENCH / "images").is_dir():
        pytest.skip(f"ALE-Bench data not found at {ALE_BENCH} (it lies in ../shared/ale_bench beside the checkout)")
    return ALE_BENCH


@pytest.fixture(scope="session")
def tiny_models():
    from ale_edit.models import load_diffusion_models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_diffusion_models("tiny", device="cpu")
