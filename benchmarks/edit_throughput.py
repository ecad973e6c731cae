"""Edits per second of the editor at several batch sizes, measured side by side in one run.

    python benchmarks/edit_throughput.py                 # tiny models, 64x64, 8 edits per batch size
    python benchmarks/edit_throughput.py --model SimianLuo/LCM_Dreamshaper_v7 --size 768 --steps 15 --edits 8

Each batch size edits the same list of requests (real ALE-Bench images and masks when ../shared/ale_bench is
there, else synthetic ones); rounds alternate between batch sizes so machine noise hits them alike. Prints
edits/s per batch size and the ratio to batch size 1.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import click
import numpy as np
from PIL import Image

from ale_edit.editor import EditRequest, Editor
from ale_edit.models import load_diffusion_models
from ale_edit.settings import EditSettings

BENCH = Path(__file__).resolve().parents[2] / "shared" / "ale_bench"


def requests(n: int) -> list[EditRequest]:
    if (BENCH / "images" / "artificial_img05.jpg").is_file():
        from ale_edit.io import load_image, load_mask

        image = load_image(BENCH / "images" / "artificial_img05.jpg")
        masks = {p: load_mask(BENCH / "masks" / "artificial_img05" / f"{p}_mask.png", image.size)
                 for p in ("cup", "book")}
    else:
        image = Image.new("RGB", (512, 512), (120, 90, 60))
        masks = {p: np.zeros((512, 512), bool) for p in ("cup", "book")}
        masks["cup"][100:300, 100:300] = True
        masks["book"][300:450, 50:450] = True
    targets = ["gold", "silver", "wood", "glass", "marble", "paper", "clay", "steel"]
    return [EditRequest(image, [("cup", f"cup made of {targets[i % 8]}"), ("book", "red-colored book")], masks,
                        edit_type="material", seed=i) for i in range(n)]


@click.command()
@click.option("--model", default="tiny", show_default=True)
@click.option("--size", default=64, show_default=True)
@click.option("--steps", default=4, show_default=True)
@click.option("--edits", default=8, show_default=True, help="Edits per batch size per round.")
@click.option("--batch-sizes", default="1,4", show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--device", default="auto", show_default=True)
def main(model, size, steps, edits, batch_sizes, rounds, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = load_diffusion_models(model, device)
    editor = Editor(models, EditSettings(size=size, steps=steps), progress=False)
    work = requests(edits)
    sizes = [int(b) for b in batch_sizes.split(",")]
    editor.edit_batch(work[: max(sizes)])  # warm-up: kernels, caches, text encodings
    rates: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(rounds):
        for b in sizes:
            start = time.perf_counter()
            for i in range(0, len(work), b):
                editor.edit_batch(work[i : i + b])
            if models.device.type == "cuda":
                import torch

                torch.cuda.synchronize()
            rates[b].append(len(work) / (time.perf_counter() - start))
    print(f"model={model} device={models.device} dtype={models.dtype} size={size} steps={steps} edits={edits} "
          f"rounds={rounds}")
    base = statistics.median(rates[sizes[0]])
    for b in sizes:
        rate = statistics.median(rates[b])
        print(f"batch {b:>2}: {rate:8.3f} edits/s (median of {rounds}), x{rate / base:.2f} vs batch {sizes[0]}")


if __name__ == "__main__":
    main()
