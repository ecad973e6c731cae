"""Output paths checked before any work, and file names made from phrases.

An edit takes minutes; an output path that cannot be written (an extension PIL cannot save, a folder under
``/proc``) must fail before it starts, not after. Phrases become file names (``<phrase>_mask.png``): they must not
reach another folder, hide the file, or make two phrases share one file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import tempfile
import unicodedata
from pathlib import Path

from PIL import Image

from .errors import EditInputError

# Formats that keep an 8-bit RGB or L picture at its full size and that ``load_image`` reads back. Left out on
# purpose: GIF (256 colours), ICO/ICNS (icon sizes), PPM/SGI (their extensions name sub-formats the file would not
# be), PDF/EPS (not read back), and formats PIL only has stubs for.
IMAGE_OUTPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "JPEG2000", "AVIF")
NAME_MAX_BYTES = 255  # NAME_MAX of Linux, macOS and Windows file systems (in UTF-8 bytes on Linux)
DIGEST_HEX_CHARS = 16  # 64 bits of SHA-256: no two phrases of a benchmark share a name in practice
# A name that ends like a hashed one: a phrase that does is hashed too, so an unchanged phrase never takes the
# name of a changed one.
_HASHED_ENDING = re.compile(rf"-[0-9a-f]{{{DIGEST_HEX_CHARS}}}$")
# "_": ALE-Bench reads a mask's phrase up to the first "_" of its file name, so a phrase keeps none.
_REPLACED_CHARACTERS = ("/", "\\", "_")
REPLACEMENT = "-"


class OutputPathError(EditInputError):
    """An output path that cannot be written: unknown image extension, no writable folder, name too long."""


def _saves_and_reads_back(image_format: str) -> bool:
    """Whether this build of PIL writes ``image_format`` for RGB and L and reads it back (codecs are optional)."""
    for mode in ("RGB", "L"):
        buffer = io.BytesIO()
        try:
            Image.new(mode, (2, 2)).save(buffer, format=image_format)
            buffer.seek(0)
            with Image.open(buffer) as reread:
                reread.load()
        except Exception:  # noqa: BLE001 - any failure (missing codec, unsupported mode) means "cannot use it"
            return False
    return True


@functools.cache
def image_extensions() -> dict[str, str]:
    """``{".png": "PNG", ".jpg": "JPEG", ...}``: the extensions PIL registers for ``IMAGE_OUTPUT_FORMATS`` that
    this installation can write and read back, lower case."""
    Image.init()
    usable = {f for f in IMAGE_OUTPUT_FORMATS if f in Image.SAVE and _saves_and_reads_back(f)}
    return {ext.lower(): f for ext, f in sorted(Image.registered_extensions().items()) if f in usable}


def image_format(path: str | os.PathLike) -> str:
    """The PIL format to save ``path`` in, from its extension; ``OutputPathError`` listing the extensions."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in image_extensions():
        shown = repr(path.suffix) if path.suffix else "no extension"
        raise OutputPathError(f"{path}: {shown} is not an image extension this can write; use one of "
                              f"{', '.join(image_extensions())}")
    return image_extensions()[suffix]


def check_output_image_path(path: str | os.PathLike) -> Path:
    """Check, before any work, that an image can be written at ``path``; return it as a ``Path``.

    Refused with ``OutputPathError`` naming the problem: an extension not in ``image_extensions``, a name over
    255 bytes, a path that is a folder, an ancestor that is a file, a folder where no file can be created
    (read-only, no permission, ``/proc``). Nothing is left behind: missing folders are not made here (the write
    makes them); the nearest existing one is tried by creating and removing a temporary file in it.
    """
    path = Path(path)
    image_format(path)
    if len(os.fsencode(path.name)) > NAME_MAX_BYTES:
        raise OutputPathError(f"{path}: the file name is {len(os.fsencode(path.name))} bytes, over the "
                              f"{NAME_MAX_BYTES} a file system allows")
    if path.is_dir():
        raise OutputPathError(f"{path} is a folder, not an image file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"{path}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ale-edit-write-check.", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot create a file in {folder}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)
    return path


def _replaced(character: str) -> bool:
    # Categories C* (control, format such as a right-to-left override, surrogate, private, unassigned) and line
    # and paragraph separators: invisible or unprintable in a file name, some not even encodable.
    category = unicodedata.category(character)
    return character in _REPLACED_CHARACTERS or category[0] == "C" or category in ("Zl", "Zp")


def safe_file_name(phrase: str, suffix: str = "") -> str:
    """A file name for ``phrase``: ``<phrase><suffix>`` when that is safe, else a sanitised, hashed one.

    Path separators, ``_`` (see ``_REPLACED_CHARACTERS``), control and invisible characters and leading dots
    (hidden files, ``..``) become ``-``; then, if anything was replaced, the name would pass 255 UTF-8 bytes
    (the stem is cut on a character boundary), or the phrase itself ends like a hashed name, ``-`` and 16 hex
    digits of the phrase's SHA-256 are appended to the stem. Unchanged phrases keep their exact name
    (``"t-shirt", "_mask.png"`` -> ``t-shirt_mask.png``); two different phrases get two different names (up to
    a 64-bit hash collision). An empty phrase is an ``EditInputError``.
    """
    if not phrase:
        raise EditInputError("an empty phrase has no file name")
    stem = "".join(REPLACEMENT if _replaced(c) else c for c in phrase)
    stripped = stem.lstrip(".")
    stem = REPLACEMENT * (len(stem) - len(stripped)) + stripped
    fits = len((stem + suffix).encode("utf-8")) <= NAME_MAX_BYTES
    if stem == phrase and fits and not _HASHED_ENDING.search(phrase):
        return phrase + suffix
    digest = hashlib.sha256(phrase.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_HEX_CHARS]
    budget = NAME_MAX_BYTES - len(suffix.encode("utf-8")) - len(REPLACEMENT) - DIGEST_HEX_CHARS
    if budget < 1:
        raise ValueError(f"suffix {suffix!r} leaves no room for a file name")
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
    return f"{stem}{REPLACEMENT}{digest}{suffix}"
