"""The edit stage's backend ``ray`` (``ray_backend``): ``runner.run_jobs`` on a pool of Ray actors, each holding one
``Editor``; the driver writes the outcomes through the same work folder (``runner.record_outcome``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .ray_backend import Pool, batch_groups, fetch_files, run_pool, ship_files
from .runner import (
    EditJob, EditOutcome, EditorSpec, edit_batches, edit_jobs, edit_progress, job_files, pending_jobs,
    record_outcome, settings_identity,
)


class EditActor:
    """A Ray actor holding one ``Editor`` (its models loaded once); edits batches of jobs with ``edit_jobs``."""

    def __init__(self, spec: EditorSpec, identity: dict, jobs: Mapping[str, EditJob], files: Mapping[str, object],
                 embeddings: str | None, threads: int):
        torch.set_num_threads(threads)
        cached = fetch_files(files, [embeddings] if embeddings else []).contents.get(embeddings)
        self.editor = spec.load(cached, progress=False)
        found = settings_identity(self.editor)
        if found != identity:  # a fingerprint must say what made the edit
            raise RuntimeError(f"this actor's editor is {found}; the driver fingerprinted the edits for {identity}")
        self.jobs, self.files = jobs, files

    def __call__(self, batch):
        import pyarrow as pa

        out: dict[str, list] = {"fingerprint": [], "record": [], "png": []}
        for keys in batch_groups(batch):
            jobs = [self.jobs[key] for key in keys]
            files = fetch_files(self.files, (f for job in jobs for f in job_files(job)))
            for job, outcome in zip(jobs, edit_jobs(self.editor, jobs, files)):
                out["fingerprint"].append(job.fingerprint)
                out["record"].append(json.dumps(outcome.record))
                out["png"].append(outcome.png)
        return pa.table(out, schema=pa.schema([("fingerprint", pa.string()), ("record", pa.string()),
                                               ("png", pa.binary())]))


def run_jobs_on_ray(spec: EditorSpec, jobs: Sequence[EditJob], work: Path, pool: Pool, *, batch_size: int = 1,
                    embeddings: str | Path | None = None, progress: bool = True) -> int:
    """``runner.run_jobs`` on a pool of Ray actors: edit every job not yet done, in the same batches, and write
    each outcome to the work folder as it arrives; return how many were edited now (failed ones included).

    ``spec`` is what each actor loads (its device the pool's); the jobs' fingerprints must have been made with
    ``spec.identity()``, which each actor checks against the editor it loaded. ``embeddings``: the cached text
    encodings (a Parquet file), sent to the actors.
    """
    work.mkdir(parents=True, exist_ok=True)
    pending = pending_jobs(jobs, work)
    if not pending:
        return 0
    embeddings = str(Path(embeddings)) if embeddings is not None and Path(embeddings).is_file() else None
    files = ship_files([*(f for job in pending for f in job_files(job)), *([embeddings] if embeddings else [])])
    by_fingerprint = {job.fingerprint: job for job in pending}
    written: set[str] = set()
    with edit_progress(len(jobs), len(jobs) - len(pending), progress) as bar:
        def write(row: dict) -> None:
            job = by_fingerprint[row["fingerprint"]]
            if job.fingerprint in written:  # a batch Ray ran again after its actor died: the first one stands
                return
            record_outcome(work, job, EditOutcome(json.loads(row["record"]), row["png"]))
            written.add(job.fingerprint)
            bar.update(1)

        constructor = {"spec": spec, "identity": spec.identity(), "jobs": by_fingerprint, "files": files,
                       "embeddings": embeddings, "threads": pool.threads}
        groups = [[job.fingerprint for job in batch] for batch in edit_batches(pending, batch_size)]
        run_pool(EditActor, constructor, groups, pool, batch_size, write)
    return len(pending)
