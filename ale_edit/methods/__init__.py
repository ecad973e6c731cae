"""Editing methods on the shared virtual-inversion sampler: ALE-Edit and the baselines it is compared with.

A method is one subpackage of this package, named as the method (``ale/``, ``p2p/``, ...): a ``Method`` subclass
registered with ``@register`` (``base.py``), its options dataclass (its params.yaml section) and its processors.
The plain modules beside them are shared by every method: the interface (``base.py``) and the baselines'
machinery (``shared.py``, ``seq_aligner.py``). The sampler, the text encoder, the masks and the seeds are the same
for every method, so a comparison differs in the method alone.

The registry imports a method by name, when it is asked for (``method_class``): listing the methods reads the
package's folder and imports none, so a run imports, and the pipeline's edit stages depend on, the active method's
package only (docs/adding-a-method.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from ..options import SettingError, did_you_mean
from .base import METHODS, Conditioning, EditBatch, Method, MethodContractError, MethodRun, check_run, register

DEFAULT_METHOD = "ale"  # the paper's method: the settings' default, listed first


def method_names() -> tuple[str, ...]:
    """Every method's name, the default method first, then alphabetically; no method is imported."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_"))
    return tuple(sorted(names, key=lambda name: name != DEFAULT_METHOD))


def method_class(name: str) -> type[Method]:
    """The method ``name``, its package imported now; a ``SettingError`` names the known methods otherwise."""
    names = method_names()
    if name not in names:
        raise SettingError(f"unknown method {name!r}{did_you_mean(name, names)}; choose one of {', '.join(names)}")
    module = importlib.import_module(f"{__name__}.{name}")
    if name not in METHODS:
        raise TypeError(f"{module.__name__} registers no method named {name!r} (a Method subclass with "
                        f"name = {name!r}, decorated with @register)")
    return METHODS[name]


def method_classes() -> dict[str, type[Method]]:
    """Every method, each package imported: for front-ends that show them all (labels, options)."""
    return {name: method_class(name) for name in method_names()}


__all__ = ["DEFAULT_METHOD", "METHODS", "Conditioning", "EditBatch", "Method", "MethodContractError", "MethodRun",
           "check_run", "method_class", "method_classes", "method_names", "register"]
