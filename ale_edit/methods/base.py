"""The interface between the editor and an editing method, and the registry of methods.

The editor prepares an ``EditBatch`` (the edits' pairs and schedules, their masks when the method uses masks,
the latent size, the tokenizer and the text encoder) and hands it to the method named in the settings. The
method answers with a ``MethodRun``: the conditionings of the sampler's branches, the controller the sampler
calls around every step (per-step policy, state, and the method's latent blend), the processor for each
attention layer, and what each edit's record should say. The editor knows no method's name or options.

A method is a subclass of ``Method`` in its package ``ale_edit.methods.<name>``, with ``name``, ``label``, an
``Options`` dataclass (its params.yaml section; fields declared with ``options.option``, whose help, choices and
range the command line and the studio show), ``uses_masks`` and ``prepare``; decorating it with ``@register``
makes it known to the editor, the command line, the studio, the report and the pipeline, none of which names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch

from ..options import SettingError
from ..processors import Layer
from ..steps import StepController


@dataclass
class EditBatch:
    """B edits of one working size, as the editor hands them to a method."""

    pairs: Sequence[Sequence[tuple[str, str]]]  # each edit's (source phrase, target phrase) pairs
    schedules: Sequence[float]  # each edit's self-attention schedule, as given (never float32)
    masks: Sequence[dict[str, np.ndarray | None]]  # per edit, source phrase -> (H, W) bool working-size mask
    num_steps: int
    latent_size: tuple[int, int]  # (h, w)
    vae_scale_factor: int
    tokenizer: Any
    encode: Callable[[Sequence[str]], torch.Tensor]  # prompts -> (n, 77, D), cached
    blocks: Sequence[Layer] = ()  # the UNet's transformer blocks in forward order (``processors.blocks``)
    # Per edit, its whole (source, target) prompts with the phrases in [] (``ale_edit.prompts``), or None; empty:
    # no edit has any.
    prompts: Sequence[tuple[str, str] | None] = ()

    def __len__(self) -> int:
        return len(self.pairs)

    def edit_prompts(self) -> list[tuple[str, str] | None]:
        """Each edit's whole marked prompts, None for an edit that has only its phrases."""
        return list(self.prompts) if self.prompts else [None] * len(self.pairs)

    @property
    def work_size(self) -> tuple[int, int]:
        """(H, W) of the working image."""
        return self.latent_size[0] * self.vae_scale_factor, self.latent_size[1] * self.vae_scale_factor


@dataclass
class Conditioning:
    """Text conditionings of the sampler's branches, (B, 77, D) each; ``mutual`` runs InfEdit's third branch."""

    uncond: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    mutual: torch.Tensor | None = None


@dataclass
class MethodRun:
    """What a method contributes to one sampling run of an edit batch."""

    conditioning: Conditioning
    controller: StepController
    processor: Callable[[Layer], object]  # the processor of each attention layer, for ``install_processors``
    records: list[dict]  # one per edit of the batch, in its order: what the edit's record should add


class Method:
    """An editing method on the shared sampler. Subclasses set the class attributes and ``prepare``."""

    name: ClassVar[str]  # its package's name and its params.yaml section
    label: ClassVar[str]  # its name in tables and figures
    Options: ClassVar[type]
    uses_masks: ClassVar[bool] = False  # the editor resolves (and detects) masks only for such methods

    @classmethod
    def report_label(cls, options: Mapping[str, Any]) -> str:
        """Its row name in the report for a run with ``options`` (its params.yaml section): ``label``, or what a
        method's ablations call for."""
        return cls.label

    def __init__(self, options: Any = None):
        self.options = self.Options() if options is None else options
        if not isinstance(self.options, self.Options):
            raise SettingError(f"{self.name} takes {self.Options.__name__}, got {type(self.options).__name__}")

    def prepare(self, batch: EditBatch) -> MethodRun:
        raise NotImplementedError


class MethodContractError(RuntimeError):
    """A method's ``prepare`` answered what the interface forbids; the message names the method."""


def check_run(method: Method, run: MethodRun, batch: EditBatch) -> MethodRun:
    """``run`` as ``method.prepare(batch)`` answered it, if it has one record per edit of ``batch``."""
    if not isinstance(run, MethodRun):
        raise MethodContractError(f"method {method.name!r} ({type(method).__module__}): prepare returned "
                                  f"{type(run).__name__}, not a MethodRun")
    if len(run.records) != len(batch):
        raise MethodContractError(f"method {method.name!r} ({type(method).__module__}): MethodRun.records holds "
                                  f"{len(run.records)} records for a batch of {len(batch)} edits; it needs one "
                                  f"per edit, in the batch's order")
    return run


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Make ``cls`` known by its ``name``."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"two methods are named {cls.name!r}: {METHODS[cls.name].__module__} and {cls.__module__}")
    METHODS[cls.name] = cls
    return cls
