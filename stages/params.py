"""params.yaml's schema: every section and key the pipeline reads, checked before any stage works.

A key that is not here (``dvc exp run -S +edit.stepz=3``) is refused with a "did you mean", a value out of its
choices or range is named, so a typo never re-runs stages with old settings. The edit settings and each method's
section come from the library's settings dataclasses (``EditSettings``, each method's ``Options``); the other
sections are declared here, the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ale_edit.bench.backends import BACKENDS, RayOptions
from ale_edit.bench.edit_masks import MASK_SOURCES
from ale_edit.bench.names import DINO_INPUTS, MASK_WEIGHTS, TE_VARIANTS
from ale_edit.edit_types import BENCHMARKS, EDIT_TYPE_KEYS, EDIT_TYPES, PIE_EDIT_TYPES
from ale_edit.compat import PROFILES
from ale_edit.editor import MAX_SEED
from ale_edit.models import DEFAULT_DETECTOR, DEFAULT_DETECTOR_DTYPE, DEFAULT_SEGMENTER, DTYPES
from ale_edit.options import Options, SettingError, did_you_mean, from_mapping, mapping_kwargs, option


@dataclass(frozen=True)
class BenchParams(Options):
    section = "bench"

    kind: str = option("ale", "ALE-Bench, or PIE-Bench (a local folder in its published layout).", choices=BENCHMARKS)
    source: str = option("https://github.com/ml-postech/ALE.git", "A git repository or a local folder.")
    rev: str | None = option(None, "The commit of a git source.")
    subdir: str = option("ale_bench", "The folder of a git source that holds the benchmark.")
    images: list[str] = field(default_factory=list, metadata={"help": "Names to keep; [] keeps all."})
    limit: int = option(0, "Keep the first N images (sorted); 0 keeps all.", minimum=0)
    pie_types: list[str] = field(default_factory=lambda: list(PIE_EDIT_TYPES),
                                 metadata={"help": "PIE-Bench: the edit types to materialise.",
                                           "choices": PIE_EDIT_TYPES,
                                           "empty": "no PIE-Bench entry would be materialised; list at least one of "
                                                    + ", ".join(PIE_EDIT_TYPES)})


@dataclass(frozen=True)
class PromptsParams(Options):
    section = "prompts"

    mode: str = option("official", "The authors' instances, or generated ones.", choices=("official", "generated"))
    seed: int = option(42, "Seed of the generated instances.", minimum=0, maximum=MAX_SEED)
    instances: int = option(10, "Per image x edit type x number of objects.", minimum=1)
    edit_types: list[str] = field(default_factory=lambda: list(EDIT_TYPE_KEYS),
                                  metadata={"help": "Edit types (either spelling); PIE-Bench's with bench.kind pie.",
                                            "choices": tuple(dict.fromkeys(EDIT_TYPE_KEYS + EDIT_TYPES
                                                                           + PIE_EDIT_TYPES)),
                                            "empty": "no edit type would be edited, scored or reported (the "
                                                     "pipeline runs one edit and one score stage per type); list at "
                                                     f"least one of {', '.join(EDIT_TYPE_KEYS)} (PIE-Bench: "
                                                     f"{', '.join(PIE_EDIT_TYPES)})"})
    object_counts: list[int] = field(default_factory=lambda: [1, 2, 3],
                                     metadata={"help": "Objects per edit.", "choices": (1, 2, 3),
                                               "empty": "no edit would have a number of objects to change; list at "
                                                        "least one of 1, 2, 3 (every count: [1, 2, 3])"})


@dataclass(frozen=True)
class ModelParams(Options):
    section = "model"

    preset: str = option("real", "real, or tiny: every model small, random and offline.", choices=("real", "tiny"))
    diffusion: str = option("SimianLuo/LCM_Dreamshaper_v7", "The latent consistency model.")
    detector: str = option(DEFAULT_DETECTOR, "Grounding DINO.")
    segmenter: str | None = option(None, f"SAM or SAM 2; null: from edit.compat (none: {DEFAULT_SEGMENTER}, "
                                         f"authors: {PROFILES['authors']['model.segmenter']}).")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    dtype: str = option("auto", "auto: fp16 on CUDA, fp32 on CPU.", choices=("auto", *DTYPES))
    detector_dtype: str = option(DEFAULT_DETECTOR_DTYPE, "Grounding DINO's and SAM's dtype (masks stage).",
                                 choices=("auto", *DTYPES))


@dataclass(frozen=True)
class MasksParams(Options):
    section = "masks"

    source: str = option("auto", "Grounded-SAM, refined masks, or refined where present.", choices=MASK_SOURCES)
    manual_dir: str = option("", "Refined masks <image>/<phrase>_mask.png; '' = the benchmark's.")
    box_threshold: float = option(0.45, "Grounding DINO's box threshold.", minimum=0.0, maximum=1.0)
    text_threshold: float = option(0.4, "Grounding DINO's text threshold.", minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class EditRayParams(RayOptions):
    section = "edit.ray"


@dataclass(frozen=True)
class ScoreRayParams(RayOptions):
    section = "score.ray"


def ray_section(cls: type, values: Any) -> RayOptions:
    """A ``ray`` section (``edit.ray``, ``score.ray``) as its options; ``null`` or absent: the defaults."""
    if values is not None and not isinstance(values, Mapping):
        raise SettingError(f"{cls.section} must be a mapping of keys, got {values!r}")
    return from_mapping(cls, values or {}, cls.section)


def ray_field(help: str):
    return field(default_factory=dict, metadata={"help": help})


@dataclass(frozen=True)
class EditPipelineParams(Options):
    """The edit section's keys that are the pipeline's, not the editor's (``EditSettings`` holds the rest)."""

    section = "edit"

    seed: int = option(42, "Every edit's seed.", minimum=0, maximum=MAX_SEED)
    batch_size: int = option(1, "Edits per UNet call.", minimum=1)
    backend: str = option("local", "local: the stage's process; ray: a pool of Ray actors (edit.ray).",
                          choices=BACKENDS)
    ray: dict = ray_field("The Ray pool of backend ray (address, workers, num_gpus, ...).")

    def __post_init__(self):
        super().__post_init__()
        ray_section(EditRayParams, self.ray)


@dataclass(frozen=True)
class ScheduleParams(Options):
    section = "schedule"

    color: float = option(1.0, "", minimum=0.0, maximum=1.0)
    object: float = option(0.5, "", minimum=0.0, maximum=1.0)
    material: float = option(0.6, "", minimum=0.0, maximum=1.0)
    color_object: float = option(0.5, "", minimum=0.0, maximum=1.0)
    object_material: float = option(0.5, "", minimum=0.0, maximum=1.0)
    change_object: float = option(0.5, "PIE-Bench.", minimum=0.0, maximum=1.0)
    change_content: float = option(0.5, "PIE-Bench.", minimum=0.0, maximum=1.0)
    change_color: float = option(1.0, "PIE-Bench.", minimum=0.0, maximum=1.0)
    change_material: float = option(0.6, "PIE-Bench.", minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class ScoreParams(Options):
    section = "score"

    clip: str = option("openai/clip-vit-large-patch14", "CLIP for TE, TI and Edited.")
    dino: str = option("facebook/dino-vitb8", "DINO for the structure distance.")
    lpips: str = option("squeeze", "LPIPS backbone.")
    dino_input: str = option("published", "0-255 pixels as published, or 0-1.", choices=DINO_INPUTS)
    mask_weights: str | None = option(None, "binary | soft (authors); null: from edit.compat.", choices=MASK_WEIGHTS)
    te_variant: str | None = option(None, "mean (eq. 6) | joined (authors); null: from edit.compat.",
                                    choices=tuple(TE_VARIANTS))
    resize_edited: bool | None = option(True, "Resize edits to their source's size (else such edits are error "
                                              "rows); null: from edit.compat (none: false, authors: true).")
    lpips_weights: str = option("", "LPIPS' SqueezeNet weights file; '': torchvision's cache under $TORCH_HOME.")
    batch_size: int = option(16, "Edits per model call.", minimum=1)
    grid_edits: int = option(4, "Edits per type in the image grids.", minimum=0)
    backend: str = option("local", "local: the stage's process; ray: a pool of Ray actors (score.ray).",
                          choices=BACKENDS)
    ray: dict = ray_field("The Ray pool of backend ray (address, workers, num_gpus, ...).")

    def __post_init__(self):
        super().__post_init__()
        ray_section(ScoreRayParams, self.ray)


SECTIONS: dict[str, type] = {
    "bench": BenchParams, "prompts": PromptsParams, "model": ModelParams, "masks": MasksParams,
    "schedule": ScheduleParams, "score": ScoreParams,
}


def check_params(params: Mapping[str, Any]) -> None:
    """Raise ``SettingError`` naming the first unknown section or key, or the first bad value, of params.yaml."""
    from ale_edit.methods import method_names
    from ale_edit.settings import PIPELINE_EDIT_KEYS, EditSettings

    methods = method_names()
    known = {"method", "edit", *SECTIONS, *methods}
    for name in params:
        if name not in known:
            raise SettingError(f"unknown section {name!r} in params.yaml{did_you_mean(name, known)}")
    for name, cls in SECTIONS.items():
        if not isinstance(params.get(name) or {}, Mapping):
            raise SettingError(f"params.yaml: {name} must be a mapping of keys")
        from_mapping(cls, params.get(name) or {}, name)
    edit = dict(params.get("edit") or {})
    from_mapping(EditPipelineParams, {k: edit[k] for k in PIPELINE_EDIT_KEYS if k in edit}, "edit")
    mapping_kwargs(EditSettings, edit, "edit", ignore=PIPELINE_EDIT_KEYS, exclude=("method", "options"))
    for method in methods:  # every method's section, not only the active one: a typo anywhere is named
        if method in params:
            EditSettings(method=method, options=dict(params[method] or {}))
    EditSettings.from_params(params)
    check_benchmark_types(params)


def check_benchmark_types(params: Mapping[str, Any]) -> None:
    """The DVC edit and score stages are one per ``prompts.edit_types`` item: on PIE-Bench those are PIE-Bench's
    types (materialised by ``bench.pie_types``), on ALE-Bench ALE-Bench's; a mix is named with the fix."""
    bench, prompts = params.get("bench") or {}, params.get("prompts") or {}
    kind = bench.get("kind", "ale")
    types = list(prompts.get("edit_types") or [])
    if kind == "pie":
        pie_types = list(bench.get("pie_types", PIE_EDIT_TYPES))
        wrong = [t for t in types if t not in pie_types]
        if wrong:
            raise SettingError(
                f"bench.kind is pie: prompts.edit_types must name PIE-Bench types that bench.pie_types keeps "
                f"({', '.join(pie_types)}), got {', '.join(map(str, wrong))}; e.g. dvc exp run -S bench.kind=pie "
                f"-S bench.source=PATH -S 'prompts.edit_types=[{','.join(pie_types)}]'")
        if prompts.get("mode", "official") != "official":
            raise SettingError(f"bench.kind is pie: prompts.mode must be official (PIE-Bench's own edits), got "
                               f"{prompts.get('mode')!r}")
    else:
        wrong = [t for t in types if t in PIE_EDIT_TYPES]
        if wrong:
            raise SettingError(f"prompts.edit_types names PIE-Bench types ({', '.join(wrong)}), which need "
                               f"bench.kind pie")
