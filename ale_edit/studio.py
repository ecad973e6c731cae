"""The studio: a local web page to detect, refine and save masks, then edit and compare methods (issue 13).

Plain functions and a ``Studio`` (the models, loaded once per process, and the folders it was started with) hold
everything the page does, so they are tested without a browser; ``build_app`` lays the Gradio page thinly on top.
Gradio is imported only there (``require_gradio``): the library and the pipeline never need it.

What the page writes is exactly what the pipeline reads: masks go to ``<masks dir>/<image>/<phrase>_mask.png``
(``commands.edit.mask_file_name``), binary 0/255 at the image's own size, the files the ``masks`` stage imports
with ``masks.source: manual`` or ``manual-then-auto`` and ``masks.manual_dir: <masks dir>``.
"""

from __future__ import annotations

import functools
import os
import shlex
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import click
import numpy as np
from PIL import Image

from .bench.figures import mask_overlay
from .bench.dataset import PromptInstance, image_path, list_images, load_prompt_instances, mask_phrase
from .commands.edit import build_settings, mask_file_name, parse_assignment
from .editor import MAX_OBJECTS, EditRequest, EditResult, Editor, validate_request
from .errors import EditInputError
from .grounding import BOX_THRESHOLD, TEXT_THRESHOLD
from .images import working_image
from .io import load_image, resize_mask, save_mask
from .masks import dilate_mask, dilation_radius
from .methods import method_names
from .models import DEFAULT_DIFFUSION_MODEL, TINY
from .settings import EditSettings

STUDIO_EXTRA = "pip install -e '.[studio]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
PAIR_OPTION = "-e/--edit"  # pairs are read as the CLI reads its -e option, so errors read the same
# A mask layer on the page: painted pixels in this colour, half transparent so the object shows through. Every
# image the page exchanges is PNG (Gradio's default, WebP, is lossy: it would blur mask layers and results).
MASK_RGBA = (255, 0, 255, 160)
MASK_BRUSH = "rgba(255, 0, 255, 0.63)"
OVERLAY_COLOURS = ((255, 0, 255), (0, 200, 255), (255, 200, 0))  # per phrase; the first is the brush's


class StudioDependencyError(ImportError):
    """The studio's optional dependencies (gradio) are not installed."""


def require_gradio():
    """The ``gradio`` module, or ``StudioDependencyError`` saying how to install it."""
    try:
        import gradio
    except ImportError as exc:
        raise StudioDependencyError(
            f"the studio needs gradio, which is not installed ({exc}); install the studio extra: {STUDIO_EXTRA}"
        ) from exc
    return gradio


# ----------------------------------------------------------------------------------------------------------------
# Input


def parse_pairs(text: str, image: Image.Image | None = None) -> list[tuple[str, str]]:
    """The edit's (source, target) pairs from one ``SOURCE=TARGET`` (or ``source -> target``) per line, as
    ``ale-edit edit -e`` takes them.

    A malformed line gives the CLI's own message (``parse_assignment``); 0 or more than 3 pairs and duplicate
    sources give the editor's (``validate_request``). Both as ``EditInputError``.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    # The page also takes the paper's notation, "source -> target"; everything else is read as the CLI reads -e.
    lines = [line.replace("->", "=", 1) if "->" in line and "=" not in line else line for line in lines]
    try:
        pairs = [parse_assignment(line, PAIR_OPTION) for line in lines]
    except click.BadParameter as exc:
        raise EditInputError(exc.format_message()) from exc
    validate_request(EditRequest(image if image is not None else Image.new("RGB", (1, 1)), pairs))
    return pairs


def parse_schedule(text) -> float | None:
    """The Q,K injection schedule typed on the page: blank for the edit type's own, else a number (checked to lie in
    [0, 1] by the editor, with its message)."""
    if text is None or not str(text).strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise EditInputError(f"schedule {text!r} is not a number; give a fraction in [0, 1] or leave it blank "
                             f"for the edit type's") from None


def whole_number(value, name: str) -> int:
    """A whole number typed on the page (steps, size, seed); a blank or fractional one is named."""
    if value is None or value == "" or float(value) != int(float(value)):
        raise EditInputError(f"{name} must be a whole number, got {value!r}")
    return int(float(value))


def format_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    """Pairs as ``parse_pairs`` reads them back."""
    return "\n".join(f"{source}={target}" for source, target in pairs)


def check_image_name(name: str) -> str:
    """An image name usable as one folder's name: the ``masks`` stage looks up ``<manual_dir>/<image>`` by the
    name the benchmark gives the image (its file stem, e.g. ``artificial_img05``)."""
    name = (name or "").strip()
    if not name:
        raise EditInputError("the image needs a name: the masks are saved under <masks dir>/<image name>/")
    if any(c in name for c in "/\\\0") or name.startswith("."):
        raise EditInputError(f"image name {name!r} cannot be one folder's name (it holds '/', '\\' or a NUL, "
                             f"or starts with '.'): use the image's file name without its extension")
    return name


def instance_label(instance: PromptInstance) -> str:
    """How the page lists an official instance: ``"2 objects, color, #0: cup=golden cup; book=red book"``."""
    edits = "; ".join(f"{s}={t}" for s, t in instance.edits)
    return f"{instance.n_objects} object{'s' if instance.n_objects > 1 else ''}, {instance.edit_type}, " \
           f"#{instance.index}: {edits}"


# ----------------------------------------------------------------------------------------------------------------
# Masks


@dataclass
class DetectedMasks:
    """Grounded-SAM's result for each phrase at the image's own size: ``masks`` the object (what is refined and
    saved; the editor dilates it), ``dilated`` as the editor will use it; ``None`` where the detector missed."""

    masks: dict[str, np.ndarray | None]
    dilated: dict[str, np.ndarray | None]

    @property
    def missed(self) -> list[str]:
        return [phrase for phrase, mask in self.masks.items() if mask is None]

    def status(self) -> str:
        found = [p for p, m in self.masks.items() if m is not None]
        parts = [f"found: {', '.join(found)}"] if found else []
        if self.missed:
            parts.append(f"NOT FOUND by the detector: {', '.join(self.missed)} (paint its mask, or upload one; "
                         f"unmasked, it is edited without masking and without background blending)")
        return "; ".join(parts)


def editor_dilation(mask: np.ndarray, settings: EditSettings) -> np.ndarray:
    """A working-size mask dilated as ``Editor.resolve_masks`` dilates it (``settings.dilation`` of ``size``)."""
    return dilate_mask(mask, dilation_radius(settings.dilation, settings.size))


def detect_phrase_masks(image: Image.Image, phrases: Sequence[str], detector, settings: EditSettings) -> DetectedMasks:
    """Masks per phrase as the editor finds them: the detector runs on the working image (``settings.size``), each
    mask is dilated there as the editor dilates it, and both are brought back to the image's size (nearest)."""
    work = working_image(image, settings.size)
    found = detector(work, list(phrases))
    masks, dilated = {}, {}
    for phrase in phrases:
        mask = found.get(phrase)
        masks[phrase] = None if mask is None else resize_mask(mask, image.size)
        dilated[phrase] = None if mask is None else resize_mask(editor_dilation(mask, settings), image.size)
    return DetectedMasks(masks, dilated)


def mask_layer(mask: np.ndarray | None, size: tuple[int, int]) -> Image.Image:
    """A transparent RGBA layer of ``size`` with the mask painted in the page's mask colour."""
    layer = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    if mask is not None:
        layer[resize_mask(mask, size)] = MASK_RGBA
    return Image.fromarray(layer, "RGBA")


def mask_from_layers(layers: Sequence[Image.Image | np.ndarray | None], size: tuple[int, int]) -> np.ndarray:
    """The mask painted on the editor's layers: every pixel any layer covers (alpha > 0; the eraser clears alpha),
    at ``size`` (nearest)."""
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers:
        if layer is None:
            continue
        rgba = np.asarray(Image.fromarray(layer) if isinstance(layer, np.ndarray) else layer.convert("RGBA"))
        if rgba.ndim == 3 and rgba.shape[2] == 4:
            mask |= resize_mask(rgba[..., 3] > 0, size)
        else:  # a layer without alpha: its bright pixels, as a mask file is read
            mask |= resize_mask(np.asarray(Image.fromarray(rgba).convert("L")) >= 128, size)
    return mask


def overlay(image: Image.Image, masks: Mapping[str, np.ndarray | None]) -> Image.Image:
    """The image with each phrase's mask tinted in its own colour (for the side-by-side view)."""
    return mask_overlay(image, list(masks.values()), alpha=0.55, colors=OVERLAY_COLOURS)


def save_masks(masks_dir: str | os.PathLike, image_name: str, image_size: tuple[int, int],
               masks: Mapping[str, np.ndarray | None]) -> dict[str, Path]:
    """Write each phrase's mask to ``<masks_dir>/<image_name>/<phrase>_mask.png``: 8-bit L, 0 or 255, of
    ``image_size``, the file ``masks.source: manual`` imports. An empty or missing mask is an ``EditInputError``
    naming the phrase (the stage would refuse it); a phrase whose file name the stage cannot read back as that
    phrase (it holds ``_`` or a path separator) is refused before anything is written."""
    folder = Path(masks_dir) / check_image_name(image_name)
    for phrase, mask in masks.items():
        name = mask_file_name(phrase)
        if mask_phrase(name) != phrase:
            raise EditInputError(f"phrase {phrase!r} is saved as {name!r}, which the masks stage reads as the "
                                 f"phrase {mask_phrase(name)!r}: rename the phrase (no '_', '/', '\\')")
        if mask is None or not np.asarray(mask).any():
            raise EditInputError(f"the mask for {phrase!r} is empty: paint it (or upload one) before saving")
        if (mask.shape[1], mask.shape[0]) != tuple(image_size):
            raise EditInputError(f"the mask for {phrase!r} is {mask.shape[1]}x{mask.shape[0]}, the image is "
                                 f"{image_size[0]}x{image_size[1]}")
    written = {}
    for phrase, mask in masks.items():
        path = folder / mask_file_name(phrase)
        save_mask(path, mask)
        written[phrase] = path
    return written


def dvc_command(masks_dir: str | os.PathLike) -> str:
    """The experiment that edits the benchmark with these masks (Grounded-SAM for phrases without one). A relative
    folder is kept as given when the studio runs in the project (its dvc.yaml here), where the masks stage reads
    it from; elsewhere it is made absolute, or the stage would look for it in the wrong place."""
    path = Path(masks_dir)
    if not path.is_absolute() and not Path("dvc.yaml").is_file():
        path = path.resolve()
    return f"dvc exp run -S masks.source=manual-then-auto -S masks.manual_dir={shlex.quote(str(path))}"


# ----------------------------------------------------------------------------------------------------------------
# Settings and the edit


def edit_settings(method: str, *, steps: int | None = None, size: int | None = None,
                  ale_switches: Mapping[str, bool] | None = None) -> EditSettings:
    """The settings as ``ale-edit edit`` builds them (``build_settings``): ALE's switches (ore, rgb_cam, bb) only
    for ale, where they are options of the method. Bad values are ``EditInputError`` with the CLI's message."""
    values = {"steps": steps, "size": size}
    if method == "ale":
        values.update(ale_switches or {})
    try:
        return build_settings(method, values, ())
    except click.UsageError as exc:
        raise EditInputError(exc.format_message()) from exc


class Studio:
    """What the page works with: the benchmark, the masks folder and the models, each loaded once per process
    (the first time it is needed) and shared by every request."""

    def __init__(self, bench: str | os.PathLike | None = None, masks_dir: str | os.PathLike = "masks/refined",
                 model: str = DEFAULT_DIFFUSION_MODEL, *, detector: str | None = None, segmenter: str | None = None,
                 device: str = "auto", box_threshold: float = BOX_THRESHOLD, text_threshold: float = TEXT_THRESHOLD):
        from .commands.edit import DEFAULT_DETECTOR, DEFAULT_SEGMENTER

        self.bench = Path(bench) if bench else None
        if self.bench is not None:
            list_images(self.bench)  # a folder that is not ALE-Bench is named now, not on the page
        self.masks_dir = Path(masks_dir)
        self.model = model
        self.detector_name = detector or (TINY if model == TINY else DEFAULT_DETECTOR)
        self.segmenter_name = segmenter or (TINY if model == TINY else DEFAULT_SEGMENTER)
        self.device = device
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self._lock = threading.Lock()  # one model load, and one edit on the shared UNet, at a time

    # -- the benchmark ----------------------------------------------------------------------------------------
    def images(self) -> list[str]:
        return list_images(self.bench) if self.bench is not None else []

    def load_bench_image(self, name: str) -> Image.Image:
        if self.bench is None:
            raise EditInputError("the studio was started without --bench: upload an image")
        if name not in self.images():
            raise EditInputError(f"{name!r} is not an image of {self.bench}")
        return load_image(image_path(self.bench, name))

    def instances(self, name: str) -> list[PromptInstance]:
        """The benchmark's official edits of image ``name`` (none without --bench or a prompts folder)."""
        if self.bench is None or not (self.bench / "prompts").is_dir():
            return []
        return load_prompt_instances(self.bench, images=name)

    # -- models, once ----------------------------------------------------------------------------------------
    @functools.cached_property
    def grounding(self):
        from .grounding import load_grounding_models

        with self._lock:
            return load_grounding_models(self.detector_name, self.segmenter_name, device=self.device)

    @functools.cached_property
    def diffusion(self):
        from .models import load_diffusion_models

        with self._lock:
            return load_diffusion_models(self.model, self.device)

    def detector(self) -> Callable:
        from .grounding import detect_masks

        return functools.partial(detect_masks, models=self.grounding, box_threshold=self.box_threshold,
                                 text_threshold=self.text_threshold)

    # -- the page's actions -----------------------------------------------------------------------------------
    def detect(self, image: Image.Image, pairs_text: str, settings: EditSettings) -> DetectedMasks:
        pairs = parse_pairs(pairs_text, image)
        return detect_phrase_masks(image, [s for s, _ in pairs], self.detector(), settings)

    def edit(self, image: Image.Image, pairs_text: str, masks: Mapping[str, np.ndarray | None],
             settings: EditSettings, *, edit_type: str | None = None, schedule: float | None = None,
             seed: int = 42) -> EditResult:
        """One edit as ``ale-edit edit`` runs it; phrases without a (non-empty) mask are detected by Grounded-SAM
        for methods that use masks."""
        pairs = parse_pairs(pairs_text, image)
        given = {p: m for p, m in masks.items() if m is not None and np.asarray(m).any() and p in dict(pairs)}
        request = EditRequest(image, pairs, given, edit_type=edit_type or None, schedule=schedule, seed=seed)
        validate_request(request)
        editor = Editor(self.diffusion, settings, progress=True)
        if editor.method.uses_masks and any(p not in given for p, _ in pairs):
            editor.detector = self.detector()
        with self._lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = editor.edit(request)
        result.record["warnings"] = list(dict.fromkeys(
            result.record["warnings"] + [str(w.message) for w in caught]))
        return result

    def compare(self, image: Image.Image, pairs_text: str, masks: Mapping[str, np.ndarray | None], *,
                steps: int | None, size: int | None, ale_switches: Mapping[str, bool], edit_type: str | None = None,
                schedule: float | None = None, seed: int = 42, methods: Sequence[str] | None = None,
                on_method: Callable[[int, str], None] | None = None) -> list[tuple[str, EditResult]]:
        """Every method (or ``methods``) on the same image, pairs, masks and seed, in the registry's order."""
        results = []
        for k, method in enumerate(methods or method_names()):
            if on_method is not None:
                on_method(k, method)
            settings = edit_settings(method, steps=steps, size=size, ale_switches=ale_switches)
            results.append((method, self.edit(image, pairs_text, masks, settings, edit_type=edit_type,
                                              schedule=schedule, seed=seed)))
        return results


# ----------------------------------------------------------------------------------------------------------------
# The page (Gradio), thin: each handler reads the widgets, calls the functions above and shows what they return.

MAX_PAIRS = MAX_OBJECTS  # one mask editor per possible pair
NO_TYPE = "(none: use the schedule)"


def _editor_value(image: Image.Image, mask: np.ndarray | None) -> dict:
    return {"background": image, "layers": [mask_layer(mask, image.size)], "composite": None}


def _editor_mask(value, size: tuple[int, int]) -> np.ndarray | None:
    """The mask painted in one mask editor, or ``None`` when nothing is painted (the phrase is then detected)."""
    if not value or not value.get("layers"):
        return None
    mask = mask_from_layers(value["layers"], size)
    return mask if mask.any() else None


def build_app(studio: Studio):
    """The studio's Gradio Blocks page over ``studio``."""
    gr = require_gradio()
    from .edit_types import EDIT_TYPES
    from .io import load_mask

    def page_errors(handler):
        """Bad input shown on the page as the error the CLI gives for it (``gr.Error``)."""
        @functools.wraps(handler)
        def run(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except EditInputError as exc:
                raise gr.Error(str(exc)) from exc
        return run

    def source_image(path) -> Image.Image:
        if not path:
            raise EditInputError("no image: pick a benchmark image or upload one")
        return load_image(path)

    def settings_of(method, steps, size, ore, rgb_cam, bb):
        return edit_settings(method, steps=whole_number(steps, "steps"), size=whole_number(size, "size"),
                             ale_switches={"ore": bool(ore), "rgb_cam": bool(rgb_cam), "bb": bool(bb)})

    def refined_masks(image, pairs_text, editor_values):
        pairs = parse_pairs(pairs_text, image)
        return {source: _editor_mask(value, image.size) for (source, _), value in zip(pairs, editor_values)}

    def edit_kind(edit_type, schedule):
        return None if edit_type in (None, "", NO_TYPE) else edit_type, parse_schedule(schedule)

    @page_errors
    def pick_bench_image(name):
        if not name:
            return gr.update(), gr.update(), gr.update(choices=[], value=None)
        studio.load_bench_image(name)  # names a file that does not read as an image
        labels = [instance_label(i) for i in studio.instances(name)]
        return str(image_path(studio.bench, name)), name, gr.update(choices=labels, value=None)

    def uploaded_image(path):
        return Path(path).stem if path else gr.update()

    def forget_masks():
        # Another image: the detection and the mask editors belonged to the one before.
        return ("", None, *[gr.update(value=None, visible=False)] * MAX_PAIRS)

    @page_errors
    def pick_instance(name, label):
        for instance in studio.instances(name) if name else []:
            if instance_label(instance) == label:
                return format_pairs(instance.edits), instance.edit_type
        return gr.update(), gr.update()

    @page_errors
    def detect(path, pairs_text, steps, size):
        image = source_image(path)
        settings = edit_settings("ale", steps=whole_number(steps, "steps"), size=whole_number(size, "size"))
        pairs = parse_pairs(pairs_text, image)
        found = studio.detect(image, pairs_text, settings)
        editors = [gr.update(value=_editor_value(image, found.masks[source]), visible=True,
                             label=f"mask of {source!r}: brush adds, eraser removes")
                   for source, _ in pairs]
        editors += [gr.update(value=None, visible=False)] * (MAX_PAIRS - len(pairs))
        return (found.status(), overlay(image, found.dilated), *editors)

    def upload_mask(slot):
        @page_errors
        def load(path, mask_path, pairs_text):
            image = source_image(path)
            pairs = parse_pairs(pairs_text, image)
            if slot >= len(pairs):
                raise EditInputError(f"there is no pair {slot + 1} to upload a mask for")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a mask of another size is resized (nearest), as the CLI does
                mask = load_mask(mask_path, image.size, name=pairs[slot][0])
            return gr.update(value=_editor_value(image, mask), visible=True)
        return load

    @page_errors
    def save(path, name, pairs_text, *editor_values):
        image = source_image(path)
        written = save_masks(studio.masks_dir, name, image.size, refined_masks(image, pairs_text, editor_values))
        files = "\n".join(f"- `{p}`" for p in written.values())
        return (f"Saved {len(written)} mask(s):\n{files}\n\nThe pipeline uses them (Grounded-SAM for the other "
                f"phrases) with:\n\n```\n{dvc_command(studio.masks_dir)}\n```")

    @page_errors
    def run_edit(path, pairs_text, method, edit_type, schedule, steps, size, seed, ore, rgb_cam, bb,
                 *editor_values, progress=gr.Progress(track_tqdm=True)):
        image = source_image(path)
        masks = refined_masks(image, pairs_text, editor_values)
        kind, schedule = edit_kind(edit_type, schedule)
        progress(0, desc=f"editing with {method}")
        result = studio.edit(image, pairs_text, masks, settings_of(method, steps, size, ore, rgb_cam, bb),
                             edit_type=kind, schedule=schedule, seed=whole_number(seed, "seed"))
        work = working_image(image, int(size))
        return work, overlay(work, result.masks), result.image, result.record

    @page_errors
    def run_compare(path, pairs_text, edit_type, schedule, steps, size, seed, ore, rgb_cam, bb,
                    *editor_values, progress=gr.Progress(track_tqdm=True)):
        image = source_image(path)
        masks = refined_masks(image, pairs_text, editor_values)
        kind, schedule = edit_kind(edit_type, schedule)
        methods = method_names()
        results = studio.compare(
            image, pairs_text, masks, steps=whole_number(steps, "steps"), size=whole_number(size, "size"),
            ale_switches={"ore": bool(ore), "rgb_cam": bool(rgb_cam), "bb": bool(bb)}, edit_type=kind,
            schedule=schedule, seed=whole_number(seed, "seed"),
            on_method=lambda k, m: progress(k / len(methods), desc=f"{m} ({k + 1}/{len(methods)})"))
        gallery = [(working_image(image, int(size)), "source")] + [(r.image, m) for m, r in results]
        return gallery, {m: r.record for m, r in results}

    with gr.Blocks(title="ALE-Edit studio") as app:
        gr.Markdown("# ALE-Edit studio\nPick or upload an image, name 1-3 edits, **Detect** their masks, refine "
                    "them, **Save masks** for the pipeline, then **Edit** or **Compare** every method. "
                    f"Model: `{studio.model}`; masks folder: `{studio.masks_dir}`.")
        with gr.Row():
            with gr.Column():
                bench_image = gr.Dropdown(choices=studio.images(), value=None, label="Benchmark image",
                                          visible=studio.bench is not None)
                image = gr.Image(type="filepath", label="Image (or upload one)", sources=["upload"], height=320)
                image_name = gr.Textbox(label="Image name (the masks folder under the masks dir)")
            with gr.Column():
                instance = gr.Dropdown(choices=[], label="Official edits of this image", visible=studio.bench
                                       is not None)
                pairs = gr.Textbox(label="Edits, one SOURCE=TARGET (or source -> target) per line (1-3), as "
                                         "`ale-edit edit -e` takes them",
                                   lines=3, placeholder="cup=golden cup\nbook=red book")
                with gr.Row():
                    method = gr.Dropdown(list(method_names()), value="ale", label="Method")
                    edit_type = gr.Dropdown([NO_TYPE, *EDIT_TYPES], value=NO_TYPE, label="Edit type")
                    # A textbox, not a number field: blank must mean "from the edit type", and a number field sends 0.
                    schedule = gr.Textbox(value="", label="Schedule (0-1; blank: from the edit type)")
                with gr.Row():
                    steps = gr.Number(value=EditSettings().steps, precision=0, minimum=1, label="Steps")
                    size = gr.Number(value=EditSettings().size, precision=0, minimum=64, step=64,
                                     label="Working size (multiple of 64)")
                    seed = gr.Number(value=42, precision=0, minimum=0, label="Seed")
                with gr.Row():
                    ore = gr.Checkbox(value=True, label="ORE (ale)")
                    rgb_cam = gr.Checkbox(value=True, label="RGB-CAM (ale)")
                    bb = gr.Checkbox(value=True, label="Background blending (ale)")
        detect_button = gr.Button("Detect", variant="primary")
        status = gr.Textbox(label="Detection", interactive=False)
        with gr.Row():
            detected = gr.Image(type="pil", format="png", label="Detected masks, dilated as the editor uses them",
                                interactive=False, height=320)
            editors, mask_uploads = [], []
            for slot in range(MAX_PAIRS):
                with gr.Column():
                    editors.append(gr.ImageEditor(
                        type="pil", format="png", label=f"mask {slot + 1}", visible=False, height=320, sources=(),
                        brush=gr.Brush(colors=[MASK_BRUSH], default_color=MASK_BRUSH, color_mode="fixed"),
                        eraser=gr.Eraser()))
                    mask_uploads.append(gr.File(label=f"or upload mask {slot + 1}", file_types=["image"],
                                                type="filepath"))
        with gr.Row():
            save_button = gr.Button("Save masks")
            edit_button = gr.Button("Edit", variant="primary")
            compare_button = gr.Button("Compare every method")
        saved = gr.Markdown()
        with gr.Row():
            shown_source = gr.Image(type="pil", format="png", label="Source (working size)", interactive=False)
            shown_masks = gr.Image(type="pil", format="png", label="Masks used (dilated)", interactive=False)
            shown_result = gr.Image(type="pil", format="png", label="Result", interactive=False)
        record = gr.JSON(label="Edit record")
        gallery = gr.Gallery(label="Every method on the same input", format="png", columns=len(method_names()) + 1,
                             height=260)
        records = gr.JSON(label="Records per method")

        bench_image.change(pick_bench_image, bench_image, [image, image_name, instance], api_name="pick_image")
        image.upload(uploaded_image, image, image_name, api_name=False)
        image.change(forget_masks, None, [status, detected, *editors], api_name=False)
        instance.change(pick_instance, [bench_image, instance], [pairs, edit_type], api_name="pick_instance")
        detect_button.click(detect, [image, pairs, steps, size], [status, detected, *editors], api_name="detect")
        for slot, upload in enumerate(mask_uploads):
            upload.upload(upload_mask(slot), [image, upload, pairs], editors[slot], api_name=f"upload_mask_{slot + 1}")
        save_button.click(save, [image, image_name, pairs, *editors], saved, api_name="save")
        common = [edit_type, schedule, steps, size, seed, ore, rgb_cam, bb, *editors]
        edit_button.click(run_edit, [image, pairs, method, *common],
                          [shown_source, shown_masks, shown_result, record], api_name="edit")
        compare_button.click(run_compare, [image, pairs, *common], [gallery, records], api_name="compare")
    return app


def serve(studio: Studio, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, block: bool = True):
    """Start the page at ``http://host:port``; ``block=False`` returns the running app (tests close it)."""
    app = build_app(studio)
    allowed = [str(studio.bench.resolve())] if studio.bench is not None else []
    app.queue().launch(server_name=host, server_port=port, allowed_paths=allowed, prevent_thread_lock=not block,
                       show_error=True, inbrowser=False)
    return app
