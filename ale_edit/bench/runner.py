"""Running the editor over an edit table: masks per edit, batched, resumable, shardable.

Each edit has a fingerprint (a hash of everything its output depends on: the edit, the settings, the schedule,
the seed, the model, the mask files' bytes). A finished edit is a pair ``<work>/<fingerprint>.png`` / ``.json``
written atomically, so an interrupted run started again redoes nothing that finished and loses nothing; a changed
setting changes the fingerprint and so is never served a stale result. When every edit of the table is done the
results are moved into the output folder in the authors' layout, ``<n>/<type>/<image>/edit_<index>.png``.

One code path edits, whatever runs it: ``edit_jobs`` turns a batch of jobs into outcomes (an image and its record,
or an error), ``record_outcome`` writes an outcome to the work folder. ``run_jobs`` calls both in this process; the
Ray backend (``ray_backend``) calls ``edit_jobs`` in its actors and ``record_outcome`` on the driver.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..atomic import write_bytes, write_json
from ..editor import EditRequest, Editor
from ..io import DISK, Files, load_image, load_mask
from .edit_masks import phrase_set_key
from .instances import ERROR_COLUMN, PROMPT_COLUMNS, row_prompts

log = logging.getLogger(__name__)


def file_digest(path: str | os.PathLike) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


# -- editing ------------------------------------------------------------------------------------------------------

@dataclass
class EditJob:
    edit_id: str
    image: str
    edit_type: str
    n_objects: int
    index: int
    pairs: list[tuple[str, str]]
    image_path: Path
    masks: dict[str, Path | None]  # source phrase -> mask file, None when the masks stage found none
    mask_origins: dict[str, str]
    schedule: float
    seed: int
    prompts: tuple[str, str] | None = None  # the whole marked prompts (PIE-Bench), for whole-prompt methods
    fingerprint: str = ""

    @property
    def relative_output(self) -> Path:
        """The authors' results layout."""
        return Path(str(self.n_objects)) / self.edit_type / self.image / f"edit_{self.index}.png"


def make_jobs(
    table: pd.DataFrame,
    image_paths: Mapping[str, Path],
    mask_records: Sequence[dict],
    masks_root: Path,
    *,
    schedule: float,
    seed: int,
    identity: Mapping,
) -> list[EditJob]:
    """One job per row; ``identity`` (model, settings, ...) goes into every fingerprint."""
    by_set = {(r["image"], r["set"], r["phrase"]): r for r in mask_records}
    jobs = []
    for row in table.itertuples(index=False):
        key = phrase_set_key(tuple(row.sources))
        masks, origins = {}, {}
        for phrase in row.sources:
            record = by_set.get((row.image, key, phrase))
            if record is None:
                raise KeyError(f"no mask record for {phrase!r} of edit {row.edit_id}: rerun the masks stage")
            masks[phrase] = masks_root / record["file"] if record["file"] else None
            origins[phrase] = record["origin"]
        job = EditJob(row.edit_id, row.image, row.edit_type, int(row.n_objects), int(row.index),
                      list(zip(row.sources, row.targets)), Path(image_paths[row.image]), masks, origins,
                      float(schedule), int(seed), row_prompts(row))
        # The prompts join the edit's identity only when it has them: ALE-Bench's fingerprints stay as they were.
        edit = [job.edit_id, job.pairs, job.schedule, job.seed] + ([list(job.prompts)] if job.prompts else [])
        digest = {
            "edit": edit,
            "image": file_digest(job.image_path),
            "masks": {p: (file_digest(f) if f else None) for p, f in masks.items()},
            "identity": identity,
        }
        job.fingerprint = hashlib.sha1(json.dumps(digest, sort_keys=True, default=str).encode()).hexdigest()
        jobs.append(job)
    return jobs


def shard(jobs: Sequence[EditJob], index: int, count: int) -> list[EditJob]:
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in [0, {count})")
    return list(jobs[index::count])


def is_done(job: EditJob, work: Path) -> bool:
    return (work / f"{job.fingerprint}.png").is_file() and (work / f"{job.fingerprint}.json").is_file()


def pending_jobs(jobs: Sequence[EditJob], work: Path) -> list[EditJob]:
    """The jobs not done in the work folder (a failed edit is not done: the next run tries it again)."""
    return [j for j in jobs if not is_done(j, work)]


def edit_batches(jobs: Sequence[EditJob], batch_size: int) -> list[list[EditJob]]:
    """``jobs`` in editor batches of ``batch_size``, in order. Every backend batches with this: batched results
    equal single ones only within float tolerance, so the same edits must share a UNet call for the images to be
    byte-identical whichever backend made them."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return [list(jobs[start : start + batch_size]) for start in range(0, len(jobs), batch_size)]


def job_files(job: EditJob) -> list[Path]:
    """The files an edit reads: its image and its mask files."""
    return [job.image_path, *(f for f in job.masks.values() if f is not None)]


def edit_request(job: EditJob, files: Files = DISK) -> EditRequest:
    """The editor's request for ``job``, its image and masks read through ``files``."""
    # The masks stage made the masks at the working size; the editor takes them with the original image and does
    # the one resize of the image itself.
    masks = {p: load_mask(f, name=p, files=files) for p, f in job.masks.items() if f is not None}
    return EditRequest(load_image(job.image_path, files=files), job.pairs, masks, edit_type=job.edit_type,
                       schedule=job.schedule, seed=job.seed, prompts=job.prompts)


@dataclass
class EditOutcome:
    """What editing a job gave: the edited image as PNG bytes and the record, or no image and a record holding
    the ``error``."""

    record: dict
    png: bytes | None = None

    @property
    def error(self) -> str | None:
        return self.record.get("error")


def encode_png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _worker() -> str:
    # Which process made an edit: a runtime fact for the work record, like its seconds (never in the results).
    return f"{socket.gethostname()}:{os.getpid()}"


def _failure(job: EditJob, exc: Exception) -> EditOutcome:
    return EditOutcome({"edit_id": job.edit_id, "mask_origins": job.mask_origins,
                        "error": f"{type(exc).__name__}: {exc}", "worker": _worker()})


def edit_jobs(editor: Editor, jobs: Sequence[EditJob], files: Files = DISK) -> list[EditOutcome]:
    """Edit ``jobs`` in one editor batch and return their outcomes, in order.

    An edit must not take its batch (or a stage, or a Ray actor) down with it: a job whose inputs cannot be read
    fails alone; when the batch raises, each of its jobs is edited alone, and one that still raises becomes an
    outcome with its error.
    """
    outcomes: dict[int, EditOutcome] = {}
    requests: dict[int, EditRequest] = {}
    for i, job in enumerate(jobs):
        try:
            requests[i] = edit_request(job, files)
        except Exception as exc:  # noqa: BLE001  (any failure is the edit's, recorded with its type)
            outcomes[i] = _failure(job, exc)

    def finish(indices, results):
        for i, result in zip(indices, results):
            # The editor's record, plus where each mask came from in the pipeline (manual / detected / missing).
            record = dict(result.record, edit_id=jobs[i].edit_id, mask_origins=jobs[i].mask_origins,
                          worker=_worker())
            outcomes[i] = EditOutcome(record, encode_png(result.image))

    ready = list(requests)
    try:
        if ready:
            finish(ready, editor.edit_batch([requests[i] for i in ready]))
    except Exception as exc:  # noqa: BLE001
        if len(ready) == 1:
            outcomes[ready[0]] = _failure(jobs[ready[0]], exc)
        else:
            log.warning("a batch of %d edits failed (%s: %s); editing each alone", len(ready), type(exc).__name__,
                        exc)
            for i in ready:
                try:
                    finish([i], editor.edit_batch([requests[i]]))
                except Exception as alone:  # noqa: BLE001
                    outcomes[i] = _failure(jobs[i], alone)
    return [outcomes[i] for i in range(len(jobs))]


def record_outcome(work: Path, job: EditJob, outcome: EditOutcome) -> None:
    """Write an edit's outcome to the work folder. An edited image first, then its record, written last: the pair
    marks the edit done. A failed edit leaves its record alone (with ``error``, no image): it is not done, so a
    later run tries it again, and until then ``collect`` makes it an error row."""
    image, record = work / f"{job.fingerprint}.png", work / f"{job.fingerprint}.json"
    if outcome.png is None:
        log.warning("edit %s failed: %s", job.edit_id, outcome.error)
        image.unlink(missing_ok=True)  # never an image beside a failure record: the pair would read as done
        write_json(record, outcome.record)
        return
    record.unlink(missing_ok=True)  # a failure an earlier run recorded: never a failure record beside the image
    write_bytes(image, outcome.png)
    write_json(record, outcome.record)


def edit_progress(total: int, done: int, progress: bool = True) -> tqdm:
    """The one progress bar of an edit run, over every job, whichever backend edits them."""
    return tqdm(total=total, initial=done, desc="edits", disable=not progress)


def run_jobs(editor: Editor, jobs: Sequence[EditJob], work: Path, *, batch_size: int = 1,
             progress: bool = True) -> int:
    """Edit every job not yet done, ``batch_size`` at a time, in this process; return how many were edited now
    (failed ones included)."""
    work.mkdir(parents=True, exist_ok=True)
    pending = pending_jobs(jobs, work)
    with edit_progress(len(jobs), len(jobs) - len(pending), progress) as bar:
        for batch in edit_batches(pending, batch_size):
            for job, outcome in zip(batch, edit_jobs(editor, batch)):
                record_outcome(work, job, outcome)
            bar.update(len(batch))
    return len(pending)


def timings(jobs: Sequence[EditJob], work: Path) -> dict[str, float]:
    """{edit id: seconds} of finished edits: a runtime fact, kept out of the results so that identical runs
    produce identical (DVC-hashed) outputs."""
    return {j.edit_id: float(json.loads((work / f"{j.fingerprint}.json").read_text())["seconds"]) for j in jobs
            if is_done(j, work)}


def collect(jobs: Sequence[EditJob], work: Path, out: Path, *, failed: pd.DataFrame | None = None,
            schedule: float | None = None) -> pd.DataFrame:
    """Move finished edits into ``out`` (authors' layout) and return the results table; every job must be done or
    have failed. A failed edit is a row with its ``error`` (``None`` for the others) and no image at its ``path``.
    The table holds only what the settings determine (no times), so identical runs give identical tables.

    ``failed`` (PIE-Bench): the edit table's error rows, carried into the results as rows without an image, with
    their reason in ``error``; the table then also has each edit's whole prompts, and is in edit id order.
    """
    missing = [j.edit_id for j in jobs if not (work / f"{j.fingerprint}.json").is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} edits are not done yet (first: {missing[:3]})")
    rows = []
    for job in jobs:
        record = json.loads((work / f"{job.fingerprint}.json").read_text())
        error = record.get("error")
        if error is None:
            target = out / job.relative_output
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(work / f"{job.fingerprint}.png", target)
        rows.append({
            "edit_id": job.edit_id, "image": job.image, "edit_type": job.edit_type, "n_objects": job.n_objects,
            "index": job.index, "sources": [s for s, _ in job.pairs], "targets": [t for _, t in job.pairs],
            "path": str(job.relative_output), "schedule": job.schedule,
            "mask_sources": json.dumps(job.mask_origins), "fallbacks": record.get("fallbacks", []),
            "warnings": record.get("warnings", []),
            "background_blending": bool(record.get("background_blending", False)), "fingerprint": job.fingerprint,
            ERROR_COLUMN: error,
        })
        if failed is not None:
            rows[-1].update(dict(zip(PROMPT_COLUMNS, job.prompts or (None, None))))
    columns = RESULT_COLUMNS + [ERROR_COLUMN]
    if failed is not None:
        for row in failed.itertuples(index=False):
            rows.append({
                "edit_id": row.edit_id, "image": row.image, "edit_type": row.edit_type,
                "n_objects": int(row.n_objects), "index": int(row.index), "sources": list(row.sources),
                "targets": list(row.targets), "path": None, "schedule": schedule, "mask_sources": json.dumps({}),
                "fallbacks": [], "warnings": [], "background_blending": False, "fingerprint": None,
                **{c: getattr(row, c) for c in PROMPT_COLUMNS}, ERROR_COLUMN: getattr(row, ERROR_COLUMN),
            })
        rows.sort(key=lambda r: r["edit_id"])
        columns = RESULT_COLUMNS + PROMPT_COLUMNS + [ERROR_COLUMN]
    results = pd.DataFrame(rows, columns=columns)
    results[ERROR_COLUMN] = results[ERROR_COLUMN].astype(object).where(results[ERROR_COLUMN].notna(), None)
    return results


RESULT_COLUMNS = ["edit_id", "image", "edit_type", "n_objects", "index", "sources", "targets", "path",
                  "schedule", "mask_sources", "fallbacks", "warnings", "background_blending", "fingerprint"]


def edit_identity(model: str, dtype, settings) -> dict:
    """What every fingerprint holds besides the edit: the model, the precision it runs in, the settings. Not the
    backend, the device or the batch size, which do not change what an edit is."""
    return {"model": model, "dtype": str(dtype), "settings": settings.as_dict()}


def settings_identity(editor: Editor) -> dict:
    return edit_identity(editor.models.name, editor.models.dtype, editor.settings)


@dataclass(frozen=True)
class EditorSpec:
    """What builds the stage's ``Editor``: the diffusion model, where it runs, the settings. The local backend
    loads it in the stage; the Ray backend sends it to each actor, which loads its own."""

    model: str
    device: str
    dtype: str
    settings: object  # EditSettings

    def identity(self) -> dict:
        """The fingerprints' identity of the editor this spec loads (``edit_identity``), known without loading it:
        a Ray driver computes it for actors on other machines, with the device they will use."""
        import torch

        from ..models import resolve_device, resolve_dtype

        # Not resolve_device for a named device: the actors' CUDA need not be on this machine.
        device = resolve_device(self.device) if self.device in (None, "auto") else torch.device(self.device)
        return edit_identity(self.model, resolve_dtype(device, self.dtype), self.settings)

    def load(self, embeddings: str | os.PathLike | bytes | None = None, *, progress: bool = True) -> Editor:
        """The editor, its text encoder holding the cached encodings of ``embeddings`` (a Parquet file or its
        contents; see ``TextEncoder.load``)."""
        from ..embeddings import TextEncoder, encoder_id
        from ..models import load_diffusion_models

        models = load_diffusion_models(self.model, self.device, self.dtype)
        text = TextEncoder(models.tokenizer, models.text_encoder, encoder_id(self.model, models.dtype))
        text.load(embeddings)
        return Editor(models, self.settings, text_encoder=text, progress=progress)


def remove_assembled(work: Path, results: Path) -> tuple[int, int]:
    """Remove the work files of edits already assembled into a results folder: ``results/<type>/edits.parquet``
    names their fingerprints, ``work/<type>/<fingerprint>.png|json`` are the files. Sharded runs leave them
    behind when ``dvc repro`` then restores the results from DVC's cache instead of assembling them. Returns
    (files removed, work files kept because no results table names them)."""
    removed = kept = 0
    for folder in sorted(p for p in Path(work).iterdir() if p.is_dir()) if Path(work).is_dir() else []:
        table = Path(results) / folder.name / "edits.parquet"
        assembled = set(pd.read_parquet(table, columns=["fingerprint"])["fingerprint"]) if table.is_file() else set()
        for file in sorted(folder.iterdir()):
            if file.suffix in (".png", ".json") and file.stem in assembled:
                file.unlink()
                removed += 1
            else:
                kept += 1
    return removed, kept
