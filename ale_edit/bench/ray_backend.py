"""Backend ``ray``: the edit and score stages' work in a pool of Ray actors, on every GPU of a machine or a cluster.

The driver (the stage's process) plans exactly what the local backend plans: the pending jobs in editor batches
(``runner.edit_batches``), the records in scoring batches of ``batch_size``. Each batch is one block of a Ray
dataset, and Ray Data's ``map_batches`` takes it as one batch to a pool of actors (callable classes), each holding
one ``Editor`` (or one set of metric models) loaded once. The actors run the local backend's code on it
(``runner.edit_jobs``, ``Scorer.score_records``); the driver takes the results as they arrive and writes edits
through the same fingerprinted, atomic work folder (``runner.record_outcome``), or builds the per-edit table. The
same batches give the same bytes, so the backend never changes a result.

Files travel as bytes, not paths: the driver puts each file the work reads (images, masks, the cached text
encodings, the edited images to score) into Ray's object store once, and an actor reads them from there
(``io.ShippedFiles``). A cluster needs no shared file system, and no actor reads the work folder. On one machine
paths would do as well; one way for both keeps one code path.

Failures: an actor that dies is restarted and the batches it had not finished are retried (Ray's
``max_restarts`` and ``max_task_retries``); a result Ray delivers twice is written once. An edit that raises is an
error outcome (``runner.edit_jobs``), never a failed batch. A driver killed mid-run loses nothing written: the next
run's pending jobs are those not done in the work folder.

This module is what both stages share (the cluster, the pool, moving files and batches); ``ray_edit`` and
``ray_score`` hold their actors. Ray is imported inside the functions, and by Ray itself in the actors: the package
imports without the extra.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from ..io import ShippedFiles
from ..options import SettingError
from .backends import RayConnectionError, RayOptions, require_ray


@contextmanager
def ray_cluster(options: RayOptions):
    """Ray, connected for the duration: this process's own when it has one already (tests, notebooks), else a Ray
    started on this machine (``options.address`` ``local``), the running cluster (``auto``) or the one at the
    address, left again at the end. Raises ``RayConnectionError`` naming the setting when that fails."""
    require_ray()
    import ray
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # the stage shows one bar of its own, over all the actors
    context.print_on_execution_start = False
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=options.address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayConnectionError(f"{options.section}.address {options.address!r}: cannot start or join Ray: "
                                 f"{exc}") from exc
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Pool:
    """A pool of actors as it will run: how many, what each gets, and the device its models see (each actor sees
    its own GPUs from ``cuda:0``)."""

    workers: int
    num_gpus: float
    num_cpus: float
    device: str
    max_restarts: int
    max_task_retries: int

    @property
    def threads(self) -> int:
        """torch's threads in each actor: its CPUs. On a CPU, float results depend on the thread count, so an
        actor matches the local backend's bytes when both run as many threads."""
        return max(1, int(self.num_cpus))


def plan_pool(options: RayOptions, device: str = "auto") -> Pool:
    """Resolve ``options`` against the connected cluster and the models' ``device`` setting (params.yaml's
    ``model.device``): ``num_gpus`` null is 1 where the cluster has GPUs (or ``device`` names CUDA), else 0;
    ``workers`` null is one per GPU, or one per node without GPUs. Raises ``SettingError`` for a pool that cannot
    run."""
    import ray

    where = options.section
    gpus = float(ray.cluster_resources().get("GPU", 0))
    device = str(device or "auto")
    wants_cuda = device.startswith("cuda")
    num_gpus = options.num_gpus
    if num_gpus is None:
        num_gpus = 1.0 if wants_cuda or (device == "auto" and gpus > 0) else 0.0
    if (device == "cpu" and num_gpus > 0) or (wants_cuda and num_gpus == 0):
        raise SettingError(f"model.device is {device}, but each Ray actor gets {num_gpus:g} GPUs: set "
                           f"{where}.num_gpus to match, or model.device to auto")
    if num_gpus > gpus:
        raise SettingError(f"each Ray actor asks for {num_gpus:g} GPUs ({where}.num_gpus) and the cluster has "
                           f"{gpus:g}")
    if options.workers is not None:
        workers = options.workers
    elif num_gpus > 0:
        workers = max(1, int(gpus // num_gpus))
    else:
        workers = max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
    return Pool(workers=workers, num_gpus=float(num_gpus), num_cpus=float(options.num_cpus),
                device="cuda" if num_gpus > 0 else "cpu", max_restarts=options.max_restarts,
                max_task_retries=options.max_task_retries)


# -- moving files and batches -------------------------------------------------------------------------------------

def ship_files(paths: Iterable[str | Path]) -> dict[str, object]:
    """Put each distinct file of ``paths`` that exists here into Ray's object store once: ``{path: ObjectRef}``.
    A path left out is a missing file for the actors too (``ShippedFiles``)."""
    import ray

    refs = {}
    for path in dict.fromkeys(str(Path(p)) for p in paths):
        if Path(path).is_file():
            refs[path] = ray.put(Path(path).read_bytes())
    return refs


def fetch_files(refs: Mapping[str, object], paths: Iterable[str | Path]) -> ShippedFiles:
    """In an actor: the contents of ``paths`` from the object store, as the files its loaders read."""
    import ray

    wanted = [p for p in dict.fromkeys(str(Path(p)) for p in paths) if p in refs]
    return ShippedFiles(dict(zip(wanted, ray.get([refs[p] for p in wanted]))))


def batch_groups(batch) -> list[list[str]]:
    """The keys of a Ray batch, grouped by the driver's batch (in order). Each block is one driver batch and Ray
    takes ``batch_size`` rows at a time, so a Ray batch is one group; grouping keeps that true should Ray ever
    hand an actor two blocks at once."""
    groups: dict[int, list[str]] = {}
    for group, key in zip(batch.column("group").to_pylist(), batch.column("key").to_pylist()):
        groups.setdefault(group, []).append(key)
    return list(groups.values())


def run_pool(actor: type, constructor: dict, groups: Sequence[Sequence[str]], pool: Pool, batch_size: int,
             on_row: Callable[[dict], None]) -> None:
    """Run the ``groups`` of keys through a pool of ``actor``s, each group one block and one Ray batch; call
    ``on_row`` on this process with each row of output as it arrives."""
    import pyarrow as pa
    import ray

    if not groups:
        return
    blocks = [pa.table({"group": pa.array([g] * len(keys), pa.int64()), "key": pa.array(list(keys), pa.string())})
              for g, keys in enumerate(groups)]
    with warnings.catch_warnings():
        # Ray Data 2.60 takes an actor's max_restarts and max_task_retries only among its ray_remote_args, which
        # it announces are to go in 2.64 (pyproject pins ray below it).
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        results = ray.data.from_arrow(blocks).map_batches(
            actor, batch_size=batch_size, batch_format="pyarrow", fn_constructor_kwargs=constructor,
            compute=ray.data.ActorPoolStrategy(size=min(pool.workers, len(groups))), num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus, max_restarts=pool.max_restarts, max_task_retries=pool.max_task_retries,
        )
    for row in results.iter_rows():
        on_row(row)
