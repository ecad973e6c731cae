"""InfEdit's virtual inversion on a latent consistency model: a source and a target branch sharing their noise.

No inversion is run: the source branch re-noises the clean source latent z0 at every step, and the target
branch is steered by the difference of the two branches' noise predictions. With a_t the cumulative alpha at
the current timestep and a' at the next one:

    eps_c   = (x_s - sqrt(a_t) z0) / sqrt(1 - a_t)
    pred_x0 = z0 + ((x_t - x_s) - sqrt(1 - a_t) (eps_t - eps_s)) / sqrt(a_t)
    sigma^2 = eta (1 - a');  dir = sqrt(1 - a' - sigma^2) (eps_t - eps_s + eps_c)
    x_t     = sqrt(a') pred_x0 + dir + sigma n;   x_s = sqrt(a') z0 + dir + sigma n

with one fresh noise n shared by both branches. The output is the last step's pred_x0.

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

from .attention import BRANCHES, EditController


@dataclass
class SamplerInputs:
    """The latents, conditionings and noise sources of B edits of one size."""

    z0: torch.Tensor  # (B, C, h, w) clean source latents
    uncond: torch.Tensor  # (B, T, D)
    source_cond: torch.Tensor  # (B, T, D)
    target_cond: torch.Tensor  # (B, T, D)
    generators: Sequence[torch.Generator]  # one per edit, so a batch equals its edits run one by one
    background: torch.Tensor | None = None  # (B, 1, h, w) bool: where background blending copies x_s into x_t
    mutual_cond: torch.Tensor | None = None  # (B, T, D): when set, a third (mutual) branch runs (InfEdit)

    @property
    def batch_size(self) -> int:
        return self.z0.shape[0]


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
    controller: EditController,
    *,
    num_steps: int = 15,
    guidance_source: float = 1.0,
    guidance_target: float = 2.0,
    eta: float = 1.0,
    final_blend: bool = False,
    progress: bool = True,
    step_callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run the two-branch sampler and return the last pred_x0, (B, C, h, w) in fp32.

    Background blending runs after every step where ``inputs.background`` is set: x_t takes x_s there. A
    controller with an ``after_step(k, x_s, x_t, alpha_next) -> x_t`` method blends the latents its own way after
    that (the baselines' local blends).
    ``final_blend`` also blends the returned pred_x0 with z0 on the background. ``step_callback(k, x_s, x_t,
    pred_x0)`` sees the latents after step k's blending.

    With ``inputs.mutual_cond`` (three branches) the hook is called as ``after_step(k, x_s, x_t, alpha_next, x_m,
    alpha)``, ``alpha`` being the cumulative alpha of the current timestep t_k (InfEdit's blend threshold needs
    it); it returns the new x_t and x_m is never changed by it.
    """
    timesteps, scheduler = lcm_timesteps(scheduler, num_steps)
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    final_alpha = float(scheduler.final_alpha_cumprod)
    device, dtype = unet.device, unet.dtype
    z0 = inputs.z0.to(device=device, dtype=torch.float32)
    shape = tuple(z0.shape[1:])
    x_s = _noise(inputs.generators, shape).to(device)
    x_t = x_s.clone()
    mutual = inputs.mutual_cond is not None
    x_m = x_s.clone() if mutual else None
    # The batch: the unconditional chunks of every branch, then the conditional ones, in BRANCHES order
    # (source, target), InfEdit's mutual branch last in each half.
    assert len(BRANCHES) == 4
    conds = [inputs.source_cond, inputs.target_cond] + ([inputs.mutual_cond] if mutual else [])
    context = torch.cat([inputs.uncond] * len(conds) + conds).to(device, dtype)
    background = inputs.background.to(device) if inputs.background is not None else None
    after_step = getattr(controller, "after_step", None)
    pred_x0 = z0
    for k, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
        controller.begin_step(k)
        branch_latents = [x_s, x_t] + ([x_m] if mutual else [])
        latents = torch.cat(branch_latents * 2).to(dtype)
        eps = unet(latents, t.to(device), encoder_hidden_states=context).sample.float().chunk(2 * len(conds))
        uncond, cond = eps[: len(conds)], eps[len(conds) :]
        eps_s = uncond[0] + guidance_source * (cond[0] - uncond[0])
        eps_t = uncond[1] + guidance_target * (cond[1] - uncond[1])

        a_t = float(alphas[int(t)])
        a_next = float(alphas[int(timesteps[k + 1])]) if k + 1 < len(timesteps) else final_alpha
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
            eps_m = uncond[2] + guidance_source * (cond[2] - uncond[2])
            pred_m = z0 + ((x_m - x_s) - (1 - a_t) ** 0.5 * (eps_m - eps_s)) / a_t**0.5
            direction = scale * (eps_m - eps_s + eps_c)
            x_m = a_next**0.5 * pred_m + direction + n
        x_s = a_next**0.5 * z0 + direction + n
        if background is not None:
            x_t = torch.where(background, x_s, x_t)
        if after_step is not None:  # a method's own latent blending (the baselines' local blends)
            x_t = after_step(k, x_s, x_t, a_next, x_m, a_t) if mutual else after_step(k, x_s, x_t, a_next)
        if step_callback is not None:
            step_callback(k, x_s, x_t, pred_x0)
    if final_blend and background is not None:
        pred_x0 = torch.where(background, z0, pred_x0)
    return pred_x0
