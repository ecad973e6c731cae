"""``ale-edit studio``: the local web page to detect, refine and save masks, then edit and compare methods.

Gradio is an optional extra (``pip install -e '.[studio]'``), imported only when the studio starts.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import EditInputError
from ..models import DEFAULT_DIFFUSION_MODEL, TINY, grounding_model_names
from ..preflight import check_models, diffusion_need, grounding_needs


@click.command("studio")
@click.option("--bench", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="An ALE-Bench folder (images/, masks/, prompts/) to pick images and official edits from.")
@click.option("--masks-dir", type=click.Path(path_type=Path, dir_okay=True, file_okay=False),
              default=Path("masks/refined"), show_default=True,
              help="Where Save masks writes <image>/<phrase>_mask.png (masks.manual_dir of the pipeline).")
@click.option("--model", default=DEFAULT_DIFFUSION_MODEL, show_default=True,
              help="Diffusion model: hub id, local diffusers folder, or 'tiny' (random weights, offline, every "
                   "model tiny).")
@click.option("--detector", default=None, help="Grounding DINO id or folder [default: as ale-edit edit].")
@click.option("--segmenter", default=None, help="SAM id or folder [default: as ale-edit edit].")
@click.option("--device", default="auto", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to serve on; the default keeps the page on this machine.")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535))
def studio(bench, masks_dir, model, detector, segmenter, device, host, port):
    """Serve the studio page: pick an image, detect and refine masks, save them for the pipeline, edit, compare."""
    from ..studio import Studio, StudioDependencyError, require_gradio, serve

    try:
        require_gradio()
        names = grounding_model_names("none", detector, segmenter, tiny=model == TINY)
        check_models([diffusion_need(model), *grounding_needs(names["detector"], names["segmenter"])])
        session = Studio(bench, masks_dir, model, detector=detector, segmenter=segmenter, device=device)
    except (StudioDependencyError, EditInputError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"studio: http://{host}:{port} (model {model}, masks to {masks_dir}); Ctrl-C stops it")
    serve(session, host, port)
