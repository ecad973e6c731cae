"""Time and peak memory of one complete edit by every method, against the plain sampler, side by side in one run.

One edit = what ``Editor.edit`` does: VAE-encode the source, build the method's text plan and controller, run the
sampler's 15 steps with the method's processors and blends, VAE-decode. The models are the LCM_Dreamshaper_v7
architecture (SD-1.5 UNet, VAE, CLIP ViT-L text encoder) with seeded random weights, built offline; the input is
ALE-Bench's artificial_img05 with its three hand-refined masks (cup, book, steam) when ../shared/ale_bench is
there, else a synthetic image with three rectangles. Variants:

  plain          the sampler alone, stock SDPA processors (method ``plain``): the reference
  ale            ALE-Edit (ORE, RGB-CAM, BB, Q,K injection)
  ale-no-ore / ale-no-rgb-cam / ale-no-bb   ALE-Edit with one part off
  p2p, masactrl, fpe, infedit               the baselines on the same sampler

Time: one edit per variant per round after a one-step warm-up edit of each (it makes the same one-time
allocations and kernels as a whole edit), variants interleaved round by round (the order rotates), so a noisy
neighbour slows them alike; the median over ``--repeats`` rounds. Memory: each variant in its own process (this
script re-invoked with ``--variant``), peak RSS growth over one edit of ``--memory-steps`` steps (default: all)
after a one-step warm-up edit (``measure.rss_peak_meter``; every step holds the same tensors, so a shorter edit
has the same peak); on CUDA ``max_memory_allocated`` above the resident models. Targets for ALE: time and memory
<= 1.05 x plain.

    python benchmarks/edit_speed.py --tiny                       # seconds: plumbing check on the tiny models
    python benchmarks/edit_speed.py --size 256                   # CPU, SD-1.5 architecture (about 15 minutes)
    python benchmarks/edit_speed.py --device cuda --size 768 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from measure import build_sd15_models, cuda_peak_meter, emit, fmt_mib, fmt_ratio, ratio, rss_peak_meter, run_child, \
    sync, verdict

from ale_edit.editor import EditRequest, Editor  # noqa: E402
from ale_edit.models import load_diffusion_models, resolve_device, resolve_dtype  # noqa: E402
from ale_edit.settings import EditSettings  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "shared" / "ale_bench"
PAIRS = [("cup", "cup made of gold"), ("book", "red-colored book"), ("steam", "pink smoke")]
VARIANTS = {
    "plain": ("plain", None),
    "ale": ("ale", None),
    "ale-no-ore": ("ale", {"ore": False}),
    "ale-no-rgb-cam": ("ale", {"rgb_cam": False}),
    "ale-no-bb": ("ale", {"bb": False}),
    "p2p": ("p2p", None),
    "masactrl": ("masactrl", None),
    "fpe": ("fpe", None),
    "infedit": ("infedit", None),
}
TARGET = 1.05


def request() -> EditRequest:
    from PIL import Image

    if (BENCH / "images" / "artificial_img05.jpg").is_file():
        from ale_edit.io import load_image, load_mask

        image = load_image(BENCH / "images" / "artificial_img05.jpg")
        masks = {p: load_mask(BENCH / "masks" / "artificial_img05" / f"{p}_mask.png", image.size) for p, _ in PAIRS}
    else:
        image = Image.new("RGB", (512, 512), (120, 90, 60))
        masks = {p: np.zeros((512, 512), bool) for p, _ in PAIRS}
        for (p, _), (r, c) in zip(PAIRS, ((100, 100), (300, 50), (20, 300))):
            masks[p][r : r + 150, c : c + 150] = True
    return EditRequest(image, PAIRS, masks, edit_type="material", seed=0)


def load_models(args):
    device = resolve_device(args.device)
    dtype = resolve_dtype(device, args.dtype)
    if args.tiny:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_diffusion_models("tiny", device, dtype)
    return build_sd15_models(device, dtype)


def editor(models, variant: str, args, steps: int | None = None) -> Editor:
    method, options = VARIANTS[variant]
    return Editor(models, EditSettings(method=method, options=options, size=args.size, steps=steps or args.steps),
                  progress=False)


def timed_edit(ed: Editor, req: EditRequest) -> float:
    sync(ed.models.device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ed.edit(req)
    sync(ed.models.device)
    return time.perf_counter() - start


def variant_child(args) -> dict:
    """In the child: build the models, one warm-up edit, then the peak memory of one edit."""
    models = load_models(args)
    req = request()
    timed_edit(editor(models, args.variant, args, steps=1), req)  # one-time allocations are not the edit's
    ed = editor(models, args.variant, args, steps=args.memory_steps or args.steps)
    gc.collect()
    meter = cuda_peak_meter(models.device) if models.device.type == "cuda" else rss_peak_meter()
    with meter as mem:
        seconds = timed_edit(ed, req)
    return {"peak_bytes": mem["peak"] - mem["base"], "method": mem["method"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny test models (a plumbing check, seconds)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--size", type=int, default=None, help="working size (default 256; 64 with --tiny)")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds after one warm-up round")
    parser.add_argument("--memory-steps", type=int, default=None, help="steps of the edit whose memory is measured")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, plain first")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant memory processes")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: measure one variant's memory
    args = parser.parse_args()
    args.size = args.size or (64 if args.tiny else 256)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        emit(variant_child(args))
        return
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or variants[0] != "plain":
        raise SystemExit(f"--variants: {unknown or 'plain must come first'}; known: {', '.join(VARIANTS)}")
    models = load_models(args)
    print(f"edit_speed: {'tiny models' if args.tiny else 'SD-1.5 architecture, random weights'}, {args.size}px, "
          f"{args.steps} steps, 3 masked objects, {models.device} {str(models.dtype).replace('torch.', '')}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    req = request()
    editors = {v: editor(models, v, args) for v in variants}
    warm = {v: editor(models, v, args, steps=1) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for round_ in range(args.repeats + 1):  # round 0 warms up, with one-step edits
        order = variants[round_ % len(variants):] + variants[: round_ % len(variants)]
        seconds = {v: timed_edit((editors if round_ else warm)[v], req) for v in order}
        if round_:
            for v in order:
                times[v].append(seconds[v])
        print(f"  round {round_}{' (warm-up)' if not round_ else ''}: "
              + ", ".join(f"{v} {seconds[v]:.1f}s" for v in order), flush=True)
    memory = {}
    if not args.no_memory:
        for v in variants:
            cmd = [sys.executable, os.path.abspath(__file__), "--variant", v, "--device", args.device, "--dtype",
                   args.dtype, "--size", str(args.size), "--steps", str(args.steps)]
            cmd += ["--memory-steps", str(args.memory_steps)] if args.memory_steps else []
            cmd += ["--tiny"] if args.tiny else []
            cmd += ["--threads", str(args.threads)] if args.threads else []
            memory[v] = run_child(cmd, v)
    median = {v: statistics.median(t) for v, t in times.items()}
    peak = {v: memory.get(v, {}).get("peak_bytes") for v in variants}
    print(f"\n{'variant':<16}{'edit s':>9}{'t/plain':>9}{'peak MiB':>10}{'m/plain':>9}")
    for v in variants:
        print(f"{v:<16}{median[v]:>9.2f}{fmt_ratio(ratio(median[v], median['plain'])):>9}{fmt_mib(peak[v]):>10}"
              f"{fmt_ratio(ratio(peak[v], peak['plain'])):>9}")
    t_ale, m_ale = ratio(median.get("ale"), median["plain"]), ratio(peak.get("ale"), peak["plain"])
    print(f"time = median of {args.repeats} edit(s) of {args.steps} steps per variant after a one-step warm-up, "
          f"interleaved; peak = {'RSS growth (VmHWM)' if models.device.type == 'cpu' else 'CUDA allocation'} over "
          f"one edit of {args.memory_steps or args.steps} steps after a one-step warm-up, in a fresh process per "
          f"variant")
    print(f"RATIOS {args.size}px {models.device.type}: ale/plain time {fmt_ratio(t_ale)} memory {fmt_ratio(m_ale)} "
          f"| targets <= {TARGET}: time {verdict(t_ale, TARGET)}, memory {verdict(m_ale, TARGET)}")


if __name__ == "__main__":
    main()
