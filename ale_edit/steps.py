"""Which sampler steps a method's per-step rule is active on: computed once per edit, exactly, before the loop.

Every method says "do X during the first s of the steps" in its own words, and each reference code compares
floats to decide. Written once here, on the fraction's *decimal* value in exact rational arithmetic, a rule gives
the same steps whether the fraction arrives as a Python float (0.6), a tensor or numpy scalar of any float
dtype (float32 0.6000000238, bfloat16 0.6015625) or a string, and a comparison can never flip on the
last bit: float32(0.6) > 9/15 would inject Q,K on one step too many.

The rules (T steps, indexed k = 0 .. T-1, s a fraction in [0, 1]):

- ``exceeds(s, T)``: {k : s > (k+1)/T}, i.e. s T > k + 1. ALE-Edit's and InfEdit's self-attention injection
  (the authors' ``self_replace_steps <= (cur_step + 1) / num_steps`` means *no* injection).
- ``reaches(s, T)``: {k : s >= (k+1)/T}. InfEdit's cross-attention replacement.
- ``below_floor(s, n)``: {k : k < floor(n s)}. Prompt-to-Prompt's and Free-Prompt-Editing's
  ``int(num_steps * fraction)`` (n = T; P2P's cross replacement uses n = T + 1, its alpha table's row count).
- ``after_floor(s, T)``: {k : k + 1 > floor(s T)}. Prompt-to-Prompt's local-blend start.
- ``from_step(j, T)``: {k : k >= j}. MasaCtrl's start step, InfEdit's local blend (j = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from numbers import Rational
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from .sampler import LatentBlend, StepState

StepSet = frozenset  # of step indices k


def exact(value) -> Fraction:
    """The decimal a fraction was written as, exactly: 0.6 -> 3/5, also from a tensor of any float dtype or a numpy
    scalar: a binary value is read back as the shortest decimal that rounds to it in its own dtype, so float32
    0.6000000238 and bfloat16 0.6015625 are both 3/5."""
    if isinstance(value, Rational):
        return Fraction(value)
    if isinstance(value, np.integer):
        return Fraction(int(value))
    if isinstance(value, np.floating) and np.dtype(value.dtype).itemsize <= 8:
        value = torch.from_numpy(np.asarray(value))
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"a step fraction must be one number, got a tensor of shape {tuple(value.shape)}")
        if not value.is_floating_point():
            return Fraction(int(value.item()))
        return shortest_decimal(value.detach().cpu().reshape(()))
    if isinstance(value, np.floating):  # longdouble: numpy prints the shortest decimal of its own precision
        return Fraction(str(value))
    if isinstance(value, float):
        return Fraction(repr(value))  # repr is the shortest decimal that reads back as this float
    if isinstance(value, str):
        return Fraction(value)
    raise TypeError(f"a step fraction must be a number, got {type(value).__name__}")


def shortest_decimal(value: torch.Tensor) -> Fraction:
    """The decimal with the fewest digits that rounds to the 0-d float tensor ``value`` in its own dtype.

    Exact rational arithmetic on the value's rounding interval, the open interval between the midpoints to its two
    neighbours in the dtype: every decimal in it reads back as ``value``, whatever the dtype (numpy and ``repr``
    give this for float16/32/64 only; bfloat16 has no shortest printer). Among the shortest, the nearest.
    """
    if not math.isfinite(value.item()):
        raise ValueError(f"a step fraction must be finite, got {value.item()}")
    v = Fraction(value.item())
    below = Fraction(torch.nextafter(value, value.new_tensor(-math.inf)).item())
    above = Fraction(torch.nextafter(value, value.new_tensor(math.inf)).item())
    low, high = (below + v) / 2, (v + above) / 2
    digits = 0
    while True:
        scale = 10**digits
        inside = [c for c in (Fraction(math.floor(v * scale), scale), Fraction(math.ceil(v * scale), scale))
                  if low < c < high]
        if inside:
            return min(inside, key=lambda c: abs(c - v))
        digits += 1


def _check(num_steps: int) -> None:
    if num_steps < 1:
        raise ValueError(f"the number of steps must be at least 1, got {num_steps}")


def exceeds(fraction, num_steps: int) -> StepSet:
    """{k : s > (k+1)/T}: the steps within the first ``fraction`` of the run, the boundary step excluded."""
    _check(num_steps)
    s = exact(fraction)
    return frozenset(k for k in range(num_steps) if s * num_steps > k + 1)


def reaches(fraction, num_steps: int) -> StepSet:
    """{k : s >= (k+1)/T}: as ``exceeds``, the boundary step included."""
    _check(num_steps)
    s = exact(fraction)
    return frozenset(k for k in range(num_steps) if s * num_steps >= k + 1)


def below_floor(fraction, count: int, num_steps: int | None = None) -> StepSet:
    """{k < floor(count s)} (among the ``num_steps`` steps, ``count`` by default)."""
    num_steps = count if num_steps is None else num_steps
    _check(num_steps)
    end = math.floor(exact(fraction) * count)
    return frozenset(range(min(max(end, 0), num_steps)))


def after_floor(fraction, num_steps: int) -> StepSet:
    """{k : k + 1 > floor(s T)}."""
    _check(num_steps)
    start = math.floor(exact(fraction) * num_steps)
    return frozenset(k for k in range(num_steps) if k + 1 > start)


def from_step(start: int, num_steps: int) -> StepSet:
    """{k : k >= start}."""
    _check(num_steps)
    return frozenset(range(max(int(start), 0), num_steps))


def per_edit(rule, fractions: Iterable, num_steps: int) -> tuple[StepSet, ...]:
    """``rule(s, T)`` for each edit's fraction (a sequence, or a 1-D tensor as the editor builds schedules)."""
    if isinstance(fractions, torch.Tensor):
        fractions = list(fractions.reshape(-1).unbind()) if fractions.numel() else []
    return tuple(rule(s, num_steps) for s in fractions)


class StepSets:
    """The per-edit step sets of one rule, read at the current step: which edits of the batch are active.

    ``mask(step, device)`` is what processors select with: ``True``/``False`` when every edit agrees (no tensor,
    so no host-device copy), else a (B, 1, 1, 1) bool tensor on ``device``, made once per step and device rather
    than once per layer.
    """

    def __init__(self, sets: Sequence[StepSet]):
        self.sets = tuple(frozenset(s) for s in sets)
        self._step: int | None = None
        self._on: dict = {}

    def __len__(self) -> int:
        return len(self.sets)

    def active(self, step: int) -> list[bool]:
        return [step in s for s in self.sets]

    def tensor(self, step: int) -> torch.Tensor:
        """(B,) bool on the CPU."""
        return torch.tensor(self.active(step), dtype=torch.bool)

    def mask(self, step: int, device) -> torch.Tensor | bool:
        active = self.active(step)
        if all(active) or not any(active):
            return all(active)
        if self._step != step:
            self._step, self._on = step, {}
        if device not in self._on:
            self._on[device] = torch.tensor(active, dtype=torch.bool).to(device)[:, None, None, None]
        return self._on[device]


def select(mask: torch.Tensor | bool, chosen: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """``chosen`` where ``mask`` (a ``StepSets.mask``) is set, else ``own``; no copy when every edit agrees."""
    if mask is True:
        return chosen
    if mask is False:
        return own
    return torch.where(mask, chosen, own)


@dataclass
class StepController:
    """Per-step policy and state of one sampling run, shared by a method's processors (prompt-to-prompt's
    controller): the sampler calls ``begin_step(k)`` before step k's UNet call, ``after_step(state)`` after the
    step's update (the method's latent blend, if it has one) and ``finish(pred_x0, z0)`` on the returned latent.

    Step sets are computed by subclasses once, in ``__post_init__``; ``on`` keeps one copy of a constant tensor
    per device and dtype (mappers, masks), so no processor copies host tensors at every layer.
    """

    num_steps: int
    step_index: int = field(default=0, kw_only=True)
    blend: "LatentBlend | None" = field(default=None, kw_only=True)
    _on_device: dict = field(default_factory=dict, init=False, repr=False)

    def begin_step(self, step_index: int) -> None:
        self.step_index = step_index
        if self.blend is not None:
            self.blend.begin_step(step_index)

    def after_step(self, state: "StepState") -> torch.Tensor:
        """The target latent after step ``state.step``: the blend's, else x_t as it is."""
        return state.x_t if self.blend is None else self.blend(state)

    def finish(self, pred_x0: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        return pred_x0 if self.blend is None else self.blend.finish(pred_x0, z0)

    def on(self, name: str, tensor: torch.Tensor, device, dtype=None) -> torch.Tensor:
        """``tensor`` on ``device`` (in ``dtype``), copied once per run."""
        key = (name, str(device), dtype)
        if key not in self._on_device:
            self._on_device[key] = tensor.to(device=device, dtype=dtype or tensor.dtype)
        return self._on_device[key]
