"""The studio: a local web page to detect, refine and save masks, then edit and compare methods.

Plain functions and a ``Studio`` (the models, loaded once per process, and the folders it was started with) hold
everything the page does, so they are tested without a browser; ``build_app`` lays the Gradio page thinly on top.
Gradio is imported only there (``require_gradio``): the library and the pipeline never need it.

What the page writes is exactly what the pipeline reads: masks go to ``<masks dir>/<image>/<phrase>_mask.png``
(``pairs.mask_file_name``), binary 0/255 at the image's own size, the files the ``masks`` stage imports
with ``masks.source: manual`` or ``manual-then-auto`` and ``masks.manual_dir: <masks dir>``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import shlex
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from .bench.figures import mask_overlay
from .bench.dataset import PromptInstance, image_path, list_images, load_prompt_instances, mask_phrase
from .editor import MAX_OBJECTS, MAX_SEED, EditRequest, EditResult, Editor, validate_request
from .errors import EditInputError
from .grounding import BOX_THRESHOLD, TEXT_THRESHOLD
from .images import working_image
from .io import load_image, resize_mask, save_mask
from .masks import dilate_mask, dilation_radius
from .methods import method_class, method_names
from .models import DEFAULT_DIFFUSION_MODEL, TINY, grounding_model_names
from .options import SettingError, check_number, parse_number, settable_fields, value_type
from .pairs import mask_file_name, parse_pair
from .settings import EditSettings

STUDIO_EXTRA = "pip install -e '.[studio]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Each phrase's colour, the same in its mask editor (layer and brush) and in the overlay of detected masks. A mask
# layer is painted half transparent (MASK_ALPHA) so the object shows through. Every image the page exchanges is
# PNG (Gradio's default, WebP, is lossy: it would blur mask layers and results).
PHRASE_COLOURS = ((255, 0, 255), (0, 200, 255), (255, 200, 0))
MASK_ALPHA = 160


class EditCancelled(Exception):
    """The page's Cancel stopped an edit between two sampler steps."""


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
    """The edit's (source, target) pairs from one ``SOURCE=TARGET`` or ``source -> target`` per line, as
    ``ale-edit edit -e`` takes them.

    A malformed line gives the CLI's own message (``pairs.parse_pair``); 0 or more than 3 pairs and duplicate
    sources give the editor's (``validate_request``). Both are ``EditInputError``.
    """
    pairs = [parse_pair(line) for line in (text or "").splitlines() if line.strip()]
    validate_request(EditRequest(image if image is not None else Image.new("RGB", (1, 1)), pairs))
    return pairs


def parse_schedule(text) -> float | None:
    """The Q,K injection schedule typed on the page: blank for the edit type's own, else a number (checked to lie in
    [0, 1] by the editor, with its message)."""
    if text is None or not str(text).strip():
        return None
    try:
        number = float(text)
    except ValueError:
        raise EditInputError(f"schedule {text!r} is not a number; give a fraction in [0, 1] or leave it blank "
                             f"for the edit type's") from None
    return in_range(number, "schedule", 0, 1)


def in_range(number, name: str, minimum=None, maximum=None):
    """``number`` under the settings' one numeric rule (``options.check_number``: finite, within the bounds)."""
    try:
        return check_number(number, name, minimum, maximum)
    except SettingError as exc:
        raise EditInputError(str(exc)) from None


def whole_number(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number typed on the page (steps, size, seed); a blank, fractional or non-finite one is named."""
    try:
        number = parse_number(value, name, int)
    except SettingError:
        raise EditInputError(f"{name} must be a whole number, got {value!r}") from None
    return in_range(number, name, minimum, maximum)


def typed_number(text, kind: type, name: str) -> int | float | None:
    """A number typed in a method option's box: blank for the option's default (``None``), else ``kind``'s value,
    or an ``EditInputError`` naming the option."""
    if text is None or not str(text).strip():
        return None
    try:
        number = float(text)
    except ValueError:
        raise EditInputError(f"{name} must be a number, got {text!r}") from None
    if kind is int:
        return whole_number(number, name)
    return number


def read_image(path) -> Image.Image:
    """The picture at ``path`` (an upload or a benchmark file); a file that is not one is named by its own name,
    not by the server's temporary path."""
    if not path:
        raise EditInputError("no image: pick a benchmark image or upload one")
    try:
        return load_image(path)
    except EditInputError:
        raise EditInputError(f"{Path(path).name} is not a picture the studio can read (corrupt, or another kind "
                             f"of file): upload a PNG, JPEG or WebP image") from None


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


def phrase_colour(slot: int) -> tuple[int, int, int]:
    return PHRASE_COLOURS[slot % len(PHRASE_COLOURS)]


def brush_colour(slot: int) -> str:
    """The CSS colour the mask editor of pair ``slot`` paints with: its phrase's colour at the layer's alpha."""
    r, g, b = phrase_colour(slot)
    return f"rgba({r}, {g}, {b}, {MASK_ALPHA / 255:.2f})"


def mask_layer(mask: np.ndarray | None, size: tuple[int, int], slot: int = 0) -> Image.Image:
    """A transparent RGBA layer of ``size`` with the mask painted in pair ``slot``'s colour."""
    layer = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    if mask is not None:
        layer[resize_mask(mask, size)] = (*phrase_colour(slot), MASK_ALPHA)
    return Image.fromarray(layer, "RGBA")


def mask_from_layers(layers: Sequence[Image.Image | np.ndarray | None], size: tuple[int, int]) -> np.ndarray:
    """The mask painted on the editor's layers: every pixel any layer covers (alpha > 0; the eraser clears alpha).

    A layer is the image's own size, pixel for pixel: one of another size (a cleared or resized canvas) is an
    ``EditInputError``, never resized, so a saved mask is exactly what was painted where it was painted."""
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers:
        if layer is None:
            continue
        rgba = np.asarray(Image.fromarray(layer) if isinstance(layer, np.ndarray) else layer.convert("RGBA"))
        if rgba.shape[:2] != mask.shape:
            raise EditInputError(f"a mask layer is {rgba.shape[1]}x{rgba.shape[0]}, the image {size[0]}x{size[1]}: "
                                 f"the editor's canvas was cleared; Detect again (or upload the mask)")
        if rgba.ndim == 3 and rgba.shape[2] == 4:
            mask |= rgba[..., 3] > 0
        else:  # a layer without alpha: its bright pixels, as a mask file is read
            mask |= np.asarray(Image.fromarray(rgba).convert("L")) >= 128
    return mask


def overlay(image: Image.Image, masks: Mapping[str, np.ndarray | None]) -> Image.Image:
    """The image with each phrase's mask tinted in its own colour (for the side-by-side view)."""
    return mask_overlay(image, list(masks.values()), alpha=0.55, colors=PHRASE_COLOURS)


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


def option_fields(method: str) -> list[dataclasses.Field]:
    """The options of ``method`` a person sets (its ``Options`` fields declared with ``options.option``, those the
    command line offers too), in declaration order."""
    return settable_fields(method_class(method).Options)


def option_value(method: str, f: dataclasses.Field, raw) -> Any:
    """One option's value as typed on the page: a box's text read as the field's type (blank: the default, None);
    checkboxes and choices come typed."""
    kind = value_type(method_class(method).Options, f)
    if kind in (int, float) and not f.metadata.get("choices"):
        return typed_number(raw, kind, f"{method}.{f.name}")
    if kind is str and raw is not None and not f.metadata.get("choices"):
        return str(raw)
    return raw


def given_options(method: str, raw_values: Sequence) -> dict[str, Any]:
    """The options of ``method`` set to something other than their default (so a default left alone stays the
    compat profile's, as on the command line), from the page's values in ``option_fields`` order."""
    given = {}
    for f, raw in zip(option_fields(method), raw_values):
        value = option_value(method, f, raw)
        if value is not None and value != f.metadata["default"]:
            given[f.name] = value
    return given


def edit_settings(method: str, *, steps: int | None = None, size: int | None = None,
                  options: Mapping[str, Any] | None = None) -> EditSettings:
    """The settings of one edit: ``EditSettings`` with the method's ``options`` (its own fields only); a bad value
    is an ``EditInputError`` with the settings' message (``edit.size must be a multiple of 64``)."""
    common = {k: v for k, v in (("steps", steps), ("size", size)) if v is not None}
    try:
        return EditSettings(method=method, options=dict(options or {}), **common)
    except SettingError as exc:
        raise EditInputError(str(exc)) from exc


class Studio:
    """What the page works with: the benchmark, the masks folder and the models, each loaded once per process
    (the first time it is needed) and shared by every request."""

    def __init__(self, bench: str | os.PathLike | None = None, masks_dir: str | os.PathLike = "masks/refined",
                 model: str = DEFAULT_DIFFUSION_MODEL, *, detector: str | None = None, segmenter: str | None = None,
                 device: str = "auto", box_threshold: float = BOX_THRESHOLD, text_threshold: float = TEXT_THRESHOLD):
        self.bench = Path(bench) if bench else None
        if self.bench is not None:
            list_images(self.bench)  # a folder that is not ALE-Bench is named now, not on the page
        self.masks_dir = Path(masks_dir)
        self.model = model
        names = grounding_model_names("none", detector, segmenter, tiny=model == TINY)
        self.detector_name, self.segmenter_name = names["detector"], names["segmenter"]
        self.device = device
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self._lock = threading.Lock()  # one model load, and one edit on the shared UNet, at a time
        self.cancelled = threading.Event()  # set by the page's Cancel: the running edit stops at its next step

    def cancel(self) -> None:
        self.cancelled.set()

    # -- the benchmark ----------------------------------------------------------------------------------------
    def images(self) -> list[str]:
        return list_images(self.bench) if self.bench is not None else []

    def bench_image_path(self, name: str) -> Path:
        """The file of benchmark image ``name``, checked to be one of the benchmark's and to read as a picture."""
        if self.bench is None:
            raise EditInputError("the studio was started without --bench: upload an image")
        if name not in self.images():
            raise EditInputError(f"{name!r} is not an image of {self.bench}")
        path = image_path(self.bench, name)
        read_image(path)
        return path

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
                steps: int | None, size: int | None, options: Mapping[str, Mapping[str, Any]] | None = None,
                edit_type: str | None = None, schedule: float | None = None, seed: int = 42,
                methods: Sequence[str] | None = None,
                track: Callable[[Sequence[str]], Iterable[str]] = iter) -> list[tuple[str, EditResult]]:
        """Every method (or ``methods``, in their order) on the same image, pairs, masks and seed, each with its
        ``options[method]``; ``track`` wraps the loop over methods (the page's progress). Every method's settings
        are checked before the first edit runs."""
        methods = list(method_names() if methods is None else methods)
        settings = {m: edit_settings(m, steps=steps, size=size, options=(options or {}).get(m)) for m in methods}
        return [(method, self.edit(image, pairs_text, masks, settings[method], edit_type=edit_type,
                                   schedule=schedule, seed=seed)) for method in track(methods)]


# ----------------------------------------------------------------------------------------------------------------
# The page (Gradio), thin: each handler reads the widgets, calls the functions above and shows what they return.

MAX_PAIRS = MAX_OBJECTS  # one mask editor per possible pair
NO_TYPE = "(none: use the schedule)"
# The brush's and the eraser's radius in image pixels (the editor's own default, 25, hides small objects).
BRUSH_RADIUS = 12
# The mask editor's starting canvas, smaller than any image: Gradio's ImageEditor sizes a layer it is given to the
# larger of this canvas and the background, and centres it there (``add_layer_from_url``), so with its default
# 800x800 a mask on an image narrower or lower than 800 px was drawn (and saved) shifted by half the difference.
# The canvas then takes the background's size. Its crop and resize tools would move or rescale the layers against
# the image, so they are off.
EDITOR_CANVAS = (1, 1)


def page_errors(gr, handler):
    """Bad input shown on the page as the error the CLI gives for it (``gr.Error``)."""
    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except EditInputError as exc:
            raise gr.Error(str(exc)) from exc
    return run


def takes_progress(gr, studio: Studio, handler, n_inputs: int):
    """``handler(*values, progress=...)`` as Gradio calls it with ``n_inputs`` inputs and its progress tracker:
    Gradio hands the tracker only to a parameter it sees after the inputs in the signature, never through
    ``*args``, so the signature names them."""
    def call(*args):
        *values, progress = args
        studio.cancelled.clear()
        return handler(*values, progress=eta_progress(progress, studio.cancelled))
    call.__signature__ = inspect.Signature(
        [inspect.Parameter(f"input_{k}", inspect.Parameter.POSITIONAL_ONLY) for k in range(n_inputs)]
        + [inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             default=gr.Progress(track_tqdm=True))])
    return call


def time_left(done: float, total: float, elapsed: float) -> str:
    """``", about 12 s left"`` from the pace so far; empty before the first step or after the last."""
    if not done or not total or done >= total:
        return ""
    seconds = elapsed / done * (total - done)
    return f", about {seconds:.0f} s left" if seconds < 120 else f", about {seconds / 60:.0f} min left"


def eta_progress(progress, cancelled: threading.Event, clock=time.monotonic):
    """``progress`` whose tracked loops (the sampler's steps, Compare's edits) each say the time they have left
    (Gradio shows a loop's description and count but no estimate), and that stops the run at its next step once
    ``cancelled`` is set (Gradio's cancel only stops waiting for it). It hooks the tracker's report to the page."""
    forward = progress._progress_callback
    seen: dict[int, tuple[float, str]] = {}

    def callback():
        send = forward()
        if send is None:
            return None

        def report(loops):
            if cancelled.is_set():
                raise EditCancelled("cancelled on the page")
            now = clock()
            for loop in loops:
                start, desc = seen.setdefault(id(loop), (now, loop.desc or ""))
                loop.desc = desc + time_left(loop.index or 0, loop.length or 0, now - start)
            send(loops)
        return report

    progress._progress_callback = callback
    return progress


@dataclass
class MaskSlot:
    """One pair's mask widgets: its column (shown for a pair only), editor and mask upload."""

    column: Any
    editor: Any
    upload: Any


@dataclass
class Page:
    """The page's widgets, as the handlers read and update them."""

    bench_image: Any
    upload_image: Any
    image: Any
    image_name: Any
    instance: Any
    pairs: Any
    method: Any
    edit_type: Any
    schedule: Any
    steps: Any
    size: Any
    seed: Any
    option_groups: dict[str, Any]
    option_inputs: dict[str, list]
    masks_panel: Any
    detect: Any
    status: Any
    detected: Any
    slots: list[MaskSlot]
    save: Any
    saved: Any
    edit: Any
    compare: Any
    cancel: Any
    shown_source: Any
    shown_masks: Any
    shown_result: Any
    record: Any
    gallery: Any
    records: Any

    @property
    def editors(self) -> list:
        return [slot.editor for slot in self.slots]

    @property
    def options_flat(self) -> list:
        return [c for method in method_names() for c in self.option_inputs[method]]


def editor_value(image: Image.Image, mask: np.ndarray | None, slot: int) -> dict:
    return {"background": image, "layers": [mask_layer(mask, image.size, slot)], "composite": None}


def editor_mask(value, size: tuple[int, int]) -> np.ndarray | None:
    """The mask painted in one mask editor, or ``None`` when nothing is painted (the phrase is then detected)."""
    if not value or not value.get("layers"):
        return None
    mask = mask_from_layers(value["layers"], size)
    return mask if mask.any() else None


def refined_masks(image: Image.Image, pairs_text: str, editor_values: Sequence) -> dict[str, np.ndarray | None]:
    pairs = parse_pairs(pairs_text, image)
    return {source: editor_mask(value, image.size) for (source, _), value in zip(pairs, editor_values)}


def edit_kind(edit_type, schedule) -> tuple[str | None, float | None]:
    return None if edit_type in (None, "", NO_TYPE) else edit_type, parse_schedule(schedule)


def options_by_method(raw_flat: Sequence) -> dict[str, dict[str, Any]]:
    """Each method's options set on the page, from the values of every method's option widgets in order."""
    given, k = {}, 0
    for method in method_names():
        n = len(option_fields(method))
        given[method] = given_options(method, raw_flat[k:k + n])
        k += n
    return given


def method_choices() -> list[tuple[str, str]]:
    return [(f"{method_class(m).label} ({m})", m) for m in method_names()]


def default_method() -> str:
    return EditSettings().method


# -- layout ----------------------------------------------------------------------------------------------------


def option_widget(gr, method: str, f: dataclasses.Field):
    """The widget of one method option, from its declaration: a checkbox, a choice, or a box (blank: default)."""
    meta, kind = f.metadata, value_type(method_class(method).Options, f)
    default, label = meta["default"], f.name.replace("_", " ")
    common = dict(label=label, info=meta["help"], elem_id=f"option-{method}-{f.name}")
    if kind is bool:
        return gr.Checkbox(value=default, **common)
    if meta.get("choices"):
        return gr.Dropdown(list(meta["choices"]), value=default, **common)
    bounds = [f">= {meta['minimum']}" if meta.get("minimum") is not None else "",
              f"<= {meta['maximum']}" if meta.get("maximum") is not None else ""]
    limits = f" ({', '.join(b for b in bounds if b)})" if any(bounds) else ""
    return gr.Textbox(value="" if default is None else str(default), **{**common, "info": meta["help"] + limits})


def method_options(gr, method: str, visible: bool):
    """The group of ``method``'s options, shown while it is the chosen method."""
    with gr.Group(visible=visible) as group:
        gr.Markdown(f"**Options of {method_class(method).label}**")
        with gr.Row():
            widgets = [option_widget(gr, method, f) for f in option_fields(method)]
    return group, widgets


def image_column(gr, studio: Studio) -> dict:
    with gr.Column():
        bench_image = gr.Dropdown(choices=studio.images(), value=None, label="Benchmark image",
                                  visible=studio.bench is not None, elem_id="bench-image")
        upload_image = gr.File(label="Upload an image", file_types=["image"], type="filepath", height=90,
                               elem_id="upload-image")
        image = gr.Image(type="filepath", format="png", label="Image", interactive=False, height=320,
                         elem_id="image")
        image_name = gr.Textbox(label="Image name (its folder under the masks folder)", elem_id="image-name")
    return dict(bench_image=bench_image, upload_image=upload_image, image=image, image_name=image_name)


def edit_column(gr, studio: Studio) -> dict:
    from .edit_types import EDIT_TYPES

    with gr.Column():
        instance = gr.Dropdown(choices=[], label="Official edits of this image", visible=studio.bench is not None)
        pairs = gr.Textbox(label="Edits, one per line: SOURCE=TARGET or source -> target (1-3)", lines=3,
                           placeholder="cup=golden cup\nbook -> red book", elem_id="pairs")
        with gr.Row():
            method = gr.Dropdown(method_choices(), value=default_method(), label="Method", elem_id="method")
            edit_type = gr.Dropdown([NO_TYPE, *EDIT_TYPES], value=NO_TYPE, label="Edit type")
            # A textbox, not a number field: blank must mean "from the edit type", and a number field sends 0.
            schedule = gr.Textbox(value="", label="Schedule (0-1; blank: the edit type's)")
        with gr.Row():
            steps = gr.Number(value=EditSettings().steps, precision=0, minimum=1, label="Steps", elem_id="steps")
            size = gr.Number(value=EditSettings().size, precision=0, minimum=64, step=64,
                             label="Working size (multiple of 64)", elem_id="size")
            seed = gr.Number(value=42, precision=0, minimum=0, label="Seed", elem_id="seed")
        groups, inputs = {}, {}
        for name in method_names():
            groups[name], inputs[name] = method_options(gr, name, visible=name == default_method())
    return dict(instance=instance, pairs=pairs, method=method, edit_type=edit_type, schedule=schedule, steps=steps,
                size=size, seed=seed, option_groups=groups, option_inputs=inputs)


def mask_slot(gr, slot: int) -> MaskSlot:
    # A row of its own, as wide whether one pair or three: the editor's canvas keeps the width it is first shown at.
    with gr.Row(visible=False, elem_id=f"mask-slot-{slot + 1}") as column:
        editor = gr.ImageEditor(scale=3, 
            type="pil", format="png", label=f"mask {slot + 1}", height=320, sources=(), transforms=(),
            layers=False, canvas_size=EDITOR_CANVAS, elem_id=f"mask-editor-{slot + 1}",
            brush=gr.Brush(colors=[brush_colour(slot)], default_color=brush_colour(slot), color_mode="fixed",
                           default_size=BRUSH_RADIUS),
            eraser=gr.Eraser(default_size=BRUSH_RADIUS))
        upload = gr.File(label=f"replace mask {slot + 1} with a file", file_types=["image"], type="filepath",
                         scale=1, elem_id=f"mask-upload-{slot + 1}")
    return MaskSlot(column, editor, upload)


def masks_panel(gr, visible: bool) -> dict:
    with gr.Column(visible=visible, elem_id="masks-panel") as panel:
        gr.Markdown("**Masks** (for methods that use them). **Detect** finds each source phrase with Grounded-SAM; "
                    "refine a mask with the brush (adds) and the eraser (removes), or replace it with a file; "
                    "**Save masks** writes them for the pipeline. Each phrase keeps one colour throughout.")
        detect = gr.Button("Detect", variant="primary", elem_id="detect")
        status = gr.Textbox(label="Detection", interactive=False, elem_id="status")
        detected = gr.Image(type="pil", format="png", label="Detected masks, dilated as the editor uses them",
                            interactive=False, height=320)
        slots = [mask_slot(gr, slot) for slot in range(MAX_PAIRS)]
        with gr.Row():
            save = gr.Button("Save masks", elem_id="save-masks")
        saved = gr.Markdown(elem_id="saved")
    return dict(masks_panel=panel, detect=detect, status=status, detected=detected, slots=slots, save=save,
                saved=saved)


def results_panel(gr) -> dict:
    n = len(method_names())
    with gr.Row():
        edit = gr.Button("Edit", variant="primary", elem_id="edit")
        compare = gr.Button(f"Compare every method ({n} edits)", elem_id="compare")
        cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
    gr.Markdown(f"Compare runs the {n} methods one after another: about {n} times as long as one Edit.")
    with gr.Row():
        shown_source = gr.Image(type="pil", format="png", label="Source (working size)", interactive=False)
        shown_masks = gr.Image(type="pil", format="png", label="Masks used (dilated)", interactive=False)
        shown_result = gr.Image(type="pil", format="png", label="Result", interactive=False, elem_id="result")
    record = gr.JSON(label="Edit record", elem_id="record")
    gallery = gr.Gallery(label="Every method on the same input", format="png", columns=n + 1, height=260,
                         elem_id="gallery")
    records = gr.JSON(label="Records per method")
    return dict(edit=edit, compare=compare, cancel=cancel, shown_source=shown_source, shown_masks=shown_masks,
                shown_result=shown_result, record=record, gallery=gallery, records=records)


def layout(gr, studio: Studio) -> Page:
    gr.Markdown("# ALE-Edit studio\nPick or upload an image, name 1-3 edits, **Detect** their masks, refine "
                "them, **Save masks** for the pipeline, then **Edit** or **Compare** every method. "
                f"Model: `{studio.model}`; masks folder: `{studio.masks_dir}`.")
    with gr.Row():
        widgets = {**image_column(gr, studio), **edit_column(gr, studio)}
    widgets.update(masks_panel(gr, visible=method_class(default_method()).uses_masks))
    widgets.update(results_panel(gr))
    return Page(**widgets)


# -- handlers ----------------------------------------------------------------------------------------------------


class Handlers:
    """What each event does: plain functions of the widgets' values over ``studio``, raising ``EditInputError``."""

    def __init__(self, gr, studio: Studio, page: Page):
        self.gr, self.studio, self.page = gr, studio, page

    def pick_bench_image(self, name):
        if not name:
            return self.gr.update(), self.gr.update(), self.gr.update(choices=[], value=None)
        path = self.studio.bench_image_path(name)
        labels = [instance_label(i) for i in self.studio.instances(name)]
        return str(path), name, self.gr.update(choices=labels, value=None)

    def upload_image(self, path):
        read_image(path)  # a file that is not a picture is named here; the page keeps its image
        # The upload box is emptied for the next file; the image shows in the image box.
        return (path, Path(path).stem, self.gr.update(value=None), self.gr.update(choices=[], value=None),
                self.gr.update(value=None))

    def reset_for_new_image(self):
        """Everything tied to the previous image: its pairs, detection, masks, saved note and results."""
        gr = self.gr
        slots = [gr.update(visible=False)] * MAX_PAIRS + [gr.update(value=None)] * (2 * MAX_PAIRS)
        return ("", NO_TYPE, "", None, *slots, "", None, None, None, None, None, None)

    def reset_outputs(self) -> list:
        p = self.page
        return [p.pairs, p.edit_type, p.status, p.detected, *[s.column for s in p.slots], *p.editors,
                *[s.upload for s in p.slots], p.saved, p.shown_source, p.shown_masks, p.shown_result, p.record,
                p.gallery, p.records]

    def pick_instance(self, name, label):
        for instance in self.studio.instances(name) if name else []:
            if instance_label(instance) == label:
                return format_pairs(instance.edits), instance.edit_type
        return self.gr.update(), self.gr.update()

    def show_method(self, method):
        """The chosen method's options, and the masks only for a method that uses them."""
        gr = self.gr
        return (*[gr.update(visible=name == method) for name in method_names()],
                gr.update(visible=method_class(method).uses_masks))

    def detect(self, path, pairs_text, steps, size):
        gr = self.gr
        image = read_image(path)
        settings = edit_settings(default_method(), steps=whole_number(steps, "steps"),
                                 size=whole_number(size, "size"))
        pairs = parse_pairs(pairs_text, image)
        found = self.studio.detect(image, pairs_text, settings)
        columns = [gr.update(visible=k < len(pairs)) for k in range(MAX_PAIRS)]
        editors = [gr.update(value=editor_value(image, found.masks[source], k), label=f"mask {k + 1}: {source}")
                   for k, (source, _) in enumerate(pairs)]
        editors += [gr.update(value=None)] * (MAX_PAIRS - len(pairs))
        return (found.status(), overlay(image, found.dilated), *columns, *editors,
                *[gr.update(value=None)] * MAX_PAIRS)

    def upload_mask(self, slot: int):
        from .io import load_mask

        def load(path, mask_path, pairs_text):
            if not mask_path:
                return self.gr.update()
            image = read_image(path)
            pairs = parse_pairs(pairs_text, image)
            if slot >= len(pairs):
                raise EditInputError(f"there is no pair {slot + 1} to upload a mask for")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a mask of another size is resized (nearest), as the CLI does
                mask = load_mask(mask_path, image.size, name=pairs[slot][0])
            return self.gr.update(value=editor_value(image, mask, slot))
        return load

    def save(self, path, name, pairs_text, *editor_values):
        image = read_image(path)
        written = save_masks(self.studio.masks_dir, name, image.size,
                             refined_masks(image, pairs_text, editor_values))
        files = "\n".join(f"- `{p}`" for p in written.values())
        return (f"Saved {len(written)} mask(s):\n{files}\n\nThe pipeline uses them (Grounded-SAM for the other "
                f"phrases) with:\n\n```\n{dvc_command(self.studio.masks_dir)}\n```")

    def split_inputs(self, values: Sequence) -> tuple[list, dict[str, dict[str, Any]], list]:
        """The common values, each method's options and the mask editors' values, from one event's inputs."""
        n_options = len(self.page.options_flat)
        common = list(values[:-(n_options + MAX_PAIRS)])
        return common, options_by_method(values[len(common):len(common) + n_options]), list(values[-MAX_PAIRS:])

    def run_edit(self, *values, progress):
        (path, pairs_text, method, edit_type, schedule, steps, size, seed), options, editors = \
            self.split_inputs(values)
        image = read_image(path)
        masks = refined_masks(image, pairs_text, editors)
        kind, schedule = edit_kind(edit_type, schedule)
        settings = edit_settings(method, steps=whole_number(steps, "steps"), size=whole_number(size, "size"),
                                 options=options[method])
        progress(0, desc=f"editing with {method_class(method).label}")
        result = self.studio.edit(image, pairs_text, masks, settings, edit_type=kind, schedule=schedule,
                                  seed=whole_number(seed, "seed", 0, MAX_SEED))
        work = working_image(image, settings.size)
        return work, overlay(work, result.masks), result.image, result.record

    def run_compare(self, *values, progress):
        (path, pairs_text, edit_type, schedule, steps, size, seed), options, editors = self.split_inputs(values)
        image = read_image(path)
        masks = refined_masks(image, pairs_text, editors)
        kind, schedule = edit_kind(edit_type, schedule)
        size = whole_number(size, "size")
        results = self.studio.compare(
            image, pairs_text, masks, steps=whole_number(steps, "steps"), size=size, options=options,
            edit_type=kind, schedule=schedule, seed=whole_number(seed, "seed"),
            track=lambda methods: progress.tqdm(methods, desc="Compare: methods done", unit="edits"))
        gallery = [(working_image(image, size), "source")] + [(r.image, m) for m, r in results]
        return gallery, {m: r.record for m, r in results}


def wire(gr, studio: Studio, page: Page) -> None:
    """Connect the page's events to the handlers; API names let gradio_client drive the page."""
    h = Handlers(gr, studio, page)
    p = page
    checked = functools.partial(page_errors, gr)
    new_image = dict(fn=h.reset_for_new_image, inputs=None, outputs=h.reset_outputs(), api_name=False)
    p.bench_image.select(checked(h.pick_bench_image), p.bench_image, [p.image, p.image_name, p.instance],
                         api_name="pick_image").success(**new_image)
    p.upload_image.upload(checked(h.upload_image), p.upload_image,
                          [p.image, p.image_name, p.bench_image, p.instance, p.upload_image], api_name="upload_image"
                          ).success(**new_image)
    p.instance.change(checked(h.pick_instance), [p.bench_image, p.instance], [p.pairs, p.edit_type],
                      api_name="pick_instance")
    p.method.change(h.show_method, p.method, [*p.option_groups.values(), p.masks_panel], api_name=False)
    p.detect.click(checked(h.detect), [p.image, p.pairs, p.steps, p.size],
                   [p.status, p.detected, *[s.column for s in p.slots], *p.editors, *[s.upload for s in p.slots]],
                   api_name="detect")
    for slot, s in enumerate(p.slots):
        s.upload.upload(checked(h.upload_mask(slot)), [p.image, s.upload, p.pairs], s.editor,
                        api_name=f"upload_mask_{slot + 1}")
    p.save.click(checked(h.save), [p.image, p.image_name, p.pairs, *p.editors], p.saved, api_name="save")
    common = [p.edit_type, p.schedule, p.steps, p.size, p.seed]
    edit_inputs = [p.image, p.pairs, p.method, *common, *p.options_flat, *p.editors]
    compare_inputs = [p.image, p.pairs, *common, *p.options_flat, *p.editors]
    edit = p.edit.click(takes_progress(gr, studio, checked(h.run_edit), len(edit_inputs)), edit_inputs,
                        [p.shown_source, p.shown_masks, p.shown_result, p.record], api_name="edit")
    compare = p.compare.click(takes_progress(gr, studio, checked(h.run_compare), len(compare_inputs)), compare_inputs,
                              [p.gallery, p.records], api_name="compare")
    p.cancel.click(studio.cancel, None, None, cancels=[edit, compare], api_name=False)


def build_app(studio: Studio):
    """The studio's Gradio Blocks page over ``studio``."""
    gr = require_gradio()
    with gr.Blocks(title="ALE-Edit studio") as app:
        page = layout(gr, studio)
        wire(gr, studio, page)
    return app


def serve(studio: Studio, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, block: bool = True):
    """Start the page at ``http://host:port``; ``block=False`` returns the running app (tests close it)."""
    app = build_app(studio)
    allowed = [str(studio.bench.resolve())] if studio.bench is not None else []
    app.queue().launch(server_name=host, server_port=port, allowed_paths=allowed, prevent_thread_lock=not block,
                       show_error=True, inbrowser=False)
    return app
