"""Editing methods on the shared virtual-inversion sampler: ALE-Edit and the baselines it is compared with.

A method is one module here: a ``Method`` subclass registered with ``@register`` (``base.py``), its options
dataclass (its params.yaml section) and its processors. The sampler, the text encoder, the masks and the seeds are
the same for every method, so a comparison differs in the method alone. ``discover`` imports every module of this
package, so a new module is found without being listed anywhere (docs/adding-a-method.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import METHODS, Conditioning, EditBatch, Method, MethodRun, method_class, register


def discover() -> dict[str, type[Method]]:
    """Import every method module (ALE-Edit first), so each registers itself; return the registry."""
    names = sorted((m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")),
                   key=lambda name: (name != "ale", name))
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return METHODS


def method_names() -> tuple[str, ...]:
    return tuple(discover())


__all__ = ["METHODS", "Conditioning", "EditBatch", "Method", "MethodRun", "discover", "method_class",
           "method_names", "register"]
