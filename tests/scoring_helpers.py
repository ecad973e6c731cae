"""What the scoring tests share: tiny metric models, edits written to PNG files, box masks."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ale_edit.bench.metric_models import load_metric_models
from ale_edit.bench.scoring import EditRecord, Scorer

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@pytest.fixture(scope="module")
def models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_metric_models("tiny", device="cpu")


def scorer_for(models, **kwargs) -> Scorer:
    return Scorer(models, progress=False, **kwargs)


def write_edit(tmp_path: Path, name: str, source: np.ndarray, edited: np.ndarray | None, masks: dict,
               targets: list[str], edit_type: str = "color") -> EditRecord:
    """Write PNGs for an edit (``edited=None``: the source file itself is the edit) and return its record.

    ``masks`` maps phrases to bool masks or uint8 grey levels; the first ``len(targets)`` phrases are edited."""
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(source).save(folder / "source.png")
    if edited is not None:
        Image.fromarray(edited).save(folder / "edited.png")
    mask_paths = {}
    for phrase, mask in masks.items():
        mask_paths[phrase] = folder / f"{phrase}_mask.png"
        # bool: a binary 0/255 mask; uint8: grey levels as they are (antialiased edges)
        levels = mask if mask.dtype == np.uint8 else np.where(mask, 255, 0).astype(np.uint8)
        Image.fromarray(levels).save(mask_paths[phrase])
    sources = list(masks)[: len(targets)]
    return EditRecord(
        edit_id=name, source_image=folder / "source.png",
        edited_image=folder / ("source.png" if edited is None else "edited.png"), masks=mask_paths,
        edits=tuple(zip(sources, targets)), edit_type=edit_type, n_objects=len(targets), image=name, index=0,
    )


def box(shape, top, left, bottom, right) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask

