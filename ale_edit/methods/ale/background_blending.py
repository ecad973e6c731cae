"""BB (background blending): after each step the target latent takes the source latent outside the objects.

The foreground is the union of an edit's object masks brought to the latent grid:

- ``nearest`` (ale-edit's default): one nearest resize of each mask to the latent grid (h, w);
- ``multiscale`` (the authors' code): the OR of the mask nearest-resized to (h, w) and to (h/2, w/2),
  (h/4, w/4), (h/8, w/8), each brought back to (h, w) by nearest: a blockier, larger foreground.

Blending runs after every step k >= ``start`` (the authors' code: 1, no blend after step 0). An edit with an
object the detector missed has no foreground to trust: it is not blended at all. ``final`` also blends the
returned pred_x0 with z0 on the background (the authors' last blend has no effect on pred_x0, so off by default).
"""

from __future__ import annotations

import torch

from ...sampler import LatentBlend, StepState
from .rgb_cam import resize_masks_nearest

BB_MASKS = ("nearest", "multiscale")
MULTISCALE_FACTORS = (1, 2, 4, 8)


def foreground(object_masks: torch.Tensor, height: int, width: int, mode: str = "nearest") -> torch.Tensor:
    """(B, 1, height, width) bool: the union of (B, K, H, W) object masks on the latent grid."""
    if mode not in BB_MASKS:
        raise ValueError(f"unknown background-blending mask {mode!r}; choose one of {BB_MASKS}")
    factors = MULTISCALE_FACTORS if mode == "multiscale" else (1,)
    union = torch.zeros(object_masks.shape[0], 1, height, width, dtype=torch.bool)
    for factor in factors:
        small = resize_masks_nearest(object_masks, height // factor, width // factor)
        union |= resize_masks_nearest(small, height, width).any(dim=1, keepdim=True)
    return union


class BackgroundBlend(LatentBlend):
    """x_t <- x_s outside ``foreground`` after every step in ``steps``, for the edits in ``blended``."""

    def __init__(self, foreground: torch.Tensor, blended: torch.Tensor, steps: frozenset, final: bool = False):
        # (B, 1, h, w): where x_t takes x_s; an edit that is not blended keeps x_t everywhere.
        self.background = ~foreground & blended[:, None, None, None]
        self.steps = frozenset(steps)
        self.final = final

    def __call__(self, state: StepState) -> torch.Tensor:
        if state.step not in self.steps:
            return state.x_t
        return torch.where(self.background.to(state.x_t.device), state.x_s, state.x_t)

    def finish(self, pred_x0: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        if not self.final:
            return pred_x0
        return torch.where(self.background.to(pred_x0.device), z0, pred_x0)
