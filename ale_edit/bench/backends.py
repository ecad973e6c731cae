"""Where the edit and score stages run their work: ``local`` (in the stage's own process) or ``ray`` (a pool of Ray
actors, ``ray_backend``), and the settings of the Ray pool (params.yaml's ``edit.ray`` and ``score.ray``).

This module is light on purpose: params.yaml's schema reads it before any stage imports torch, and Ray is imported
only by ``require_ray`` and ``ray_backend``'s functions, so the package works without the ``ray`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import Options, option

BACKENDS = ("local", "ray")
RAY_EXTRA = "pip install -e '.[ray]'  (ray[data]>=2.60)"


class RayMissingError(RuntimeError):
    """Backend ``ray`` asked for where Ray Data is not installed."""


class RayConnectionError(ConnectionError):
    """Ray could not be started or joined at the configured address."""


def require_ray() -> None:
    """Raise ``RayMissingError``, naming the extra to install, unless Ray Data can be imported."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayMissingError(f"backend ray needs Ray Data, which cannot be imported here ({exc}); install the "
                              f"ray extra: {RAY_EXTRA}") from exc


@dataclass(frozen=True)
class RayOptions(Options):
    """The pool of Ray actors of backend ``ray``; each actor holds one set of models, loaded once."""

    section = "ray"

    address: str = option("local", "local: start Ray on this machine; auto: join the running cluster (ray start, "
                                   "RAY_ADDRESS); or a cluster's address (ray://head:10001).")
    workers: int | None = option(None, "Actors; null: one per GPU (num_gpus each), or one per node without GPUs.",
                                 minimum=1)
    num_gpus: float | None = option(None, "GPUs per actor; null: 1 where the cluster has GPUs, else 0 (CPU "
                                          "actors).", minimum=0)
    num_cpus: float = option(1.0, "CPUs per actor (Ray gives its torch as many threads).", minimum=0)
    max_restarts: int = option(3, "Restarts of an actor that dies (Ray's max_restarts; -1: no limit).", minimum=-1)
    max_task_retries: int = option(3, "Retries of the batches a dead actor had not finished (Ray's "
                                      "max_task_retries; -1: no limit).", minimum=-1)
