"""Time and peak memory of one ALE-Edit sampler step, against plain two-branch LCM and an explicit-softmax baseline.

One sampler step is one UNet call on the four-chunk batch of B=1 edit (source-uncond, target-uncond, source-cond,
target-cond; ``ale_edit.processors.TWO_BRANCHES``), latent (size/8)^2. Three variants run on the same model and inputs:

  plain      stock SDPA processors (diffusers ``AttnProcessor2_0``): two-branch LCM without attention control;
  ale        ``AleEdit.prepare``'s processors (Q,K injection, RGB-CAM), what the editor installs, with everything it
             sets: 3 objects with masks, Q,K injection active (schedule 1.0, step 0 of 15), RGB-CAM with ORE
             region values;
  reference  the same injection and RGB-CAM, but every attention as explicit softmax(QK^T) @ V through
             ``attn.get_attention_scores`` + ``bmm`` (diffusers' classic ``AttnProcessor``), so the full
             self-attention probability matrix is materialised: the authors' (prompt-to-prompt style) approach.
             Defined here, benchmark-only.

The model is the SD-1.5 UNet architecture (``UNet2DConditionModel``, ~860M parameters, with LCM_Dreamshaper_v7's
``time_cond_proj_dim=256``) with seeded random weights, built offline; ``--tiny`` uses the test suite's tiny UNet.
The UNet is called as ``ale_edit.sampler.virtual_inversion`` calls it (no ``timestep_cond``), at t=999.

Time: median over ``--repeats`` steps after one warm-up step per variant. The variants run in one process on one
model, interleaved round by round (the order rotates each round), so a noisy neighbour slows all of them alike.

Peak memory of the step, i.e. the transient memory the step needs above the resident model and inputs:
  CUDA  ``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()`` just before the step
        (after ``reset_peak_memory_stats``), max over the timed steps; measured in the timing process.
  CPU   each variant runs in its own subprocess (this script re-invoked with ``--variant``): it builds the model
        and inputs, runs ``--memory-warmup`` steps (default 1: one-time allocations such as oneDNN primitives and
        the controller's mask cache are not the step's), records the resident set size (VmRSS), resets the
        kernel's RSS high-water mark (``echo 5 > /proc/self/clear_refs``), runs ``--memory-steps`` steps
        (default 1) and reads VmHWM. Peak = VmHWM - VmRSS before. VmHWM is kernel accounting, no sampling; where
        clear_refs cannot be written (non-Linux, restricted /proc) a psutil thread samples RSS every 1 ms instead
        (may miss shorter spikes). The subprocess runs with ``MALLOC_MMAP_THRESHOLD_=131072`` so glibc returns
        every freed block over 128 KiB to the OS, and RSS follows live memory rather than malloc's cache.
        The same step also counts the peak of live tensor bytes (a ``TorchDispatchMode`` tracking storages;
        deterministic, reported as "tensors"), a check on RSS. A subprocess killed for memory is reported as
        such and its variant is not timed.

Ratios ale/plain and reference/plain are printed for time and peak step memory, with the issue's targets for ALE
(time <= 1.15, memory <= 1.10). The ale and reference outputs are compared as a check that the baseline computes
the same thing.

    python benchmarks/step_speed.py --tiny                 # seconds: smoke check on the tiny UNet
    python benchmarks/step_speed.py --size 256 --repeats 2 # SD-1.5 UNet, 32x32 latent
    python benchmarks/step_speed.py                        # SD-1.5 UNet at 512^2 (64x64 latent)
    python benchmarks/step_speed.py --size 768 --device cuda --profile
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time

import torch

from measure import (
    TensorPeak, build_sd15_unet, emit, fmt_mib, ratio, rss_peak_meter, run_child, sync, verdict,
)

from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor2_0  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

from ale_edit.methods.ale import AleController, SelfAttentionInjection  # noqa: E402
from ale_edit.models import build_tiny_diffusion_models, resolve_device, resolve_dtype  # noqa: E402
from ale_edit.processors import (  # noqa: E402
    TWO_BRANCHES, cross_attention_qkv, from_heads, install_processors, self_attention_qkv,
)
from ale_edit.methods.ale.rgb_cam import RegionGuidance, RegionGuidedCrossAttention  # noqa: E402
from ale_edit.steps import select  # noqa: E402

TARGET_COND = TWO_BRANCHES.chunk("target", conditional=True)

diffusers_logging.set_verbosity_error()  # "modules that should be kept in float32: []" on every .to(dtype)

VARIANTS = ("plain", "ale", "reference")
TIME_TARGET = 1.15
MEMORY_TARGET = 1.10
NUM_STEPS = 15  # the editor's default; injection is active at step 0 with schedule 1.0
TIMESTEP = 999  # the first LCM timestep of a 15-step run


# -- the explicit-softmax reference ---------------------------------------------------------------------------
def explicit_attention(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T * scale) @ v with the probability matrix materialised, as diffusers' ``AttnProcessor``.

    q: (b, heads, n, d), k, v: (b, heads, m, d) -> (b, heads, n, d).
    """
    b, h, n, d = q.shape
    m = k.shape[2]
    probs = attn.get_attention_scores(q.reshape(b * h, n, d), k.reshape(b * h, m, d))  # (b*h, n, m)
    out = torch.bmm(probs, v.reshape(b * h, m, v.shape[-1]))
    return out.view(b, h, n, -1)


class ReferenceSelfAttention(SelfAttentionInjection):
    """``SelfAttentionInjection`` with explicit softmax instead of SDPA."""

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        inject = self.controller.injection_mask(q.device)
        if inject is not False:
            qs, ks = TWO_BRANCHES.chunks(q), TWO_BRANCHES.chunks(k)
            for src, tgt in TWO_BRANCHES.pairs("source", "target"):
                qs[tgt], ks[tgt] = select(inject, qs[src], qs[tgt]), select(inject, ks[src], ks[tgt])
            q, k = torch.cat(qs), torch.cat(ks)
        return from_heads(explicit_attention(attn, q, k, v)).to(q.dtype)


class ReferenceCrossAttention(RegionGuidedCrossAttention):
    """RGB-CAM with the plain chunks also through explicit softmax (the target chunk is explicit in ALE too)."""

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = cross_attention_qkv(attn, hidden_states, encoder_hidden_states)
        if self.guidance is None:
            return from_heads(explicit_attention(attn, q, k, v))
        qs, ks, vs = TWO_BRANCHES.chunks(q), TWO_BRANCHES.chunks(k), TWO_BRANCHES.chunks(v)
        plain = explicit_attention(attn, torch.cat(qs[:TARGET_COND]), torch.cat(ks[:TARGET_COND]),
                                   torch.cat(vs[:TARGET_COND]))
        target = self.region_guided(attn, qs[TARGET_COND], ks[TARGET_COND])
        return from_heads(torch.cat([plain, target]))


def set_variant(unet, variant: str, controller: AleController) -> None:
    if variant == "plain":
        unet.set_attn_processor(AttnProcessor2_0())
    elif variant == "ale":  # what the editor installs for ALE-Edit
        self_proc, cross_proc = SelfAttentionInjection(controller), RegionGuidedCrossAttention(controller.guidance)
        install_processors(unet, lambda layer: cross_proc if layer.is_cross else self_proc)
    elif variant == "reference":
        self_proc, cross_proc = ReferenceSelfAttention(controller), ReferenceCrossAttention(controller.guidance)
        install_processors(unet, lambda layer: cross_proc if layer.is_cross else self_proc)
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


# -- model and inputs -----------------------------------------------------------------------------------------
def build_unet(tiny: bool, device: torch.device, dtype: torch.dtype) -> UNet2DConditionModel:
    unet = build_tiny_diffusion_models(0)[0] if tiny else build_sd15_unet(0)
    unet.requires_grad_(False)
    unet.eval()
    unet.to(device)
    if unet.dtype != dtype:
        unet.to(dtype)
    return unet


def object_masks(h: int, w: int) -> torch.Tensor:
    """(1, 3, h, w) bool: a rectangle (~18%), an ellipse (~16%) and a rectangle (~25%) overlapping the first."""
    ys = (torch.arange(h, dtype=torch.float32)[:, None] + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32)[None, :] + 0.5) / w
    rect1 = (ys >= 0.10) & (ys < 0.55) & (xs >= 0.08) & (xs < 0.48)
    ellipse = ((ys - 0.35) / 0.25) ** 2 + ((xs - 0.72) / 0.20) ** 2 <= 1.0
    rect2 = (ys >= 0.50) & (ys < 0.95) & (xs >= 0.05) & (xs < 0.60)
    return torch.stack([rect1, ellipse, rect2])[None]


def token_owner(n_tokens: int = 77) -> torch.Tensor:
    """(1, 77): the phrase owning each token of 'a red car and a blue bird and a green tree'."""
    phrases = ["a red car", "a blue bird", "a green tree"]
    try:
        from ale_edit.text import layout_prompt
        from ale_edit.tokenizer import clip_tokenizer

        spans = layout_prompt(clip_tokenizer(), phrases).spans
    except Exception:  # the tokenizer files are built offline from open_clip's BPE; fall back to known spans
        spans = ((1, 4), (5, 8), (9, 12))
    owner = torch.full((1, n_tokens), -1, dtype=torch.long)
    for i, (start, end) in enumerate(spans):
        owner[0, start:end] = i
    return owner


def make_inputs(unet, size: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """Latents (4, 4, h, w), timestep, context (4, 77, D) and the controller the editor would build."""
    if size % 64:
        raise SystemExit(f"--size must be a multiple of 64, got {size}")
    h = w = size // 8
    d = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(1, 4, h, w, generator=g)
    x_t = torch.randn(1, 4, h, w, generator=g)
    latents = torch.cat([x_s, x_t, x_s, x_t]).to(device, dtype)
    uncond, source_cond, target_cond = (torch.randn(1, 77, d, generator=g) for _ in range(3))
    context = torch.cat([uncond, uncond, source_cond, target_cond]).to(device, dtype)
    masks = object_masks(h, w)
    k = masks.shape[1]
    # As the editor: masks, restricted and token_owner on the CPU (the controller moves its per-resolution masks
    # once), region values (background, ORE_1..ORE_K) on the device in the text encoder's dtype.
    guidance = RegionGuidance(
        object_masks=masks,
        restricted=torch.ones(1, k, dtype=torch.bool),
        token_owner=token_owner(),
        region_values=torch.randn(1, 1 + k, 77, d, generator=g).to(device, dtype),
    )
    controller = AleController(NUM_STEPS, schedules=[1.0], guidance=guidance)
    controller.begin_step(0)
    assert bool(controller.injecting().all()) and controller.guidance is not None
    timestep = torch.tensor(TIMESTEP, device=device)
    return latents, timestep, context, controller


def run_step(unet, latents, timestep, context, controller) -> torch.Tensor:
    controller.begin_step(0)
    return unet(latents, timestep, encoder_hidden_states=context).sample


def timed_step(unet, inputs, device) -> tuple[float, float | None, torch.Tensor]:
    """(seconds, peak step memory in bytes on CUDA else None, output)."""
    gc.collect()
    sync(device)
    base = None
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = run_step(unet, *inputs)
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) - base if base is not None else None
    return seconds, peak, out


# -- CPU peak memory: one subprocess per variant --------------------------------------------------------------
def variant_subprocess(args) -> dict:
    """Run in the child: build, measure the RSS growth of ``--memory-steps`` steps, return a JSON-able dict."""
    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    with torch.inference_mode():
        unet = build_unet(args.tiny, device, dtype)
        inputs = make_inputs(unet, args.size, device, dtype)
        set_variant(unet, args.variant, inputs[-1])
        for _ in range(args.memory_warmup):  # one-time allocations (oneDNN primitives, lazy inits, mask cache)
            run_step(unet, *inputs)
        gc.collect()
        times = []
        with rss_peak_meter() as mem, TensorPeak() as tensors:
            for _ in range(args.memory_steps):
                start = time.perf_counter()
                out = run_step(unet, *inputs)
                times.append(time.perf_counter() - start)
                del out
    return {
        "variant": args.variant, "peak_step_bytes": mem["peak"] - mem["base"], "rss_before": mem["base"],
        "rss_peak": mem["peak"], "method": mem["method"], "seconds": times[0],
        "tensor_peak_bytes": tensors.peak, "tensor_peak_at": tensors.peak_at,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def measure_cpu_memory(args, variants) -> dict:
    results = {}
    for variant in variants:
        cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant, "--device", args.device,
               "--dtype", args.dtype, "--size", str(args.size), "--memory-steps", str(args.memory_steps),
               "--memory-warmup", str(args.memory_warmup)]
        if args.tiny:
            cmd.append("--tiny")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        results[variant] = {"variant": variant, **run_child(cmd, variant)}
    return results


# -- profiling --------------------------------------------------------------------------------------------------
class _TimedProcessor:
    """Wraps a processor and adds its wall time (synchronised on CUDA) to ``totals[kind]``."""

    def __init__(self, inner, kind: str, totals: dict, device: torch.device):
        self.inner, self.kind, self.totals, self.device = inner, kind, totals, device

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        sync(self.device)
        self.totals[self.kind] = self.totals.get(self.kind, 0.0) + time.perf_counter() - start
        return out


def profile(unet, inputs, device, variants) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    controller = inputs[-1]
    for variant in variants:
        set_variant(unet, variant, controller)
        totals: dict = {}
        unet.set_attn_processor({
            name: _TimedProcessor(proc, "self-attention" if name.endswith("attn1.processor") else "cross-attention",
                                  totals, device)
            for name, proc in unet.attn_processors.items()
        })
        seconds, _, _ = timed_step(unet, inputs, device)
        rest = seconds - sum(totals.values())
        parts = ", ".join(f"{k} {v:.3f}s ({v / seconds:.0%})" for k, v in sorted(totals.items()))
        print(f"\nprofile {variant}: step {seconds:.3f}s = {parts}, rest {rest:.3f}s ({rest / seconds:.0%})")
        set_variant(unet, variant, controller)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=activities, profile_memory=device.type != "cuda") as prof:
            run_step(unet, *inputs)
            sync(device)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=40))


# -- main -------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny test UNet instead of SD-1.5's (seconds)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", help="auto: fp16 on CUDA, fp32 on CPU; or fp32/fp16/bf16")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels, latent is size/8 (default 512; 128 with --tiny)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant after one warm-up")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, usually one per core)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of %(default)s")
    parser.add_argument("--no-memory", action="store_true", help="CPU: skip the per-variant memory subprocesses")
    parser.add_argument("--memory-steps", type=int, default=1, help="CPU: measured steps per memory subprocess")
    parser.add_argument("--memory-warmup", type=int, default=1,
                        help="CPU: unmeasured steps before them in each memory subprocess")
    parser.add_argument("--profile", action="store_true", help="also time attention vs rest, and torch.profiler")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: memory subprocess
    args = parser.parse_args()
    if args.size is None:
        args.size = 128 if args.tiny else 512
    if args.repeats < 1 or args.memory_steps < 1 or args.memory_warmup < 0:
        parser.error("--repeats and --memory-steps must be >= 1, --memory-warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.variant:
        emit(variant_subprocess(args))
        return

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    model = "tiny UNet" if args.tiny else "SD-1.5 UNet (random weights, time_cond_proj_dim=256)"
    print(f"step_speed: {model}, {args.size}x{args.size} image -> {args.size // 8}x{args.size // 8} latent, "
          f"batch 4 (B=1 edit x 4 branches), {device} {str(dtype).replace('torch.', '')}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    memory: dict = {}
    if device.type == "cpu" and not args.no_memory:
        memory = measure_cpu_memory(args, variants)
        failed = [v for v in variants if "error" in memory.get(v, {})]
        variants = [v for v in variants if v not in failed]

    torch.manual_seed(0)
    times: dict = {v: [] for v in variants}
    cuda_peaks: dict = {v: [] for v in variants}
    outputs: dict = {}
    with torch.inference_mode():
        start = time.perf_counter()
        unet = build_unet(args.tiny, device, dtype)
        n_params = sum(p.numel() for p in unet.parameters())
        inputs = make_inputs(unet, args.size, device, dtype)
        masks = inputs[-1].guidance.object_masks[0]
        print(f"  model: {n_params / 1e6:,.1f}M parameters, built in {time.perf_counter() - start:.1f}s; masks "
              f"cover {', '.join(f'{m.float().mean():.0%}' for m in masks)} of the latent", flush=True)
        for variant in variants:  # warm-up, and outputs for the equivalence check
            set_variant(unet, variant, inputs[-1])
            seconds, _, out = timed_step(unet, inputs, device)
            outputs[variant] = out.float().cpu()
            print(f"  warm-up {variant}: {seconds:.3f}s", flush=True)
        for r in range(args.repeats):
            order = variants[r % len(variants):] + variants[: r % len(variants)] if variants else []
            for variant in order:
                set_variant(unet, variant, inputs[-1])
                seconds, peak, out = timed_step(unet, inputs, device)
                del out
                times[variant].append(seconds)
                if peak is not None:
                    cuda_peaks[variant].append(peak)
            print(f"  round {r + 1}/{args.repeats}: "
                  + ", ".join(f"{v} {times[v][-1]:.3f}s" for v in variants), flush=True)
        if args.profile:
            profile(unet, inputs, device, variants)

    for name, out in outputs.items():
        if not torch.isfinite(out).all():
            print(f"  warning: the {name} output has non-finite values (random weights in {dtype})")
    if "ale" in outputs and "reference" in outputs:
        diff = (outputs["ale"] - outputs["reference"]).abs().max().item()
        scale = outputs["ale"].abs().max().item()
        print(f"  check: max |ale - reference| = {diff:.3g} (output max {scale:.3g})")
    if "ale" in outputs and "plain" in outputs:
        target = slice(3, 4)  # the target-conditional chunk, where ALE acts most
        diff = (outputs["ale"][target] - outputs["plain"][target]).abs().max().item()
        print(f"  check: max |ale - plain| on the target-conditional chunk = {diff:.3g} (expected > 0)")

    # -- table
    median = {v: statistics.median(t) for v, t in times.items() if t}
    fastest = {v: min(t) for v, t in times.items() if t}
    tensor_peak: dict = {}
    if device.type == "cuda":
        peak = {v: max(p) for v, p in cuda_peaks.items() if p}
        mem_note = "peak = CUDA max_memory_allocated - memory_allocated before the step, max over the timed steps"
    else:
        peak = {v: m["peak_step_bytes"] for v, m in memory.items() if "peak_step_bytes" in m}
        tensor_peak = {v: m["tensor_peak_bytes"] for v, m in memory.items() if "tensor_peak_bytes" in m}
        methods = sorted({m["method"] for m in memory.values() if "method" in m})
        mem_note = (f"peak = RSS growth ({'/'.join(methods)}) over {args.memory_steps} step(s) after "
                    f"{args.memory_warmup} warm-up in a fresh process; tensors = peak live tensor bytes in that step"
                    if methods else "peak: not measured")
    all_variants = [v.strip() for v in args.variants.split(",") if v.strip()]

    def r_txt(table, v):
        r = ratio(table.get(v), table.get("plain"))
        return "-" if r is None else f"{r:.3f}"

    header = f"\n{'variant':<10} {'median s':>9} {'min s':>8} {'t/plain':>8} {'peak MiB':>9} {'m/plain':>8}"
    if memory:
        header += f" {'tensors MiB':>12} {'tm/plain':>8} {'mem s':>7} {'RSS before MiB':>15}"
    print(header)
    for v in all_variants:
        err = memory.get(v, {}).get("error")
        if err:
            print(f"{v:<10} {'-':>9} {'-':>8} {'-':>8} {'-':>9} {'-':>8}  {err}")
            continue
        line = (f"{v:<10} {median[v]:>9.3f} {fastest[v]:>8.3f} {r_txt(median, v):>8} {fmt_mib(peak.get(v)):>9} "
                f"{r_txt(peak, v):>8}")
        if v in memory:
            m = memory[v]
            line += (f" {fmt_mib(m['tensor_peak_bytes']):>12} {r_txt(tensor_peak, v):>8} {m['seconds']:>7.2f} "
                     f"{fmt_mib(m['rss_before']):>15}")
        print(line)
    print(f"time = median of {args.repeats} step(s) after 1 warm-up, variants interleaved; t/plain on medians "
          f"(on minima: " + ", ".join(f"{v} {r_txt(fastest, v)}" for v in median if v != "plain") + f"); {mem_note}")
    if memory:
        for v in all_variants:
            if memory.get(v, {}).get("tensor_peak_at"):
                print(f"  {v}: tensor peak at {memory[v]['tensor_peak_at']}")

    parts = [f"{v}/plain time {r_txt(median, v)} memory {r_txt(peak, v)}" for v in ("ale", "reference")]
    t_ale, m_ale = ratio(median.get("ale"), median.get("plain")), ratio(peak.get("ale"), peak.get("plain"))
    targets = (f"targets ale/plain: time <= {TIME_TARGET} {verdict(t_ale, TIME_TARGET)}, "
               f"memory <= {MEMORY_TARGET} {verdict(m_ale, MEMORY_TARGET)}")
    if tensor_peak:
        tm_ale = ratio(tensor_peak.get("ale"), tensor_peak.get("plain"))
        targets += f" (tensor-level {r_txt(tensor_peak, 'ale')}: {verdict(tm_ale, MEMORY_TARGET)})"
    print(f"RATIOS {'tiny ' if args.tiny else ''}{args.size}px {device.type}: " + "; ".join(parts) + " | " + targets)


if __name__ == "__main__":
    main()
