"""Edits/s and peak memory (RSS) of ``Scorer`` at several batch sizes, on ALE-Bench's 1000x1000 images.

    python benchmarks/score_speed.py                              # 16 edits, batch sizes 1, 4, 16
    python benchmarks/score_speed.py --unchunked --baseline 3f84d1e   # also without the pixel budget, and the old code

The models are the real metrics' costs where they matter on CPU, without downloads: LPIPS is the real SqueezeNet
architecture at full resolution with a seeded random backbone (torchvision's ``squeezenet1_1(weights=None)``)
and the linear heads torchmetrics ships; SSIM is torchmetrics'; CLIP and DINO are the tiny seeded models (the
real ViT-L/14 and ViT-B/8 cost the same whatever the scoring code does around them). The edits are real
ALE-Bench instances (1-3 objects) whose edited image is the source with a patch of noise, written once to a
temporary folder.

Each configuration runs in a fresh subprocess, so its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of
that process, imports and models included) is its own. ``--baseline REV`` runs the same child on the scoring code
of git revision REV (``git archive`` into a temporary folder, first on the child's ``sys.path``): the code
before the pixel budget. Printed: one row per configuration, its ratios against batch size 1 of the same code
and against the baseline at the same batch size, and the largest difference of every metric against the first
configuration (MSE and PSNR must be exactly equal).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "ale_bench"
CURRENT = "current"
CLIP_COLUMNS = ("edited_clip", "te_leakage", "te_leakage_joined", "ti_leakage")


def write_edits(bench: Path, n: int, folder: Path) -> list[dict]:
    """``n`` real instances (alternating 1, 2, 3 objects over the images), edited = source with a noisy patch."""
    import numpy as np
    from PIL import Image

    from ale_edit.bench.dataset import image_path, load_prompt_instances, masks_for_image

    instances = load_prompt_instances(bench, edit_types="color")
    by_count = {k: [p for p in instances if p.n_objects == k and p.index == 0] for k in (1, 2, 3)}
    rng = np.random.default_rng(0)
    edits = []
    for i in range(n):
        inst = by_count[1 + i % 3][(i // 3) % len(by_count[1 + i % 3])]
        source = np.array(Image.open(image_path(bench, inst.image)).convert("RGB"))
        edited = source.astype(np.int16)
        top, left = rng.integers(0, source.shape[0] - 200), rng.integers(0, source.shape[1] - 200)
        edited[top : top + 200, left : left + 200] += rng.integers(-60, 60, (200, 200, 3), dtype=np.int16)
        path = folder / f"edit_{i}.png"
        Image.fromarray(np.clip(edited, 0, 255).astype(np.uint8)).save(path)
        edits.append({"edit_id": f"{i}:{inst.key}", "source_image": str(image_path(bench, inst.image)),
                      "edited_image": str(path), "edits": [list(e) for e in inst.edits],
                      "masks": {p: str(f) for p, f in masks_for_image(bench, inst.image).items()},
                      "edit_type": inst.edit_type, "n_objects": inst.n_objects, "image": inst.image})
    return edits


def child(config: dict) -> dict:
    """Score the edits once with one configuration; return its time, memory and per-edit metrics."""
    if config["code"] != CURRENT:
        sys.path.insert(0, config["code"])
    import warnings

    import torch
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    import ale_edit
    from ale_edit.bench.metric_models import load_metric_models
    from ale_edit.bench.scoring import METRIC_COLUMNS, EditRecord, Scorer

    torch.set_num_threads(config["threads"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = load_metric_models("tiny", device="cpu")
    models.clip.load_state_dict(torch.load(config["clip_state"]))  # the current tiny CLIP, for the baseline too
    # The real LPIPS network over a seeded random backbone, built here so the baseline code gets the same one.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        models.lpips = _NoTrainLpips(net="squeeze", pnet_rand=True).eval().requires_grad_(False)
    records = [EditRecord(edit_id=e["edit_id"], source_image=Path(e["source_image"]),
                          edited_image=Path(e["edited_image"]), masks={p: Path(f) for p, f in e["masks"].items()},
                          edits=tuple(tuple(x) for x in e["edits"]), edit_type=e["edit_type"],
                          n_objects=e["n_objects"], image=e["image"], index=0) for e in config["edits"]]
    options = {} if config["pixel_budget"] == "default" else {"pixel_budget": config["pixel_budget"]}
    rss_before = _rss_mib()
    seconds, cpu_seconds = [], []
    for _ in range(config["rounds"]):  # a fresh scorer each round: no cache carries over
        scorer = Scorer(models, batch_size=config["batch_size"], progress=False, **options)
        start, cpu_start = time.perf_counter(), time.process_time()
        per_edit = scorer.score_records(records)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        errors = per_edit["error"].dropna().tolist()
        if errors:
            raise RuntimeError(f"scoring failed: {errors[:3]}")
    return {"seconds": min(seconds), "cpu_seconds": min(cpu_seconds), "rss_before_mib": rss_before,
            "code": ale_edit.__file__,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "metrics": {c: per_edit[c].tolist() for c in METRIC_COLUMNS}}


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def baseline_tree(rev: str, into: Path) -> Path:
    """The package ``ale_edit`` of git revision ``rev``, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "ale_edit"], capture_output=True, check=True)
    tar_path = into / "baseline.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline"


def run_child(config: dict) -> dict:
    """One configuration in a fresh process (``--child``): its own peak RSS."""
    result = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(config), capture_output=True,
                            text=True, cwd=tempfile.gettempdir(), env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if result.returncode != 0:
        raise click.ClickException(f"configuration {config['name']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def largest_differences(a: dict, b: dict) -> dict:
    import numpy as np

    out = {}
    for name, values in a.items():
        x, y = np.asarray(values, dtype=float), np.asarray(b[name], dtype=float)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        out[name] = 0.0 if same.all() else float(np.nanmax(np.abs(x - y)[~same]))
    return out


@click.command()
@click.option("--bench", type=click.Path(exists=True, file_okay=False, path_type=Path), default=BENCH,
              show_default=True, help="ALE-Bench (images/, masks/, prompts/).")
@click.option("--edits", default=16, show_default=True, help="Edits scored per configuration.")
@click.option("--batch-sizes", default="1,4,16", show_default=True)
@click.option("--unchunked", is_flag=True, help="Also score with pixel_budget=None (one pixel-metric call per batch).")
@click.option("--baseline", default=None, help="A git revision whose scoring code to run beside (e.g. 3f84d1e).")
@click.option("--threads", default=1, show_default=True,
              help="torch threads in each configuration (1: steady numbers on a small shared machine, where idle "
                   "threads spin while the other is descheduled).")
@click.option("--rounds", default=2, show_default=True,
              help="Times each configuration scores the edits (fresh scorer each time); the fastest round counts.")
@click.option("--child", "is_child", is_flag=True, hidden=True)
def main(bench, edits, batch_sizes, unchunked, baseline, threads, rounds, is_child):
    if is_child:
        print(json.dumps(child(json.loads(sys.stdin.read()))))
        return
    sizes = [int(b) for b in batch_sizes.split(",")]
    import torch

    from ale_edit.bench.metric_models import build_tiny_clip

    with tempfile.TemporaryDirectory(prefix="score_speed_") as tmp:
        work = write_edits(bench, edits, Path(tmp))
        clip_state = Path(tmp) / "clip.pt"
        torch.save(build_tiny_clip(0).state_dict(), clip_state)
        codes = [("pixel budget", CURRENT, "default")]
        if unchunked:
            codes.append(("unchunked", CURRENT, None))
        if baseline:
            codes.append((f"baseline {baseline}", str(baseline_tree(baseline, Path(tmp))), "default"))
        results = {}
        for label, code, budget in codes:
            for b in sizes:
                name = f"{label}, batch {b}"
                config = {"name": name, "code": code, "pixel_budget": budget, "batch_size": b, "threads": threads,
                          "rounds": rounds, "edits": work, "clip_state": str(clip_state)}
                results[(label, b)] = run_child(config)
                print(f"  {name}: {results[(label, b)]['seconds']:.1f} s", file=sys.stderr, flush=True)
    print(f"Scorer on {edits} ALE-Bench edits at 1000x1000, CPU, {threads} threads (os.cpu_count() "
          f"{os.cpu_count()}), best of {rounds} rounds; LPIPS SqueezeNet at full size (random backbone), "
          f"torchmetrics SSIM, tiny CLIP/DINO")
    header = (f"| {'code':<24} | batch | edits/s | s/edit | CPU s/edit | peak RSS MiB | RSS before MiB "
              f"| edits/s vs batch 1 | peak RSS vs batch 1 | edits/s vs baseline | peak RSS vs baseline |")
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    base_label = f"baseline {baseline}" if baseline else None
    for label, _, _ in codes:
        for b in sizes:
            r, first = results[(label, b)], results[(label, sizes[0])]
            rate, first_rate = edits / r["seconds"], edits / first["seconds"]
            cells = [f"{label:<24}", f"{b:>5}", f"{rate:7.3f}", f"{r['seconds'] / edits:6.2f}",
                     f"{r['cpu_seconds'] / edits:10.2f}",
                     f"{r['peak_rss_mib']:12.0f}", f"{r['rss_before_mib']:14.0f}", f"{rate / first_rate:18.2f}",
                     f"{r['peak_rss_mib'] / first['peak_rss_mib']:19.2f}"]
            if base_label and (base_label, b) in results:
                old = results[(base_label, b)]
                cells += [f"{rate / (edits / old['seconds']):19.2f}", f"{r['peak_rss_mib'] / old['peak_rss_mib']:20.2f}"]
            else:
                cells += [f"{'':>19}", f"{'':>20}"]
            print("| " + " | ".join(cells) + " |")
    print("\nLargest |difference| of the metrics, CLIP ones (0-100 scale) apart from the rest; MSE and PSNR (whole "
          "image and region) must be identical:")
    reference_key = (codes[0][0], sizes[0])
    for key, r in results.items():
        against = [(f"{reference_key[0]}, batch {reference_key[1]}", results[reference_key])]
        if base_label and key[0] != base_label and (base_label, key[1]) in results:
            against.append((f"{base_label}, batch {key[1]}", results[(base_label, key[1])]))
        for name, other in against:
            if other is r:
                continue
            print(f"  {key[0]}, batch {key[1]} vs {name}: {describe_differences(other['metrics'], r['metrics'])}")


def describe_differences(a: dict, b: dict) -> str:
    diffs = largest_differences(a, b)
    exact = all(diffs[m] == 0 for m in ("bg_mse", "bg_psnr", "bg_mse_region", "bg_psnr_region"))
    clip = max(diffs[m] for m in diffs if m in CLIP_COLUMNS)
    rest = {m: d for m, d in diffs.items() if m not in CLIP_COLUMNS}
    worst = max(rest, key=rest.get)
    return (f"MSE/PSNR {'identical' if exact else 'DIFFER'}; CLIP {clip:.1e}; others {rest[worst]:.1e} "
            f"({worst})")

if __name__ == "__main__":
    main()
