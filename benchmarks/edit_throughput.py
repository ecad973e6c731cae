"""Edits per second of the editor at several batch sizes, or of the edit stage's two backends, measured side by
side in one run.

    python benchmarks/edit_throughput.py                 # tiny models, 64x64, 8 edits per batch size
    python benchmarks/edit_throughput.py --model SimianLuo/LCM_Dreamshaper_v7 --size 768 --steps 15 --edits 8
    python benchmarks/edit_throughput.py --backend ray --workers 2    # the Ray backend against the local one

Each batch size edits the same list of requests (real ALE-Bench images and masks when ../shared/ale_bench is
there, else synthetic ones); rounds alternate between batch sizes so machine noise hits them alike. Prints
edits/s per batch size and the ratio to batch size 1.

``--backend ray`` runs the same edits as the edit stage runs them (jobs with files, a fresh work folder each run,
the first of --batch-sizes) through the local backend (``runner.run_jobs``, the editor loaded once) and the Ray
backend (``ray_edit.run_jobs_on_ray``, a local Ray, ``--workers`` CPU actors of one CPU each). Each Ray run starts
its own pool (each actor loads its models), so its time is a fixed start-up plus the edits: it runs --edits and
3 x --edits edits, and prints the Ray edits/s from the difference (the start-up cancels), their ratio to the
local edits/s, the start-up in seconds (the intercept), and the seconds ray.init took once.
"""

from __future__ import annotations

import statistics
import tempfile
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


def jobs(n: int, folder: Path, schedule: float = 0.6) -> list:
    """The requests of ``requests(n)`` as the edit stage's jobs: their image and masks written to ``folder``."""
    from ale_edit.bench.runner import EditJob

    work = requests(n)
    image = folder / "image.png"
    work[0].image.save(image)
    masks = {}
    for phrase, mask in work[0].masks.items():
        masks[phrase] = folder / f"{phrase}.png"
        Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(masks[phrase])
    return [EditJob(f"2/material/bench/{i}", "bench", "material", 2, i, list(r.pairs), image, dict(masks),
                    {p: "manual" for p in masks}, schedule, r.seed, fingerprint=f"edit{i:04d}")
            for i, r in enumerate(work)]


def compare_backends(model: str, settings: EditSettings, device: str, edits: int, batch_size: int, workers: int,
                     rounds: int) -> None:
    import ray
    import torch

    from ale_edit.bench.backends import RayOptions
    from ale_edit.bench.ray_backend import plan_pool, ray_cluster
    from ale_edit.bench.ray_edit import run_jobs_on_ray
    from ale_edit.bench.runner import EditorSpec, run_jobs

    spec = EditorSpec(model, device, "auto", settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        editor = spec.load(progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        few, many = jobs(edits, tmp), jobs(3 * edits, tmp)
        run_jobs(editor, few[:batch_size], tmp / "warm-up", batch_size=batch_size, progress=False)
        start = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING")
        init_seconds = time.perf_counter() - start
        local, ray_few, ray_many = [], [], []
        with ray_cluster(RayOptions()):  # this process's Ray, started above
            pool = plan_pool(RayOptions(workers=workers), device)
            ray_spec = EditorSpec(model, pool.device, "auto", settings)
            for r in range(rounds):
                start = time.perf_counter()
                run_jobs(editor, few, tmp / f"local-{r}", batch_size=batch_size, progress=False)
                local.append(time.perf_counter() - start)
                for jobs_, times, name in ((few, ray_few, "few"), (many, ray_many, "many")):
                    start = time.perf_counter()
                    run_jobs_on_ray(ray_spec, jobs_, tmp / f"ray-{name}-{r}", pool, batch_size=batch_size,
                                    progress=False)
                    times.append(time.perf_counter() - start)
        ray.shutdown()
    local_rate = edits / statistics.median(local)
    ray_rate = 2 * edits / (statistics.median(ray_many) - statistics.median(ray_few))
    startup = statistics.median(ray_few) - edits / ray_rate
    print(f"model={model} device={editor.models.device} size={settings.size} steps={settings.steps} "
          f"edits={edits} and {3 * edits} batch={batch_size} rounds={rounds}; local: this process, "
          f"{torch.get_num_threads()} torch threads; ray: {pool.workers} actors of {pool.num_cpus:g} CPU, "
          f"{pool.num_gpus:g} GPU")
    print(f"local: {local_rate:8.3f} edits/s (median of {rounds})")
    print(f"ray  : {ray_rate:8.3f} edits/s from the difference of {3 * edits} and {edits} edits, "
          f"x{ray_rate / local_rate:.2f} vs local")
    print(f"ray start-up: {startup:.1f} s per run (the pool: actors start and load their models), "
          f"ray.init {init_seconds:.1f} s once; runs of {edits} edits took {statistics.median(ray_few):.1f} s "
          f"on Ray, {statistics.median(local):.1f} s locally")


@click.command()
@click.option("--model", default="tiny", show_default=True)
@click.option("--size", default=64, show_default=True)
@click.option("--steps", default=4, show_default=True)
@click.option("--edits", default=8, show_default=True, help="Edits per batch size per round.")
@click.option("--batch-sizes", default="1,4", show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: the Ray backend against the local one, at the first of --batch-sizes.")
@click.option("--workers", default=2, show_default=True, help="Ray actors (--backend ray).")
def main(model, size, steps, edits, batch_sizes, rounds, device, backend, workers):
    if backend == "ray":
        compare_backends(model, EditSettings(size=size, steps=steps), device, edits,
                         int(batch_sizes.split(",")[0]), workers, rounds)
        return
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
