"""The score stage's backend ``ray`` (``ray_backend``): ``scoring.score_edits`` on a pool of Ray actors, each
holding one set of metric models in a ``Scorer``; the driver builds the same per-edit table and metrics."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..models import resolve_dtype
from .metric_models import MetricModelSpec
from .ray_backend import Pool, batch_groups, fetch_files, run_pool, ship_files
from .records import EditRecord, record_files
from .scorer import Scorer, per_edit_frame
from .scoring import ScoreRun, score_run
from .settings import ScoreSettings


def _metric_identity(names: Mapping[str, str], dtype) -> dict:
    return {"models": dict(names), "dtype": str(dtype)}


class ScoreActor:
    """A Ray actor holding one set of metric models (loaded once) in a ``Scorer``; scores batches of records."""

    def __init__(self, spec: MetricModelSpec, identity: dict, scorer_options: dict, records: Sequence[EditRecord],
                 files: Mapping[str, object], threads: int):
        torch.set_num_threads(threads)
        models = spec.load()
        found = _metric_identity(models.names, models.dtype)
        if found != identity:  # the scores record which models made them
            raise RuntimeError(f"this actor's metric models are {found}; the driver expected {identity}")
        self.scorer = Scorer(models, progress=False, **scorer_options)
        self.records, self.files = records, files

    def __call__(self, batch):
        import pyarrow as pa

        out: dict[str, list] = {"index": [], "row": []}
        for keys in batch_groups(batch):
            records = [self.records[int(key)] for key in keys]
            files = fetch_files(self.files, (f for record in records for f in record_files(record)))
            table = self.scorer.score_records(records, batch_size=len(records), files=files)
            for key, row in zip(keys, table.to_dict("records")):
                out["index"].append(int(key))
                out["row"].append(json.dumps(row))  # exact: floats as their shortest repr, NaN and inf included
        return pa.table(out, schema=pa.schema([("index", pa.int64()), ("row", pa.string())]))


def score_edits_on_ray(records: Sequence[EditRecord], spec: MetricModelSpec, settings: ScoreSettings, pool: Pool, *,
                       batch_size: int = 16, progress: bool = True, **inputs: object) -> ScoreRun:
    """``scoring.score_edits`` on a pool of Ray actors: the records in the same batches of ``batch_size``, each
    batch scored by one actor's ``Scorer`` (its default pixel budget, as the score stage's); the same per-edit
    table and metrics. ``spec`` is the ``MetricModelSpec`` each actor loads (its device the pool's)."""
    spec = replace(spec, device=pool.device)
    dtype = resolve_dtype(torch.device(pool.device), spec.dtype)
    options = dict(settings.scorer_options(), batch_size=batch_size)
    rows: dict[int, dict] = {}
    with tqdm(total=len(records), desc="scoring", unit="edit", disable=not progress) as bar:
        def take(row: dict) -> None:
            if row["index"] not in rows:  # a batch Ray ran again after its actor died: the first one stands
                rows[row["index"]] = json.loads(row["row"])
                bar.update(1)

        constructor = {"spec": spec, "identity": _metric_identity(spec.names(), dtype), "scorer_options": options,
                       "records": list(records), "files": ship_files(f for r in records for f in record_files(r)),
                       "threads": pool.threads}
        groups = [[str(i) for i in range(start, min(start + batch_size, len(records)))]
                  for start in range(0, len(records), batch_size)]
        run_pool(ScoreActor, constructor, groups, pool, batch_size, take)
    return score_run(per_edit_frame([rows[i] for i in range(len(records))]), settings, spec.names(), dtype, **inputs)
