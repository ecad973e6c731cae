"""Editing methods over the shared virtual-inversion sampler: ALE-Edit and the baselines it is compared with.

A method is a set of attention processors and a controller; the sampler, the text encoder, the masks and the
seeds are the same for every method, so a comparison differs in the method alone.
"""

from .baselines import (
    BASELINES, Baseline, FreePromptController, FreePromptSelfAttention, MasaCtrlController, MutualSelfAttention,
)
from .infedit import InfEditController, InfEditCrossAttention, InfEditSelfAttention, install_infedit_processors
from .p2p import (
    PromptToPromptController, PromptToPromptCrossAttention, PromptToPromptSelfAttention, install_p2p_processors,
)

METHODS: tuple[str, ...] = ("ale", *BASELINES)

__all__ = ["BASELINES", "Baseline", "FreePromptController", "FreePromptSelfAttention", "InfEditController",
           "InfEditCrossAttention", "InfEditSelfAttention", "METHODS", "install_infedit_processors",
           "MasaCtrlController", "MutualSelfAttention", "PromptToPromptController", "PromptToPromptCrossAttention",
           "PromptToPromptSelfAttention", "install_p2p_processors"]
