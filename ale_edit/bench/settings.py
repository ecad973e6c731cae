"""What a score run is scored with, resolved from explicit values, the ``compat`` profile and the defaults.

``score.mask_weights`` (``binary`` | ``soft``) and ``score.te_variant`` (``mean`` | ``joined``) are the settings
``ale_edit.compat``'s ``authors`` profile switches (to ``soft`` and ``joined``); a value given explicitly (not
``None``) wins over the profile; so does ``score.resize_edited`` (``authors``: true, as their evaluator resizes every
edit to its source's size). ``dino_input`` is a setting of its own. The resolved
settings, with the compat provenance, are recorded with the scores (``record``), and with them the benchmark when
it is PIE-Bench (``benchmark``: the aggregates, the headline and the report take its layout, Table 14, from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import compat
from ..edit_types import BENCHMARKS
from .names import DINO_INPUTS, MASK_WEIGHTS, TE_VARIANTS

DEFAULTS: dict[str, Any] = {"score.mask_weights": "binary", "score.te_variant": "mean", "score.resize_edited": False}


@dataclass(frozen=True)
class ScoreSettings:
    mask_weights: str = "binary"
    te_variant: str = "mean"
    dino_input: str = "published"
    resize_edited: bool = False
    compat: Mapping = field(default_factory=lambda: compat.provenance("none", {}, prefix="score."))
    benchmark: str = "ale"  # "ale" | "pie": which benchmark's edits these are

    def __post_init__(self) -> None:
        for name, value, choices in (("mask_weights", self.mask_weights, MASK_WEIGHTS),
                                     ("te_variant", self.te_variant, tuple(TE_VARIANTS)),
                                     ("dino_input", self.dino_input, DINO_INPUTS),
                                     ("benchmark", self.benchmark, BENCHMARKS)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")

    @property
    def te_column(self) -> str:
        """The per-edit column the reported TE is."""
        return TE_VARIANTS[self.te_variant]

    def scorer_options(self) -> dict:
        """The ``Scorer`` keyword arguments these settings fix."""
        return {"mask_weights": self.mask_weights, "dino_input": self.dino_input,
                "resize_edited": self.resize_edited}

    def record(self, **more: Any) -> dict:
        """The ``"settings"`` entry of the score outputs: these settings, the compat provenance, and ``more``
        (the models, ...)."""
        # ALE-Bench's record has no benchmark key: its scores read as they did before PIE-Bench was added.
        benchmark = {"benchmark": self.benchmark} if self.benchmark != "ale" else {}
        return {"mask_weights": self.mask_weights, "te_variant": self.te_variant, "dino_input": self.dino_input,
                "resize_edited": self.resize_edited, "compat": dict(self.compat), **benchmark, **more}


def score_settings(
    compat_profile: str = "none",
    *,
    mask_weights: str | None = None,
    te_variant: str | None = None,
    dino_input: str = "published",
    resize_edited: bool | None = None,
    benchmark: str = "ale",
) -> ScoreSettings:
    """Resolve the settings: ``mask_weights``/``te_variant``/``resize_edited`` when given (not ``None``), else the
    profile's, else the defaults (``binary``, ``mean``, no resizing)."""
    given = {"score.mask_weights": mask_weights, "score.te_variant": te_variant,
             "score.resize_edited": resize_edited}
    resolved = {key: compat.resolve(compat_profile, key, given[key], DEFAULTS[key]) for key in given}
    return ScoreSettings(
        mask_weights=resolved["score.mask_weights"], te_variant=resolved["score.te_variant"],
        dino_input=dino_input, resize_edited=bool(resolved["score.resize_edited"]),
        compat=compat.provenance(compat_profile, given, prefix="score."), benchmark=benchmark,
    )


def score_settings_from_params(score_section: Mapping, compat_profile: str = "none",
                               benchmark: str = "ale") -> ScoreSettings:
    """The settings of params.yaml's ``score`` section under the top-level ``compat`` profile, for the edits of
    ``benchmark``.

    ``mask_weights``/``te_variant``/``resize_edited`` ``null`` (or absent) take the profile's value;
    ``dino_input`` defaults to ``published``.
    """
    return score_settings(
        compat_profile,
        mask_weights=score_section.get("mask_weights"),
        te_variant=score_section.get("te_variant"),
        dino_input=score_section.get("dino_input") or "published",
        resize_edited=score_section.get("resize_edited"), benchmark=benchmark,
    )
