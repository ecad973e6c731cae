"""Running the editor over an edit table: masks per edit, batched, resumable, shardable.

Each edit has a fingerprint (a hash of everything its output depends on: the edit, the settings, the schedule,
the seed, the model, the mask files' bytes). A finished edit is a pair ``<work>/<fingerprint>.png`` / ``.json``
written atomically, so an interrupted run started again redoes nothing that finished and loses nothing; a changed
setting changes the fingerprint and so is never served a stale result. When every edit of the table is done the
results are moved into the output folder in the authors' layout, ``<n>/<type>/<image>/edit_<index>.png``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..atomic import save_image, write_json
from ..editor import EditRequest, Editor
from ..io import load_image, load_mask
from .edit_masks import phrase_set_key
from .instances import ERROR_COLUMN, PROMPT_COLUMNS, row_prompts


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


def run_jobs(editor: Editor, jobs: Sequence[EditJob], work: Path, *, batch_size: int = 1,
             progress: bool = True) -> int:
    """Edit every job not yet done, ``batch_size`` at a time; return how many were edited now."""
    work.mkdir(parents=True, exist_ok=True)
    pending = [j for j in jobs if not is_done(j, work)]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="edits", disable=not progress)
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        requests = []
        for job in batch:
            # The masks stage made the masks at the working size; the editor takes them with the original image
            # and does the one resize of the image itself.
            masks = {p: load_mask(f, name=p) for p, f in job.masks.items() if f is not None}
            requests.append(EditRequest(load_image(job.image_path), job.pairs, masks, edit_type=job.edit_type,
                                        schedule=job.schedule, seed=job.seed, prompts=job.prompts))
        for job, result in zip(batch, editor.edit_batch(requests)):
            # The editor's record, plus where each mask came from in the pipeline (manual / detected / missing).
            record = dict(result.record, edit_id=job.edit_id, mask_origins=job.mask_origins)
            save_image(work / f"{job.fingerprint}.png", result.image)
            write_json(work / f"{job.fingerprint}.json", record)  # written last: it marks the edit done
        bar.update(len(batch))
    bar.close()
    return len(pending)


def timings(jobs: Sequence[EditJob], work: Path) -> dict[str, float]:
    """{edit id: seconds} of finished edits: a runtime fact, kept out of the results so that identical runs
    produce identical (DVC-hashed) outputs."""
    return {j.edit_id: float(json.loads((work / f"{j.fingerprint}.json").read_text())["seconds"]) for j in jobs
            if is_done(j, work)}


def collect(jobs: Sequence[EditJob], work: Path, out: Path, *, failed: pd.DataFrame | None = None,
            schedule: float | None = None) -> pd.DataFrame:
    """Move finished edits into ``out`` (authors' layout) and return the results table; every job must be done.
    The table holds only what the settings determine (no times), so identical runs give identical tables.

    ``failed`` (PIE-Bench): the edit table's error rows, carried into the results as rows without an image, with
    their reason in ``error``; the table then also has each edit's whole prompts, and is in edit id order.
    """
    missing = [j.edit_id for j in jobs if not is_done(j, work)]
    if missing:
        raise RuntimeError(f"{len(missing)} edits are not done yet (first: {missing[:3]})")
    rows = []
    for job in jobs:
        target = out / job.relative_output
        target.parent.mkdir(parents=True, exist_ok=True)
        record = json.loads((work / f"{job.fingerprint}.json").read_text())
        shutil.copyfile(work / f"{job.fingerprint}.png", target)
        rows.append({
            "edit_id": job.edit_id, "image": job.image, "edit_type": job.edit_type, "n_objects": job.n_objects,
            "index": job.index, "sources": [s for s, _ in job.pairs], "targets": [t for _, t in job.pairs],
            "path": str(job.relative_output), "schedule": job.schedule,
            "mask_sources": json.dumps(job.mask_origins), "fallbacks": record["fallbacks"],
            "warnings": record.get("warnings", []),
            "background_blending": bool(record["background_blending"]), "fingerprint": job.fingerprint,
        })
        if failed is not None:
            rows[-1].update(dict(zip(PROMPT_COLUMNS, job.prompts or (None, None))), error=None)
    if failed is None:
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for row in failed.itertuples(index=False):
        rows.append({
            "edit_id": row.edit_id, "image": row.image, "edit_type": row.edit_type, "n_objects": int(row.n_objects),
            "index": int(row.index), "sources": list(row.sources), "targets": list(row.targets), "path": None,
            "schedule": schedule, "mask_sources": json.dumps({}), "fallbacks": [], "warnings": [],
            "background_blending": False, "fingerprint": None,
            **{c: getattr(row, c) for c in PROMPT_COLUMNS}, ERROR_COLUMN: getattr(row, ERROR_COLUMN),
        })
    rows.sort(key=lambda r: r["edit_id"])
    return pd.DataFrame(rows, columns=RESULT_COLUMNS + PROMPT_COLUMNS + [ERROR_COLUMN])


RESULT_COLUMNS = ["edit_id", "image", "edit_type", "n_objects", "index", "sources", "targets", "path",
                  "schedule", "mask_sources", "fallbacks", "warnings", "background_blending", "fingerprint"]


def settings_identity(editor: Editor) -> dict:
    m = editor.models
    return {"model": m.name, "dtype": str(m.dtype), "settings": editor.settings.as_dict()}


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
