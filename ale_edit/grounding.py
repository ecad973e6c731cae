"""Object masks from phrases with Grounded-SAM: Grounding DINO boxes, SAM masks, disk dilation.

This is the mask-extraction step of ALE-Edit, done the way the paper's authors do it (their ``sam_utils.py``):

* all phrases go to Grounding DINO at once, as one prompt ``"a. b. c."`` (each phrase lower-cased and followed by
  ``"."``), with ``box_threshold=0.45`` and ``text_threshold=0.4``;
* a detection is kept only when its predicted text label is exactly one of the phrases, so a box labelled
  ``"cat dog"`` or ``"red"`` for the phrase ``"red car"`` is dropped;
* each kept box is turned into a mask by SAM with ``multimask_output=False``, the authors' setting (one mask per box,
  no choice among SAM's three candidates by predicted IoU);
* masks are dilated by a disk afterwards (:func:`ale_edit.masks.dilate_mask`, applied by the editor).

Where this module differs from the authors' code, on purpose:

* **Several boxes of one phrase.** By default (``keep="union"``) every kept box of a phrase is segmented and the
  masks are ORed, as the authors' code does. ``keep="best"`` takes the single highest-scoring box instead (ties:
  the detector's order): an edit names one object per phrase, and a second, weaker box of the same label is
  sometimes a false positive (a reflection, a similar object).
* **Labels are compared as tokens.** The detector's label is decoded from BERT tokens, so ``"t-shirt"`` comes back as
  ``"t - shirt"``; a phrase is therefore compared in the form the detector's own tokenizer gives back for it
  (:func:`phrase_labels`), which equals the lower-cased phrase for plain words.
* **A phrase may find nothing.** It then maps to ``None`` (also when SAM returns an empty mask for its box); the
  caller records a fallback and warns. Their code silently leaves such a phrase unmasked (and fails with an
  index error when no phrase is found).

Models, all through ``transformers`` (``groundingdino-py`` does not work with transformers 5):

* detector: ``GroundingDinoForObjectDetection`` + its processor, default ``IDEA-Research/grounding-dino-base``, the
  checkpoint the authors load;
* segmenter: ``SamModel`` + ``SamProcessor``, default ``facebook/sam-vit-huge`` (the ViT-H weights of the
  ``segment-anything`` package). The authors use SAM 2.1 Hiera-L; a SAM 2 checkpoint in transformers' format, e.g.
  ``facebook/sam2.1-hiera-large`` (whose config says ``sam2_video``), is also accepted: the segmenter's class is
  chosen from the config's ``model_type`` (``sam`` -> ``SamModel``; ``sam2``/``sam2_video`` -> ``Sam2Model``, the
  image-only part, which is all box prompting needs).
* ``"tiny"`` for either builds a model of well under a million parameters from configs, with seeded random weights,
  offline, for tests.

Masks are binarised at probability 0.5, i.e. SAM's mask logit > 0 (the threshold of ``segment-anything``'s and
SAM 2's predictors), after upsampling the logits to the image's resolution.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoModelForMaskGeneration,
    AutoProcessor,
    BertConfig,
    BertTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    Sam2Model,
    Sam2Processor,
    SamConfig,
    SamImageProcessor,
    SamMaskDecoderConfig,
    SamModel,
    SamProcessor,
    SamPromptEncoderConfig,
    SamVisionConfig,
    SwinConfig,
)

from .errors import EditInputError, ModelUnavailableError
from .preflight import check_models, grounding_needs
from .models import (  # noqa: F401  (DEFAULT_DETECTOR, DEFAULT_SEGMENTER: this module's API too)
    DEFAULT_DETECTOR, DEFAULT_SEGMENTER, TINY, pretrained_kwargs, resolve_device, resolve_dtype,
)
BOX_THRESHOLD = 0.45
TEXT_THRESHOLD = 0.4

# Words the tiny BERT vocabulary holds whole; any other lower-case word is spelt with the ##letter pieces.
_TINY_WORDS = (
    "a an the and of with in on red blue green yellow black white brown pink purple orange gray grey golden "
    "wooden metal glass plastic cat dog bird horse cow sheep car bus truck bike bicycle boat man woman person "
    "boy girl child shirt hat cap dress shoe shoes bag table chair sofa bed cup bowl plate bottle apple banana "
    "orange cake flower tree house sky grass wall door window box ball teddy bear"
).split()


@dataclass
class Detection:
    """One Grounding DINO detection: its decoded text label, confidence and box (x0, y0, x1, y1) in image pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


@dataclass
class GroundingModels:
    """Grounding DINO and SAM (or SAM 2) with their processors, on one device."""

    detector: GroundingDinoForObjectDetection
    detector_processor: GroundingDinoProcessor
    segmenter: SamModel | Sam2Model
    segmenter_processor: SamProcessor | Sam2Processor
    device: torch.device
    dtype: torch.dtype
    detector_name: str = ""
    segmenter_name: str = ""

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save to ``directory/detector`` and ``directory/segmenter``; each loads back as a local directory."""
        directory = Path(directory)
        for sub, model, processor in (
            ("detector", self.detector, self.detector_processor),
            ("segmenter", self.segmenter, self.segmenter_processor),
        ):
            model.save_pretrained(directory / sub)
            processor.save_pretrained(directory / sub)


# ----------------------------------------------------------------------------------------------------------------
# Loading


def _tiny_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    # dict.fromkeys: one entry per token ("a" is both a letter and a word), in a fixed order.
    return list(dict.fromkeys(specials + chars + pieces + list(_TINY_WORDS)))


@functools.lru_cache(maxsize=1)
def _tiny_tokenizer_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="ale_edit_bert_tokenizer_"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    (directory / "vocab.txt").write_text("\n".join(_tiny_vocab()) + "\n", encoding="utf-8")
    return directory


def tiny_bert_tokenizer() -> BertTokenizer:
    """A lower-casing WordPiece tokenizer over a ~200-entry vocabulary: every lower-case ASCII word tokenizes
    (spelt letter by letter when not held whole), so labels decode back to the words given."""
    # Loaded from a directory: like CLIP's (see tokenizer.py), building it from vocab_file= directly is not
    # reliable on transformers 5.
    tokenizer = BertTokenizer.from_pretrained(str(_tiny_tokenizer_dir()), do_lower_case=True)
    if len(tokenizer) != len(_tiny_vocab()):
        raise RuntimeError(f"tiny BERT tokenizer built with {len(tokenizer)} entries, expected {len(_tiny_vocab())}")
    return tokenizer


def build_tiny_detector(seed: int = 0) -> tuple[GroundingDinoForObjectDetection, GroundingDinoProcessor]:
    """A Grounding DINO with a 4-stage Swin of width 8, a 1-layer BERT, d_model 32 and 10 queries; random weights.

    Images are resized to 128 px: the smallest size whose coarsest feature level (stride 64) is still 2x2, which
    the level's GroupNorm needs. The decoder has 2 layers, the fewest transformers 5 accepts.
    """
    tokenizer = tiny_bert_tokenizer()
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            image_size=128, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
            window_size=4, out_indices=[2, 3, 4],
        ),
        text_config=BertConfig(
            vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=256,
        ),
        num_queries=10, d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_n_points=2, decoder_n_points=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 128})
    return model, GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_segmenter(seed: int = 0) -> tuple[SamModel, SamProcessor]:
    """A SAM with a 1-layer ViT of width 16 on 64 px inputs (8x8 patches) and a 2-layer mask decoder; random weights."""
    config = SamConfig(
        vision_config=SamVisionConfig(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=8,
            output_channels=16, mlp_dim=32, global_attn_indexes=[0], window_size=0, num_pos_feats=8,
        ),
        prompt_encoder_config=SamPromptEncoderConfig(
            hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4,
        ),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16,
        ),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamModel(config)
    image_processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    return model, SamProcessor(image_processor=image_processor)


def _load_detector(name: str, seed: int):
    if name == TINY:
        return build_tiny_detector(seed)
    kwargs = pretrained_kwargs(name)
    try:
        processor = AutoProcessor.from_pretrained(name, **kwargs)
        model = GroundingDinoForObjectDetection.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"cannot load the Grounding DINO detector {name!r} ({exc}). Give a hub id reachable from here, a local "
            f"folder saved by transformers, or 'tiny' for the offline random-weight model used in tests."
        ) from exc
    if not hasattr(processor, "post_process_grounded_object_detection"):
        raise ModelUnavailableError(
            f"{name!r} does not hold a Grounding DINO processor (got {type(processor).__name__})")
    return model, processor


def _load_segmenter(name: str, seed: int):
    if name == TINY:
        return build_tiny_segmenter(seed)
    kwargs = pretrained_kwargs(name)
    try:
        # The mask-generation auto class maps model_type "sam" to SamModel and "sam2"/"sam2_video" to Sam2Model,
        # dropping a video checkpoint's memory modules.
        model = AutoModelForMaskGeneration.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"cannot load the SAM segmenter {name!r} ({exc}). Give a hub id reachable from here, a local folder "
            f"saved by transformers, or 'tiny' for the offline random-weight model used in tests."
        ) from exc
    if isinstance(model, SamModel):
        processor_class = SamProcessor
    elif isinstance(model, Sam2Model):
        processor_class = Sam2Processor
    else:
        raise ModelUnavailableError(
            f"{name!r} is a {type(model).__name__} (model_type {model.config.model_type!r}); the segmenter must be "
            f"SAM (model_type 'sam') or SAM 2 ('sam2' / 'sam2_video')"
        )
    try:
        processor = processor_class.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot load the processor of the segmenter {name!r} ({exc})") from exc
    return model, processor


def load_grounding_models(
    detector: str = DEFAULT_DETECTOR,
    segmenter: str = DEFAULT_SEGMENTER,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    seed: int = 0,
) -> GroundingModels:
    """Load Grounding DINO and SAM from hub ids or local folders; ``"tiny"`` for either builds it offline.

    ``dtype=None`` means fp32 on every device, unlike the diffusion model: box, label and mask decisions are
    thresholds that fp16 can flip, the authors run both models in fp32, and both are small next to the UNet.
    ``"auto"`` follows :func:`ale_edit.models.resolve_dtype` (fp16 on CUDA). Both models are found first
    (``preflight``): a missing one is named, with the other, before either loads.
    """
    check_models(grounding_needs(str(detector), str(segmenter)))
    device = resolve_device(device)
    dtype = torch.float32 if dtype is None else resolve_dtype(device, dtype)
    det_model, det_processor = _load_detector(str(detector), seed)
    seg_model, seg_processor = _load_segmenter(str(segmenter), seed + 1)
    for model in (det_model, seg_model):
        model.requires_grad_(False)
        model.eval()
        model.to(device=device, dtype=dtype)
    return GroundingModels(
        det_model, det_processor, seg_model, seg_processor, device, dtype, str(detector), str(segmenter)
    )


# ----------------------------------------------------------------------------------------------------------------
# Detection


def _normalise_phrases(phrases: Sequence[str]) -> list[str]:
    if isinstance(phrases, str):
        raise EditInputError(f"phrases must be a list of strings, not the single string {phrases!r}")
    normalised = []
    for phrase in phrases:
        if not isinstance(phrase, str) or not phrase.strip():
            raise EditInputError(f"phrase {phrase!r} is empty or not a string")
        text = " ".join(phrase.lower().split())
        # "." separates categories in Grounding DINO's prompt: a phrase holding one would become two.
        if "." in text:
            raise EditInputError(f"phrase {phrase!r} contains '.', which separates phrases in the detector's prompt")
        normalised.append(text)
    seen: dict[str, str] = {}
    for phrase, text in zip(phrases, normalised):
        if text in seen:
            raise EditInputError(
                f"duplicate phrase {phrase!r} (same as {seen[text]!r} once lower-cased): each phrase names one "
                f"object and gets one mask"
            )
        seen[text] = phrase
    return normalised


def detection_prompt(phrases: Sequence[str]) -> str:
    """The single text prompt for all phrases: lower-cased, each followed by ``"."``: ``"red car. dog."``.

    Raises ``EditInputError`` for an empty phrase, a phrase holding ``"."``, or duplicates (after lower-casing).
    """
    return " ".join(text + "." for text in _normalise_phrases(phrases))


def phrase_labels(phrases: Sequence[str], tokenizer) -> dict[str, str]:
    """For each phrase, the text label the detector reports when it detects exactly that phrase's tokens.

    Labels are decoded from the tokenizer's ids, so a phrase is compared in the same decoded form: for BERT
    uncased, ``"Red car"`` -> ``"red car"``, ``"t-shirt"`` -> ``"t - shirt"``.
    """
    normalised = _normalise_phrases(phrases)
    return {
        phrase: tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])
        for phrase, text in zip(phrases, normalised)
    }


def _to_model(inputs, model: torch.nn.Module, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    device, dtype = model.device, model.dtype
    out = {}
    for key in keys:
        if key in inputs and inputs[key] is not None:
            value = torch.as_tensor(inputs[key])
            out[key] = value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
    return out


@torch.no_grad()
def run_detector(
    image: Image.Image,
    prompt: str,
    models: GroundingModels,
    box_threshold: float = BOX_THRESHOLD,
    text_threshold: float = TEXT_THRESHOLD,
) -> list[Detection]:
    """Grounding DINO on ``image`` with the text ``prompt``: every box scoring above ``box_threshold``, labelled with
    the prompt tokens scoring above ``text_threshold`` (transformers' post-processing), boxes in image pixels."""
    processor, model = models.detector_processor, models.detector
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    max_len = model.config.max_text_len
    if inputs["input_ids"].shape[-1] > max_len:
        raise EditInputError(
            f"the detector prompt {prompt!r} is {inputs['input_ids'].shape[-1]} tokens; Grounding DINO reads at "
            f"most {max_len}"
        )
    model_inputs = _to_model(
        inputs, model, ("pixel_values", "pixel_mask", "input_ids", "token_type_ids", "attention_mask")
    )
    outputs = model(**model_inputs)
    # Post-processing thresholds sigmoid scores: do it in fp32 whatever the model's dtype.
    outputs.logits = outputs.logits.float()
    outputs.pred_boxes = outputs.pred_boxes.float()
    results = processor.post_process_grounded_object_detection(
        outputs,
        model_inputs["input_ids"],
        threshold=box_threshold,
        text_threshold=text_threshold,
        target_sizes=[(image.height, image.width)],
    )[0]
    return [
        Detection(label=str(label), score=float(score), box=tuple(float(v) for v in box))
        for label, score, box in zip(results["text_labels"], results["scores"].cpu(), results["boxes"].cpu())
    ]


def matching_detections(labels: dict[str, str], detections: Sequence[Detection]) -> dict[str, list[Detection]]:
    """For each phrase, every detection whose label equals the phrase's label, best score first."""
    by_label = {label: phrase for phrase, label in labels.items()}
    matches: dict[str, list[Detection]] = {phrase: [] for phrase in labels}
    for det in detections:
        phrase = by_label.get(det.label)
        if phrase is not None:
            matches[phrase].append(det)
    for found in matches.values():
        found.sort(key=lambda d: -d.score)  # stable: ties keep the detector's order
    return matches


def select_detections(labels: dict[str, str], detections: Sequence[Detection]) -> dict[str, Detection | None]:
    """For each phrase, the highest-scoring detection whose label equals the phrase's label, or ``None``.

    ``labels`` maps phrase -> expected label (:func:`phrase_labels`). Detections with any other label (a
    neighbouring phrase's tokens merged in, a fragment of the phrase, a special token) are dropped. Ties go to
    the detection that comes first.
    """
    chosen: dict[str, Detection | None] = {phrase: None for phrase in labels}
    by_label = {label: phrase for phrase, label in labels.items()}
    for det in detections:
        phrase = by_label.get(det.label)
        if phrase is not None and (chosen[phrase] is None or det.score > chosen[phrase].score):
            chosen[phrase] = det
    return chosen


@torch.no_grad()
def segment_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], models: GroundingModels) -> list[np.ndarray]:
    """SAM's single mask (``multimask_output=False``) for each box (x0, y0, x1, y1, image pixels) in one pass.

    Each mask is a bool array (height, width) of the image: SAM's low-resolution logits are upsampled to the
    image (transformers' ``post_process_masks``, as SAM's predictors do) and thresholded at probability 0.5.
    """
    if len(boxes) == 0:
        return []
    processor, model = models.segmenter_processor, models.segmenter
    input_boxes = [[[float(v) for v in box] for box in boxes]]
    inputs = processor(images=image, input_boxes=input_boxes, return_tensors="pt")
    model_inputs = _to_model(inputs, model, ("pixel_values", "input_boxes"))
    outputs = model(**model_inputs, multimask_output=False)
    logits = outputs.pred_masks.float().cpu()  # (1, n_boxes, 1, h, w)
    if isinstance(processor, SamProcessor):
        upsampled = processor.post_process_masks(
            logits, inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
        )
    else:
        upsampled = processor.post_process_masks(logits, inputs["original_sizes"], binarize=False)
    masks = upsampled[0][:, 0] > 0.0  # logit > 0  <=>  sigmoid > 0.5
    return [m.numpy().astype(bool) for m in masks]


def detect_masks(
    image: Image.Image,
    phrases: list[str],
    models: GroundingModels,
    box_threshold: float = BOX_THRESHOLD,
    text_threshold: float = TEXT_THRESHOLD,
    keep: str = "union",
) -> dict[str, np.ndarray | None]:
    """A mask for each phrase, by Grounded-SAM (see the module docstring for the exact procedure).

    Returns ``{phrase: bool array (height, width) or None}``, keyed by the phrases as given, in their order.
    ``None`` means no detection carried exactly that phrase's label (or SAM's mask for its box was empty); the
    caller decides the fallback. Duplicate phrases (after lower-casing) raise ``EditInputError``.
    """
    prompt = detection_prompt(phrases)  # validates before any model runs
    phrases = list(phrases)
    if not phrases:
        return {}
    image = image.convert("RGB")
    labels = phrase_labels(phrases, models.detector_processor.tokenizer)
    if keep not in ("union", "best"):
        raise ValueError(f"keep must be 'union' or 'best', got {keep!r}")
    detections = run_detector(image, prompt, models, box_threshold, text_threshold)
    if keep == "best":
        chosen = select_detections(labels, detections)
        boxes = [(phrase, det) for phrase, det in chosen.items() if det is not None]
    else:
        boxes = [(phrase, det) for phrase, dets in matching_detections(labels, detections).items() for det in dets]
    masks = segment_boxes(image, [det.box for _, det in boxes], models)
    result: dict[str, np.ndarray | None] = {phrase: None for phrase in phrases}
    for (phrase, _), mask in zip(boxes, masks):
        result[phrase] = mask if result[phrase] is None else result[phrase] | mask
    return {phrase: (m if m is not None and m.any() else None) for phrase, m in result.items()}
