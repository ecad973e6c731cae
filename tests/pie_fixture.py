"""A small PIE-Bench in its published layout (cure-lab/PnPInversion README.md): ``mapping_file.json`` and
``annotation_images/``, with run-length masks, bracketed prompts, ``editing_type_id`` strings and "source target"
blend words. Written into a test's folder from synthetic images; PIE-Bench itself is not redistributable."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 512

# key, type id, folder, original prompt, editing prompt, blended word, mask box (top, left, bottom, right), image size
ENTRIES = [
    ("111000000000", "1", "1_change_object_80/1_artificial/1_animal", "a [cat] sitting on a wooden bench",
     "a [dog] sitting on a wooden bench", "cat dog", (120, 160, 360, 400), (SIZE, SIZE)),
    ("112000000001", "1", "1_change_object_80/1_artificial/1_animal", "a [bird] on a branch",
     "a [parrot] on a branch", "", (60, 200, 220, 330), (SIZE, SIZE)),  # no blend word: no pair can be formed
    ("411000000000", "4", "4_change_attribute_content_40/1_artificial/2_human", "a [smiling] man in a blue shirt",
     "an [angry] man in a blue shirt", "man man", (40, 150, 300, 360), (640, SIZE)),  # wider: load_512 crops it
    ("611000000000", "6", "6_change_attribute_color_40/2_natural/3_indoor", "a [red] heart on a white table",
     "a [pink] heart on a white table", "heart heart", (200, 200, 330, 330), (SIZE, SIZE)),
    ("711000000000", "7", "7_change_attribute_material_40/2_natural/3_indoor", "a [wooden] table in a kitchen",
     "a [glass] table in a kitchen", "table table", (256, 64, 460, 448), (SIZE, SIZE)),
    ("211000000000", "2", "2_add_object_80/2_natural/4_outdoor", "a cat on the grass",
     "a cat [and a dog] on the grass", "dog dog", (100, 100, 200, 200), (SIZE, SIZE)),  # add object: unsupported
]
# The pairs the entries give (the module's rule in ale_edit/bench/pie.py), None for the one without.
PAIRS = {"111000000000": ("cat", "dog"), "112000000001": None, "411000000000": ("man", "angry man"),
         "611000000000": ("heart", "pink heart"), "711000000000": ("table", "glass table")}


def encode_mask(mask: np.ndarray) -> list[int]:
    """PIE-Bench's run-length counts of a bool mask: the absolute (start, length) of each run of the row-major
    pixels, flattened."""
    flat = np.concatenate([[False], mask.reshape(-1), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def box_mask(top, left, bottom, right, shape=(SIZE, SIZE)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def synthetic_image(seed: int, size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """A smooth background with a brighter object where the mask is (in the 512x512 frame)."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 200 // width), (y * 200 // height), np.full_like(x, 90)], -1)
    pixels = np.clip(base + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8)
    offset = (width - SIZE) // 2  # the object where load_512's centre crop puts the mask
    top, left, bottom, right = box
    pixels[top:bottom, left + offset:right + offset] = rng.integers(150, 255, 3, dtype=np.uint8)
    return Image.fromarray(pixels)


def write_pie_bench(root: Path) -> Path:
    """Write the fixture into ``root`` and return it."""
    mapping = {}
    for seed, (key, type_id, folder, original, editing, blend, box, size) in enumerate(ENTRIES):
        path = f"{folder}/{key}.jpg"
        (root / "annotation_images" / folder).mkdir(parents=True, exist_ok=True)
        synthetic_image(seed, size, box).save(root / "annotation_images" / path, quality=95)
        mapping[key] = {"image_path": path, "original_prompt": original, "editing_prompt": editing,
                        "editing_instruction": f"Change the {blend.split(' ')[0] or 'object'}",
                        "editing_type_id": type_id, "blended_word": blend, "mask": encode_mask(box_mask(*box))}
    (root / "mapping_file.json").write_text(json.dumps(mapping, indent=1))
    return root
