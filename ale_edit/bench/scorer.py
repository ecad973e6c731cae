"""``Scorer``: the metric models run over lists of edits, one row of ``COLUMNS`` per edit.

Batching and memory: ``batch_size`` edits are loaded at a time, and CLIP, its texts and DINO run in batches of
``batch_size`` images. The pixel metrics (SSIM and LPIPS maps, MSE, PSNR) and DINO's full-size preprocessing run
in chunks bounded by pixels instead, ``pixel_budget`` pixels per call (at least one image), so their memory does
not grow with ``batch_size``: at 1000x1000 a batch of 16 edits is 16 calls of one image, not one call of 16.
Within a call SSIM's map is made in strips of rows and LPIPS runs one layer at a time (``metrics``), so one
1000x1000 call peaks at about 400 MB (the whole-image computation of one call took about 900 MB, of 16 about 8 GB).
``pixel_budget=None`` scores all the edits of a batch (of one size) in one call, as before the budget existed.
The masked images CLIP reads are made per CLIP batch, not for a whole batch of edits at once (their features
then make one score matrix, as before).

An edit's numbers depend only on the batch of edits it is scored with (``score_records`` cuts the records into
batches in order), never on what was scored before: the target texts are encoded per batch, each source image's
DINO self-similarity alone. So scorers that each score some of the batches (Ray actors) give exactly the numbers
of one scorer that scores them all, also on devices whose kernels round differently with a batch's make-up.
"""

from __future__ import annotations

import collections.abc
import json
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..errors import EditInputError
from .metric_models import MetricModels
from .metrics import (
    BACKGROUND, DINO_INPUTS, MASK_WEIGHTS, METRIC_COLUMNS, Region, background_metrics, clip_region_metrics,
    clip_score_matrix, dino_preprocess, dino_self_similarity, joined_prompt, weighted_pixels,
)
from ..io import DISK, Files
from .records import EditRecord, LRUCache, PreparedEdit, prepare_edit

INFO_COLUMNS = (
    "edit_id", "image", "n_objects", "edit_type", "index", "edits", "source_image", "edited_image", "bg_fraction",
    "resized_from",
)
COLUMNS = INFO_COLUMNS + METRIC_COLUMNS + ("error",)
# Pixels per call of the pixel metrics and of DINO's preprocessing: one 1000x1000 image (ALE-Bench's size), or
# four 512x512 ones.
DEFAULT_PIXEL_BUDGET = 1 << 20


def batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pixel_chunks(items: Sequence, pixels_each: int, budget: int | None) -> Iterable[Sequence]:
    """``items`` (images of ``pixels_each`` pixels) in chunks of at most ``budget`` pixels, at least one image
    per chunk; all in one chunk when ``budget`` is None."""
    size = len(items) if budget is None else max(1, budget // max(1, pixels_each))
    return batches(items, max(1, size))


def _by_shape(shapes: Iterable[tuple]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    return groups


def _features(output) -> torch.Tensor:
    # transformers 4.x returns the projected features; 5.x a model output whose pooler_output they are.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class _MaskedImages(collections.abc.Sequence):
    """The masked edited images CLIP reads (I_e x (1 - M), I_e x m_j), each made when it is read: CLIP takes them
    one batch at a time, so a batch of edits never holds all of them at once."""

    def __init__(self, batch: list[tuple[dict, PreparedEdit]], owners: list[tuple[int, Region]]) -> None:
        self.batch, self.owners = batch, owners

    def __len__(self) -> int:
        return len(self.owners)

    def __getitem__(self, i: int) -> np.ndarray:
        k, region = self.owners[i]
        edit = self.batch[k][1]
        return weighted_pixels(edit.edited, edit.region_weight(region))


def edited_texts(record: EditRecord) -> tuple[str, ...]:
    """The texts "Edited" reads each object's region against: its target phrase, or the whole target prompt of a
    PIE-Bench edit (one object)."""
    return (record.target_prompt,) * len(record.targets) if record.target_prompt else tuple(record.targets)


def empty_row(record: EditRecord) -> dict:
    """The per-edit row of ``record`` with every metric NaN and no error."""
    row = {
        "edit_id": record.edit_id,
        "image": record.image,
        "n_objects": int(record.n_objects),
        "edit_type": record.edit_type,
        "index": int(record.index),
        "edits": json.dumps([list(e) for e in record.edits], ensure_ascii=False),
        "source_image": str(record.source_image),
        "edited_image": str(record.edited_image),
        "bg_fraction": float("nan"),
        "resized_from": None,
    }
    row.update({m: float("nan") for m in METRIC_COLUMNS})
    row["error"] = None
    return row


def per_edit_frame(rows: list[dict]) -> pd.DataFrame:
    """The per-edit table with a fixed column order and types (also when empty)."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for name in ("n_objects", "index"):
        frame[name] = frame[name].astype("int64")
    for name in ("bg_fraction",) + METRIC_COLUMNS:
        frame[name] = frame[name].astype("float64")
    for name in ("resized_from", "error"):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


class Scorer:
    """Holds the metric models and scores lists of edits in batches.

    ``mask_weights``: ``"binary"`` or ``"soft"`` (see ``ale_edit.bench.metrics``). ``resize_edited``: resize an
    edited image of another size than its source instead of recording an error. ``batch_size``: edits loaded at a
    time and the batch size of CLIP and DINO; ``pixel_budget``: pixels per call of the pixel metrics (see the
    module). Text features and the sources' DINO self-similarities are cached (sources repeat across the edits of
    an image).
    """

    def __init__(
        self,
        models: MetricModels,
        *,
        dino_input: str = "published",
        mask_weights: str = "binary",
        resize_edited: bool = False,
        batch_size: int = 16,
        pixel_budget: int | None = DEFAULT_PIXEL_BUDGET,
        progress: bool = True,
        cache_size: int = 32,
    ) -> None:
        if dino_input not in DINO_INPUTS:
            raise ValueError(f"unknown dino_input {dino_input!r}; choose one of {DINO_INPUTS}")
        if mask_weights not in MASK_WEIGHTS:
            raise ValueError(f"unknown mask_weights {mask_weights!r}; choose one of {MASK_WEIGHTS}")
        _check_batch_size(batch_size)
        if pixel_budget is not None and pixel_budget < 1:
            raise ValueError(f"pixel_budget must be at least 1 (or None: no bound), got {pixel_budget}")
        self.models = models
        self.dino_input = dino_input
        self.mask_weights = mask_weights
        self.resize_edited = resize_edited
        self.batch_size = batch_size
        self.pixel_budget = pixel_budget
        self.progress = progress
        self._text_cache: dict[str, torch.Tensor] = {}
        self._source_sim_cache = LRUCache(cache_size)
        self._load_cache = LRUCache(4 * cache_size)

    @property
    def device(self) -> torch.device:
        return self.models.device

    # -- CLIP ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def clip_image_features(self, images: Sequence[np.ndarray], *, batch_size: int | None = None) -> torch.Tensor:
        """CLIP image features (N, P) of uint8 HxWx3 images, through the CLIP image processor, batched."""
        out = []
        size = batch_size or self.batch_size
        for start in range(0, len(images), size):  # by index: a lazy sequence makes only this batch's images
            batch = [images[i] for i in range(start, min(start + size, len(images)))]
            pixels = self.models.clip_processor(images=[Image.fromarray(a) for a in batch], return_tensors="pt")
            pixel_values = pixels["pixel_values"].to(self.device, self.models.dtype)
            out.append(_features(self.models.clip.get_image_features(pixel_values=pixel_values)).float())
        return torch.cat(out) if out else torch.empty(0)

    @torch.no_grad()
    def clip_text_features(self, texts: Sequence[str], *, batch_size: int | None = None) -> torch.Tensor:
        """CLIP text features (N, P), cached per text. Longer than 77 tokens is truncated (keeping the EOS token)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for batch in batches(missing, batch_size or self.batch_size):
            tokens = self.models.clip_tokenizer(
                list(batch), padding=True, truncation=True, max_length=77, return_tensors="pt"
            )
            feats = _features(
                self.models.clip.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )
            ).float()
            for text, feat in zip(batch, feats):
                self._text_cache[text] = feat
        return torch.stack([self._text_cache[t] for t in texts])

    def clip_scores(self, images: Sequence[np.ndarray], texts: Sequence[str], *,
                    batch_size: int | None = None) -> np.ndarray:
        """CLIP score [images x texts] = 100 * max(cos, 0)."""
        return clip_score_matrix(self.clip_image_features(images, batch_size=batch_size),
                                 self.clip_text_features(texts, batch_size=batch_size)).cpu().numpy()

    # -- DINO ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def self_similarities(self, images: Sequence[np.ndarray], *, batch_size: int | None = None) -> list[torch.Tensor]:
        """DINO key self-similarity matrices of uint8 HxWx3 images, batched among images of equal size.

        The full-size images are brought to DINO's input in chunks of ``pixel_budget`` pixels; DINO then runs on
        the (small) inputs in batches of ``batch_size``.
        """
        batch_size = batch_size or self.batch_size
        result: list[torch.Tensor | None] = [None] * len(images)
        for indices in _by_shape(image.shape for image in images).values():
            height, width = images[indices[0]].shape[:2]
            inputs = []
            for chunk in pixel_chunks(indices, height * width, self.pixel_budget):
                stacked = torch.stack([torch.from_numpy(np.ascontiguousarray(images[i])) for i in chunk])
                inputs.append(dino_preprocess(stacked.permute(0, 3, 1, 2).to(self.device), self.dino_input))
            inputs = torch.cat(inputs)
            for start in range(0, len(indices), batch_size):
                sims = dino_self_similarity(self.models.dino, inputs[start : start + batch_size])
                for i, sim in zip(indices[start : start + batch_size], sims):
                    result[i] = sim
        return result  # type: ignore[return-value]

    def structure_distance(self, source: np.ndarray, edited: np.ndarray) -> float:
        """MSE between the DINO key self-similarities of two uint8 HxWx3 images."""
        sim_s, sim_e = self.self_similarities([source, edited])
        return float(F.mse_loss(sim_e, sim_s))

    # -- a batch of edits ------------------------------------------------------------------------------------
    def _pixel_metrics(self, batch: list[tuple[dict, PreparedEdit]]) -> None:
        for indices in _by_shape(edit.source.shape for _, edit in batch).values():
            height, width = batch[indices[0]][1].source.shape[:2]
            for chunk in pixel_chunks(indices, height * width, self.pixel_budget):
                def stack(get):
                    return torch.stack([torch.from_numpy(np.ascontiguousarray(get(batch[k][1]))) for k in chunk])

                # float32 / 255, as the published code (np.float32 / 255); the weight 1 - M cast to float32.
                source = stack(lambda e: e.source).permute(0, 3, 1, 2).to(self.device, torch.float32) / 255
                edited = stack(lambda e: e.edited).permute(0, 3, 1, 2).to(self.device, torch.float32) / 255
                background = stack(lambda e: e.background_weight)[:, None].to(self.device, torch.float32)
                with torch.no_grad():
                    values = background_metrics(source, edited, background, self.models.lpips)
                for j, k in enumerate(chunk):
                    row = batch[k][0]
                    for name, tensor in values.items():
                        row[name] = float(tensor[j])

    def _clip_metrics(self, batch: list[tuple[dict, PreparedEdit]], batch_size: int) -> None:
        owners: list[tuple[int, Region]] = []
        for k, (_, edit) in enumerate(batch):
            if edit.has_background:
                owners.append((k, BACKGROUND))
            owners += [(k, j) for j in range(len(edit.object_masks))]
        texts = list(dict.fromkeys(
            t for _, edit in batch for t in (*edit.record.targets, joined_prompt(edit.record.targets),
                                             *edited_texts(edit.record))
        ))
        self._text_cache.clear()  # the batch's texts are encoded together, whatever earlier batches encoded
        scores = self.clip_scores(_MaskedImages(batch, owners), texts, batch_size=batch_size)
        row_of = {owner: i for i, owner in enumerate(owners)}
        col_of = {t: i for i, t in enumerate(texts)}
        for k, (row, edit) in enumerate(batch):
            def score(region: Region, text: str, k=k) -> float:
                return float(scores[row_of[(k, region)], col_of[text]])

            row.update(clip_region_metrics(edit.record.targets, score, has_background=edit.has_background,
                                           edited_texts=edited_texts(edit.record)))

    def _structure_metrics(self, batch: list[tuple[dict, PreparedEdit]], batch_size: int) -> None:
        keys = [(str(edit.record.source_image), edit.source.shape) for _, edit in batch]
        for key, (_, edit) in zip(keys, batch):
            if key not in self._source_sim_cache:  # alone: the same numbers whichever batch first needs it
                self._source_sim_cache[key] = self.self_similarities([edit.source])[0]
        sims = self.self_similarities([edit.edited for _, edit in batch], batch_size=batch_size)
        for key, (row, _), sim_e in zip(keys, batch, sims):
            self._source_sim_cache.move_to_end(key)
            row["structure_distance"] = float(F.mse_loss(sim_e, self._source_sim_cache[key]))
        while len(self._source_sim_cache) > self._source_sim_cache.size:
            self._source_sim_cache.popitem(last=False)

    def score_prepared(self, batch: list[tuple[dict, PreparedEdit]], *, batch_size: int | None = None) -> None:
        """Fill the metric columns of each (row, prepared edit) pair in place."""
        if not batch:
            return
        batch_size = batch_size or self.batch_size
        for row, edit in batch:
            row["bg_fraction"] = float(edit.background_weight.mean())
            if edit.resized_from is not None:
                row["resized_from"] = f"{edit.resized_from[0]}x{edit.resized_from[1]}"
        self._pixel_metrics(batch)
        self._clip_metrics(batch, batch_size)
        self._structure_metrics(batch, batch_size)

    def prepare(self, record: EditRecord, files: Files = DISK) -> PreparedEdit:
        """Load an edit as this scorer reads it (its mask weights, resizing or not), its files read through
        ``files``."""
        return prepare_edit(record, cache=self._load_cache, mask_weights=self.mask_weights,
                            resize_edited=self.resize_edited, files=files)

    def score_records(
        self, records: Sequence[EditRecord], *, batch_size: int | None = None, progress: bool | None = None,
        files: Files = DISK,
    ) -> pd.DataFrame:
        """Score edits; one row per record, in order, with ``COLUMNS``. Bad input gives NaNs and an ``error``.

        ``batch_size`` and ``progress`` override the scorer's settings for this call; ``files``: where the
        records' files are read (``ale_edit.io.Files``).
        """
        if batch_size is not None:
            _check_batch_size(batch_size)
        batch_size = batch_size or self.batch_size
        rows: list[dict] = []
        show = self.progress if progress is None else progress
        with tqdm(total=len(records), desc="scoring", unit="edit", disable=not show) as bar:
            for chunk in batches(list(records), batch_size):
                prepared = []
                for record in chunk:
                    row = empty_row(record)
                    rows.append(row)
                    try:
                        prepared.append((row, self.prepare(record, files)))
                    except EditInputError as exc:
                        row["error"] = str(exc)
                self.score_prepared(prepared, batch_size=batch_size)
                bar.update(len(chunk))
        return per_edit_frame(rows)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
