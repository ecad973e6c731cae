"""PIE-Bench (cure-lab/PnPInversion) in the pipeline: its published layout read and validated, each entry's one
(source phrase, target phrase) pair formed, the benchmark materialised in the same manifest layout as ALE-Bench,
and its edit table.

The published layout (PnPInversion README.md, "Benchmark Download")::

    mapping_file.json                 {key: {"image_path", "original_prompt", "editing_prompt", "editing_instruction",
                                              "editing_type_id", "blended_word", "mask"}, ...}
    annotation_images/<image_path>    e.g. 1_change_object_80/1_artificial/1_animal/111000000000.jpg

- ``editing_type_id`` is a string, "0" to "9" (``edit_types.PIE_TYPE_NAMES``).
- The prompts mark the words that differ between them in [] ("a slanted [rusty] mountain bicycle ...").
- ``blended_word`` is "source target" (the words to edit in each prompt; "bicycle bicycle"), or "".
- ``mask`` is run-length counts: absolute (start, length) pairs over the row-major 512x512 image; after decoding,
  the one-pixel image border is set to 1 (``evaluation/evaluate.py`` ``mask_decode``, "to avoid annotation errors in
  boundary"). ``decode_mask`` does the same.
- The editing scripts read images through ``utils/utils.py`` ``load_512``: centre-cropped to a square, resized to
  512x512 (``load_512`` here).

The pair of an entry (``edit_pair``): the source phrase is the blend word's source part, the phrase Grounded-SAM
is given; the target phrase is the shortest run of the editing prompt's words that holds the blend word's target
part and every word the editing prompt marks ("a slanted [rusty] mountain bicycle", "bicycle bicycle" ->
("bicycle", "rusty mountain bicycle")). The whole prompts are kept, each with its phrase marked
(``ale_edit.prompts``), for the baselines that condition on whole prompts. An entry whose pair cannot be formed
keeps its row with the reason (``PairError``), never dropped.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ..edit_types import PIE_TABLE, PIE_TYPE_NAMES
from ..errors import EditInputError
from ..io import load_image
from ..prompts import mark_span
from .dataset import BenchLayoutError
from .instances import PIE_EDIT_TABLE_COLUMNS
from .materialize import is_git_source, orientation_entry, read_image_size, select_images

MAPPING_FILE = "mapping_file.json"
IMAGES_FOLDER = "annotation_images"
PIE_SIZE = 512
KIND = "pie"
REQUIRED_FIELDS = ("image_path", "original_prompt", "editing_prompt", "editing_type_id", "blended_word", "mask")
# A word's core is the word without the punctuation around it ("heart," -> "heart"); phrases start and end on cores.
EDGE_PUNCTUATION = ".,;:!?\"'()"
# Characters a source phrase cannot hold: it names its mask file, <phrase>_mask.png, read back up to the first "_".
PHRASE_FORBIDDEN = "_/\\"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PairError(EditInputError):
    """A PIE-Bench entry whose (source phrase, target phrase) pair cannot be formed; the message says why."""


# ----------------------------------------------------------------------------------------------------------------
# Masks and images


def decode_mask(counts: Sequence[int], shape: tuple[int, int] = (PIE_SIZE, PIE_SIZE)) -> np.ndarray:
    """PIE-Bench's run-length mask as a bool (height, width) array: every (start, length) pair sets ``length``
    pixels from the absolute row-major index ``start`` (a run past the image's end is cut there, one starting past
    it sets nothing), then the one-pixel image border is set, as ``mask_decode`` does.

    Raises ``BenchLayoutError`` for counts that are not an even-length list of non-negative integers.
    """
    if not isinstance(counts, (list, tuple)) or len(counts) % 2:
        raise BenchLayoutError(f"mask counts must be a list of (start, length) pairs, got {type(counts).__name__} "
                               f"{str(counts)[:40]}")
    bad = [c for c in counts if isinstance(c, bool) or not isinstance(c, int) or c < 0]
    if bad:
        raise BenchLayoutError(f"mask counts must be non-negative integers, got {bad[:3]!r}")
    height, width = shape
    flat = np.zeros(height * width, dtype=bool)
    for start, length in zip(counts[0::2], counts[1::2]):
        flat[start : start + length] = True  # slicing stops at the end, as mask_decode's min(length, L - start)
    mask = flat.reshape(height, width)
    mask[0, :] = mask[-1, :] = True  # the border rule of mask_decode
    mask[:, 0] = mask[:, -1] = True
    return mask


def runs_past_end(counts: Sequence[int], shape: tuple[int, int] = (PIE_SIZE, PIE_SIZE)) -> int:
    """How many runs of ``counts`` reach past the image's last pixel (``decode_mask`` cuts them)."""
    total = shape[0] * shape[1]
    return sum(1 for start, length in zip(counts[0::2], counts[1::2]) if start + length > total)


def load_512(image: Image.Image) -> Image.Image:
    """PIE-Bench's ``load_512`` (no margins): the centred square of the image, resized to 512x512 with PIL's default
    filter for RGB images, bicubic."""
    image = image.convert("RGB")
    width, height = image.size
    if height < width:
        offset = (width - height) // 2
        image = image.crop((offset, 0, offset + height, height))
    elif width < height:
        offset = (height - width) // 2
        image = image.crop((0, offset, width, offset + width))
    return image.resize((PIE_SIZE, PIE_SIZE), Image.BICUBIC)


# ----------------------------------------------------------------------------------------------------------------
# Pairs


@dataclass(frozen=True)
class _Word:
    start: int  # the core's [start, end) in the prompt without its brackets
    end: int
    marked: bool  # inside PIE-Bench's [] (a word that differs between the prompts)


def _prompt_words(raw: str) -> tuple[str, list[_Word]]:
    """The prompt without its brackets (PIE-Bench's evaluation text) and its words' cores."""
    plain: list[str] = []
    inside: list[bool] = []
    marked = False
    for ch in raw:
        if ch in "[]":
            marked = ch == "["
            continue
        plain.append(ch)
        inside.append(marked)
    text = "".join(plain)
    words = []
    for match in re.finditer(r"\S+", text):
        start, end = match.start(), match.end()
        while start < end and text[start] in EDGE_PUNCTUATION:
            start += 1
        while end > start and text[end - 1] in EDGE_PUNCTUATION:
            end -= 1
        if start < end:
            words.append(_Word(start, end, any(inside[match.start() : match.end()])))
    return text, words


def _occurrences(text: str, words: list[_Word], wanted: Sequence[str]) -> list[int]:
    """Indexes i where words i.. spell ``wanted`` (case-insensitive)."""
    n = len(wanted)
    lowered = [text[w.start : w.end].lower() for w in words]
    wanted = [w.lower() for w in wanted]
    return [i for i in range(len(words) - n + 1) if lowered[i : i + n] == wanted]


def _distance(i: int, n: int, marks: Sequence[int]) -> int:
    """Words between the run [i, i + n) and the nearest marked word (0 when they overlap)."""
    return min(max(0, m - (i + n - 1), i - m) for m in marks)


@dataclass(frozen=True)
class PiePair:
    source: str  # the source phrase: the blend word's source part, as the original prompt writes it
    target: str  # the target phrase: the editing prompt's words from the marked ones to the blend target
    source_prompt: str  # the original prompt, brackets removed, the source phrase marked
    target_prompt: str  # the editing prompt, brackets removed, the target phrase marked


def edit_pair(original_prompt: str, editing_prompt: str, blended_word: str) -> PiePair:
    """The (source phrase, target phrase) pair of one PIE-Bench entry and its marked whole prompts (the module's
    rule); ``PairError`` says why none can be formed."""
    blend = [w.strip(EDGE_PUNCTUATION) for w in str(blended_word).split()]
    blend = [w for w in blend if w]
    if not blend:
        raise PairError("blended_word is empty: the entry names no object to edit")
    if len(blend) < 2:
        raise PairError(f"blended_word {blended_word!r} is one word: it needs a source and a target word")
    source_text, source_words = _prompt_words(original_prompt)
    target_text, target_words = _prompt_words(editing_prompt)
    splits = []
    for k in range(1, len(blend)):
        source_hits = _occurrences(source_text, source_words, blend[:k])
        target_hits = _occurrences(target_text, target_words, blend[k:])
        if source_hits and target_hits:
            splits.append((k, source_hits, target_hits))
    if not splits:
        raise PairError(f"blended_word {blended_word!r} is not a source phrase of the original prompt followed by a "
                        f"target phrase of the editing prompt")
    if len(splits) > 1:
        ways = ["(" + " ".join(blend[:k]) + " | " + " ".join(blend[k:]) + ")" for k, _, _ in splits]
        raise PairError(f"blended_word {blended_word!r} splits into source and target words in more than one way: "
                        f"{', '.join(ways)}")
    k, source_hits, target_hits = splits[0]
    n_source, n_target = k, len(blend) - k

    # The source occurrence: the only one, else the one nearest the original prompt's marked words.
    if len(source_hits) == 1:
        i = source_hits[0]
    else:
        marks = [m for m, w in enumerate(source_words) if w.marked]
        near = sorted(source_hits, key=lambda h: _distance(h, n_source, marks)) if marks else []
        if not near or (len(near) > 1 and _distance(near[0], n_source, marks) == _distance(near[1], n_source, marks)):
            raise PairError(f"the source phrase {' '.join(blend[:k])!r} occurs {len(source_hits)} times in the "
                            f"original prompt and no [] mark tells which one is edited")
        i = near[0]
    source = source_text[source_words[i].start : source_words[i + n_source - 1].end]

    # The target: the shortest run holding the target words and every marked word of the editing prompt.
    marks = [m for m, w in enumerate(target_words) if w.marked]
    spans = [(min([h, *marks]), max([h + n_target - 1, *marks])) for h in target_hits]
    runs = sorted((hi - lo, lo, hi) for lo, hi in spans)
    if len(runs) > 1 and runs[0][0] == runs[1][0]:
        raise PairError(f"the target phrase {' '.join(blend[k:])!r} occurs {len(target_hits)} times in the editing "
                        f"prompt and no [] mark tells which one is edited")
    _, lo, hi = runs[0]
    start, end = target_words[lo].start, target_words[hi].end
    target = target_text[start:end]
    if source == target:
        raise PairError(f"source and target phrase are both {source!r}: the editing prompt marks no word to change")
    bad = sorted({c for c in source if c in PHRASE_FORBIDDEN})
    if bad:
        raise PairError(f"the source phrase {source!r} holds {''.join(bad)!r}, which its mask file name "
                        f"<phrase>_mask.png cannot")
    source_start = source_words[i].start
    return PiePair(source, target, mark_span(source_text, source_start, source_start + len(source)),
                   mark_span(target_text, start, end))


# ----------------------------------------------------------------------------------------------------------------
# The mapping file


@dataclass(frozen=True)
class PieEntry:
    key: str
    fields: Mapping[str, Any]  # the mapping file's entry as published
    type_id: str
    notes: tuple[str, ...] = ()

    @property
    def edit_type(self) -> str | None:
        """The supported PIE-Bench type's name, None for a type ALE-Edit does not edit."""
        return next((t.name for t in PIE_TABLE if t.pie_id == self.type_id), None)


def read_mapping(root: Path) -> tuple[list[PieEntry], list[str]]:
    """Every entry of ``root/mapping_file.json`` with a known editing type, validated, sorted by key; and one line
    per entry left out for an unknown type id. A file that is not PIE-Bench's layout is a ``BenchLayoutError``
    naming the entry and the field."""
    path = root / MAPPING_FILE
    if not path.is_file():
        hint = (f" (it is in {root / 'data'}: set bench.source to that folder)"
                if (root / "data" / MAPPING_FILE).is_file() else "")
        raise BenchLayoutError(f"no {MAPPING_FILE} in the PIE-Bench folder {root}{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchLayoutError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BenchLayoutError(f"{path} must map entry keys to entries, got {type(data).__name__}")
    entries, unknown = [], []
    for key in sorted(data):
        item = data[key]
        where = f"{MAPPING_FILE}: entry {key!r}"
        if not KEY_PATTERN.match(key):
            raise BenchLayoutError(f"{where}: the key cannot name a file")
        if not isinstance(item, dict):
            raise BenchLayoutError(f"{where} is not an object")
        missing = [f for f in REQUIRED_FIELDS if f not in item]
        if missing:
            raise BenchLayoutError(f"{where} has no {', '.join(missing)}")
        for name in ("image_path", "original_prompt", "editing_prompt", "blended_word"):
            if not isinstance(item[name], str):
                raise BenchLayoutError(f"{where}: {name} must be a string, got {item[name]!r}")
        notes = []
        type_id = item["editing_type_id"]
        if isinstance(type_id, int) and not isinstance(type_id, bool):
            notes.append(f"editing_type_id is the number {type_id}, read as {str(type_id)!r}")
            type_id = str(type_id)
        if not isinstance(type_id, str):
            raise BenchLayoutError(f"{where}: editing_type_id must be a string, got {type_id!r}")
        if type_id not in PIE_TYPE_NAMES:
            unknown.append(f"{MAPPING_FILE}: {key}: editing_type_id {type_id!r} is none of PIE-Bench's 0-9")
            continue
        image_path = PurePosixPath(item["image_path"])
        if image_path.is_absolute() or ".." in image_path.parts:
            raise BenchLayoutError(f"{where}: image_path {item['image_path']!r} must be a path inside "
                                   f"{IMAGES_FOLDER}/")
        try:
            decode_mask(item["mask"])
        except BenchLayoutError as exc:
            raise BenchLayoutError(f"{where}: {exc}") from exc
        entries.append(PieEntry(key, item, type_id, tuple(notes)))
    return entries, unknown


def local_source(source: str) -> Path:
    """The local PIE-Bench folder ``bench.source`` names; PIE-Bench is not published in a git repository."""
    if is_git_source(source):
        raise BenchLayoutError(f"bench.source={source!r}: PIE-Bench is not published in a git repository; "
                               f"download it (see the PnPInversion README) and set bench.source to the folder "
                               f"holding {MAPPING_FILE} and {IMAGES_FOLDER}/")
    path = Path(source).expanduser()
    if not path.is_dir():
        raise BenchLayoutError(f"PIE-Bench source {path} is not a folder (set bench.source to the folder holding "
                               f"{MAPPING_FILE} and {IMAGES_FOLDER}/)")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Materialising


def _materialize_entry(root: Path, out: Path, entry: PieEntry) -> dict:
    item = entry.fields
    notes = list(entry.notes)
    src = root / IMAGES_FOLDER / item["image_path"]
    if not src.is_file():
        raise BenchLayoutError(f"{MAPPING_FILE}: entry {entry.key!r}: image {src} not found")
    (width, height), orientation = read_image_size(src)
    oriented, orientation_notes = orientation_entry(src, orientation)
    notes += orientation_notes
    if (width, height) == (PIE_SIZE, PIE_SIZE):
        file = f"images/{entry.key}{src.suffix.lower()}"
        shutil.copyfile(src, out / file)  # byte for byte: load_512 leaves a 512x512 image as it is
    else:
        file = f"images/{entry.key}.png"
        load_512(load_image(src)).save(out / file)
        notes.append(f"image {width}x{height} centre-cropped and resized to {PIE_SIZE}x{PIE_SIZE} (load_512)")
    counts = item["mask"]
    mask = decode_mask(counts)
    past = runs_past_end(counts)
    if past:
        notes.append(f"mask: {past} runs reach past the image's end, cut there (as mask_decode)")
    interior = mask[1:-1, 1:-1]
    if not interior.any():
        notes.append("mask: empty inside the border (the decoded mask is the image border only)")
    elif interior.all():
        notes.append("mask: covers the whole image (no background to score)")
    pie: dict[str, Any] = {name: item.get(name) for name in (*REQUIRED_FIELDS[:-1], "editing_instruction")}
    pie.update(editing_type_id=entry.type_id, edit_type=entry.edit_type, pair=None, prompts=None, error=None)
    objects = {}
    try:
        pair = edit_pair(item["original_prompt"], item["editing_prompt"], item["blended_word"])
    except PairError as exc:
        pie["error"] = str(exc)
        notes.append(f"no edit: {exc}")
    else:
        pie.update(pair=[pair.source, pair.target], prompts=[pair.source_prompt, pair.target_prompt])
        target = out / "masks" / entry.key / f"{pair.source}_mask.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L").save(target)
        objects[pair.source] = str(target.relative_to(out))
    # The annotation mask is binary: its soft weights (compat: authors) are the same file.
    return {"image": entry.key, "file": file, "width": PIE_SIZE, "height": PIE_SIZE, **oriented, "objects": objects,
            "source_objects": dict(objects), "notes": notes, "pie": pie}


def materialize_pie(source: str, out: Path, *, types: Sequence[str], images: Sequence[str] = (),
                    limit: int = 0) -> dict:
    """Materialise the PIE-Bench folder ``source`` into ``out`` and return its manifest: the entries of the edit
    ``types`` (names), then ``images`` (entry keys; all when empty) and the first ``limit`` (0: all), each an image
    at 512x512 under ``images/``, its annotation mask decoded into ``masks/<key>/<source phrase>_mask.png``, its
    pair and marked prompts (or why there is none) and its oddities in the manifest."""
    root = local_source(source)
    entries, unknown = read_mapping(root)
    wanted = [e for e in entries if e.edit_type in set(types)]
    keys = select_images([e.key for e in wanted], images, limit)
    (out / "images").mkdir(parents=True, exist_ok=True)
    chosen = [e for e in wanted if e.key in set(keys)]
    counts: dict[str, int] = {}
    for e in entries:
        name = f"{e.type_id} ({PIE_TYPE_NAMES[e.type_id]})"
        counts[name] = counts.get(name, 0) + 1
    return {"kind": KIND, "images": [_materialize_entry(root, out, e) for e in chosen], "skipped": unknown,
            "types_in_mapping_file": dict(sorted(counts.items()))}


# ----------------------------------------------------------------------------------------------------------------
# The edit table


def pie_edit_table(manifest: Mapping, edit_types: Sequence[str]) -> pd.DataFrame:
    """One row per materialised entry of ``edit_types``: one object (``1/<type>/<key>/0``), its pair, its marked
    whole prompts; an entry without a pair has no phrases and its reason in ``error``."""
    rows = []
    for entry in manifest["images"]:
        pie = entry["pie"]
        if pie["edit_type"] not in edit_types:
            continue
        pair = pie["pair"] or [None, None]
        prompts = pie["prompts"] or [None, None]
        rows.append({"edit_id": f"1/{pie['edit_type']}/{entry['image']}/0", "image": entry["image"],
                     "edit_type": pie["edit_type"], "n_objects": 1, "index": 0,
                     "sources": [pair[0]] if pair[0] else [], "targets": [pair[1]] if pair[1] else [],
                     "source_prompt": prompts[0], "target_prompt": prompts[1], "error": pie["error"]})
    return pd.DataFrame(rows, columns=PIE_EDIT_TABLE_COLUMNS)
