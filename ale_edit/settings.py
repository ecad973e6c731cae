"""The settings of an edit, declared once: the sampler's settings common to every method (params.yaml section
``edit``), the method's name (``method``) and its own options (its section, e.g. ``ale`` or ``p2p``).

``EditSettings.from_params`` builds them from params.yaml; the command line derives its options from the same
fields (``commands/options.py``). The compat profile (``compat.py``) is resolved here, once: after construction
every setting holds a value, and ``compat_record`` says which came from the profile and which overrode it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .compat import COMPAT_PROFILES, provenance
from .images import SIZE_MULTIPLE
from .methods import DEFAULT_METHOD, method_class
from .options import (
    SettingError, check, compat_changes, compat_values, from_mapping, mapping_kwargs, option, resolve_compat,
)
from .sampler import LAST_ALPHAS

VAE_LATENTS = ("mode", "sample")
# params.yaml's edit section also holds these, for the edit stage; none changes what an edit is (the backend and
# its Ray pool only decide where it runs), so none is in the settings that fingerprint an edit.
PIPELINE_EDIT_KEYS = ("seed", "batch_size", "backend", "ray")


@dataclass(frozen=True)
class EditSettings:
    """Every knob of an edit; the defaults reproduce the paper's setup on LCM_Dreamshaper_v7.

    ``options`` is the method's options dataclass, a mapping of some of its fields, or ``None`` for its defaults.
    """

    method: str = option(DEFAULT_METHOD, "The editing method.", cli=False)
    compat: str = option("none", "authors: run as the authors' code (ml-postech/ALE) does; explicit settings win.",
                         choices=COMPAT_PROFILES)
    steps: int = option(15, "Sampler steps.", minimum=1)
    size: int = option(768, "Working size: the image's longer side, a multiple of 64.", minimum=SIZE_MULTIPLE)
    guidance_source: float = option(1.0, "Source-branch guidance scale.")
    guidance_target: float = option(2.0, "Target-branch guidance scale.")
    eta: float = option(1.0, "The sampler's stochasticity.", minimum=0.0, maximum=1.0)
    dilation: float = option(0.01, "Mask dilation radius as a fraction of --size: the paper's 0.01 (7 px at 768), "
                             "the authors' code 0.04.", minimum=0.0, compat="edit.dilation")
    vae_latent: str = option("mode", "z0 from the VAE's mode, or a sample of it (authors' code).",
                             choices=VAE_LATENTS, compat="edit.vae_latent")
    last_alpha: str = option("final", "The alpha after the last step: the scheduler's final one, or the last "
                             "timestep's own (authors' code).", choices=LAST_ALPHAS, compat="edit.last_alpha")
    options: Any = field(default=None, metadata={"cli": False})

    def __post_init__(self):
        options_type = method_class(self.method).Options  # an unknown method is named first
        check(self, "edit")
        if self.size % SIZE_MULTIPLE:
            raise SettingError(f"edit.size must be a multiple of {SIZE_MULTIPLE}; got {self.size}")
        options = self.options
        if options is None:
            options = options_type()
        elif isinstance(options, Mapping):
            options = from_mapping(options_type, options, self.method)
        elif not isinstance(options, options_type):
            raise SettingError(f"method {self.method!r} takes {options_type.__name__} options, "
                               f"got {type(options).__name__}")
        object.__setattr__(self, "options", resolve_compat(options, self.compat))
        for name, value in compat_changes(self, self.compat).items():
            object.__setattr__(self, name, value)

    def compat_record(self) -> dict:
        """The compat profile, the settings it chose and those given otherwise (the edit record's ``compat``)."""
        values = {**compat_values(self), **compat_values(self.options)}
        return provenance(self.compat, values, prefix=("edit.", f"{self.method}."))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: Mapping) -> "EditSettings":
        """The settings of a params.yaml: ``method``, the ``edit`` section and the method's own section."""
        method = str(params.get("method", DEFAULT_METHOD))
        method_class(method)  # an unknown method is named before its section is read
        common = mapping_kwargs(cls, dict(params.get("edit") or {}), "edit", ignore=PIPELINE_EDIT_KEYS,
                                exclude=("method", "options"))
        return cls(method=method, options=dict(params.get(method) or {}), **common)
