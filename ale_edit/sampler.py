"""InfEdit's virtual inversion on a latent consistency model: a source and a target branch sharing their noise.

No inversion is run: the source branch re-noises the clean source latent z0 at every step, and the target
branch is steered by the difference of the two branches' noise predictions. With a_t the cumulative alpha at
the current timestep and a' at the next one:

    eps_c   = (x_s - sqrt(a_t) z0) / sqrt(1 - a_t)
    pred_x0 = z0 + ((x_t - x_s) - sqrt(1 - a_t) (eps_t - eps_s)) / sqrt(a_t)
    sigma^2 = eta (1 - a');  dir = sqrt(1 - a' - sigma^2) (eps_t - eps_s + eps_c)
    x_t     = sqrt(a') pred_x0 + dir + sigma n;   x_s = sqrt(a') z0 + dir + sigma n

with one fresh noise n shared by both branches. The output is the last step's pred_x0. After the last step a'
is the scheduler's final alpha (1 for LCM), or with ``last_alpha="current"`` a_t itself, as the authors' code
steps with prev_t = t; it changes the returned latents x_s, x_t (seen by ``step_callback``), never pred_x0.

A method's controller is called around every step: ``begin_step(k)`` before the UNet call, ``after_step(state)``
after the update (its latent blend: ALE's background blending, the baselines' local blends) and ``finish`` on the
returned pred_x0.

With ``SamplerInputs.mutual_cond`` set (InfEdit, docs/baselines.md §1.1) a third, *mutual* branch x_m runs
beside them: the UNet batch is six chunks [src_u, tgt_u, mut_u, src_c, tgt_c, mut_c], x_m is guided with the
source guidance and stepped like x_t with its own eps_m, and x_s takes the mutual branch's direction
sqrt(1 - a' - sigma^2) (eps_m - eps_s + eps_c) (InfEdit steps x_s in its second, mutual, sampler call; at
eta = 1 the direction vanishes). All three share the noise n.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .processors import THREE_BRANCHES, TWO_BRANCHES

LAST_ALPHAS = ("final", "current")
"""The alpha a' of the step after the last: the scheduler's final alpha (``final``), or the last timestep's own
(``current``, the authors' code)."""


@dataclass
class SamplerInputs:
    """The latents, conditionings and noise sources of B edits of one size."""

    z0: torch.Tensor  # (B, C, h, w) clean source latents
    uncond: torch.Tensor  # (B, T, D)
    source_cond: torch.Tensor  # (B, T, D)
    target_cond: torch.Tensor  # (B, T, D)
    generators: Sequence[torch.Generator]  # one per edit, so a batch equals its edits run one by one
    mutual_cond: torch.Tensor | None = None  # (B, T, D): when set, a third (mutual) branch runs (InfEdit)

    @property
    def batch_size(self) -> int:
        return self.z0.shape[0]


@dataclass
class StepState:
    """The latents after step ``step``'s update, for a method's latent blend: x_s, x_t (and InfEdit's x_m), z0,
    the cumulative alphas of the step's timestep (``alpha``) and of the next one (``alpha_next``)."""

    step: int
    num_steps: int
    x_s: torch.Tensor
    x_t: torch.Tensor
    z0: torch.Tensor
    alpha: float
    alpha_next: float
    x_m: torch.Tensor | None = None


class LatentBlend:
    """A latent blend run after each step (``__call__`` returns the new x_t); ``finish`` may blend the returned
    pred_x0. Subclasses: ALE's background blending, the baselines' local blends."""

    def begin_step(self, step: int) -> None:
        pass

    def __call__(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, pred_x0: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        return pred_x0


def lcm_timesteps(scheduler, num_steps: int) -> tuple[torch.Tensor, object]:
    """The LCM schedule (999, 939, ..., 79 for 15 steps of 50 original ones) on a private scheduler copy."""
    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(num_steps, original_inference_steps=scheduler.config.original_inference_steps)
    return scheduler.timesteps.clone(), scheduler


def _noise(generators: Sequence[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    # Drawn on the CPU in fp32 per edit: the same seed gives the same noise on every device and batch size.
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])


@torch.no_grad()
def virtual_inversion(
    unet,
    scheduler,
    inputs: SamplerInputs,
    controller,
    *,
    num_steps: int = 15,
    guidance_source: float = 1.0,
    guidance_target: float = 2.0,
    eta: float = 1.0,
    last_alpha: str = "final",
    progress: bool = True,
    step_callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run the two-branch (three with ``inputs.mutual_cond``) sampler and return the last pred_x0, (B, C, h, w)
    in fp32, after ``controller.finish``. ``step_callback(k, x_s, x_t, pred_x0)`` sees the latents after step k's
    blend."""
    if last_alpha not in LAST_ALPHAS:
        raise ValueError(f"last_alpha must be one of {LAST_ALPHAS}, got {last_alpha!r}")
    timesteps, scheduler = lcm_timesteps(scheduler, num_steps)
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    final_alpha = float(scheduler.final_alpha_cumprod)
    device, dtype = unet.device, unet.dtype
    z0 = inputs.z0.to(device=device, dtype=torch.float32)
    shape = tuple(z0.shape[1:])
    x_s = _noise(inputs.generators, shape).to(device)
    x_t = x_s.clone()
    mutual = inputs.mutual_cond is not None
    layout = THREE_BRANCHES if mutual else TWO_BRANCHES
    x_m = x_s.clone() if mutual else None
    cond = {"source": inputs.source_cond, "target": inputs.target_cond, "mutual": inputs.mutual_cond}
    context = layout.stack(inputs.uncond, cond).to(device, dtype)
    source_u, target_u = layout.chunk("source", False), layout.chunk("target", False)
    source_c, target_c = layout.chunk("source", True), layout.chunk("target", True)
    pred_x0 = z0
    for k, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
        controller.begin_step(k)
        latents = torch.cat([x_s, x_t, x_m][: len(layout.branches)] * 2).to(dtype)
        eps = layout.chunks(unet(latents, t.to(device), encoder_hidden_states=context).sample.float())
        eps_s = eps[source_u] + guidance_source * (eps[source_c] - eps[source_u])
        eps_t = eps[target_u] + guidance_target * (eps[target_c] - eps[target_u])

        a_t = float(alphas[int(t)])
        if k + 1 < len(timesteps):
            a_next = float(alphas[int(timesteps[k + 1])])
        else:
            a_next = final_alpha if last_alpha == "final" else a_t
        eps_c = (x_s - a_t**0.5 * z0) / (1 - a_t) ** 0.5
        pred_x0 = z0 + ((x_t - x_s) - (1 - a_t) ** 0.5 * (eps_t - eps_s)) / a_t**0.5
        sigma2 = eta * (1 - a_next)
        scale = max(1 - a_next - sigma2, 0.0) ** 0.5
        direction = scale * (eps_t - eps_s + eps_c)
        n = _noise(inputs.generators, shape).to(device) * sigma2**0.5  # one draw shared by every branch
        x_t = a_next**0.5 * pred_x0 + direction + n
        if mutual:
            # The mutual branch is a source-prompt branch (source guidance) stepped like the target; InfEdit's
            # reference steps x_s in its mutual call, with the mutual direction (at eta = 1 it vanishes).
            mutual_u, mutual_c = layout.chunk("mutual", False), layout.chunk("mutual", True)
            eps_m = eps[mutual_u] + guidance_source * (eps[mutual_c] - eps[mutual_u])
            pred_m = z0 + ((x_m - x_s) - (1 - a_t) ** 0.5 * (eps_m - eps_s)) / a_t**0.5
            direction = scale * (eps_m - eps_s + eps_c)
            x_m = a_next**0.5 * pred_m + direction + n
        x_s = a_next**0.5 * z0 + direction + n
        x_t = controller.after_step(StepState(k, len(timesteps), x_s, x_t, z0, a_t, a_next, x_m))
        if step_callback is not None:
            step_callback(k, x_s, x_t, pred_x0)
    return controller.finish(pred_x0, z0)
