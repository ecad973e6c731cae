"""A local blend: after a step, the target latent keeps its edit only where the edited words' cross-attention maps
say, and takes another branch's latent elsewhere (prompt-to-prompt's ``LocalBlend``, InfEdit's blend).

``LocalBlend`` holds what both baselines share: which steps it blends after (a step set), the store of the maps
its layers add over the run (cleared when a run begins; which layers add is fixed when the method's processors are
installed), and the placement of stored maps on the latent grid. A method subclasses it with what it stores
(``reduce``) and how it makes its mask and blends (``blend``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention_maps import MapStore
from .processors import query_grid
from .sampler import LatentBlend, StepState


def on_grid(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, N) maps of N queries -> (B, C, rows, cols) on the layer's query grid of the latent's aspect."""
    b, c, n = maps.shape
    rows, cols = query_grid(n, height, width)
    return maps.reshape(b, c, rows, cols)


def upsample(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest upsampling of (B, C, rows, cols) to the latent's (height, width)."""
    return F.interpolate(grid, size=(height, width), mode="nearest")


class LocalBlend(LatentBlend):
    """Blends after the steps in ``steps``, from the maps its layers ``add``."""

    def __init__(self, steps: frozenset):
        self.steps = frozenset(steps)
        self.store = MapStore()

    def begin_step(self, step: int) -> None:
        if step == 0:  # a new run
            self.store.clear()

    def add(self, layer: int, *maps: torch.Tensor) -> None:
        """Add one layer's maps of the current step to the store, reduced by ``reduce``."""
        self.store.add(layer, self.reduce(*maps))

    def reduce(self, *maps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, state: StepState) -> torch.Tensor:
        if state.step not in self.steps:
            return state.x_t
        return self.blend(state, self.store.mean().to(state.x_t.device))

    def blend(self, state: StepState, maps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
