"""Materialising ALE-Bench into a clean folder: validated images, binary masks, the authors' instances, a manifest.

The source is a local folder in ALE-Bench's layout, or a git repository (the authors' ``ml-postech/ALE``, pinned
to a commit) holding one in a sub-folder. What comes out is regular: every image readable, every mask an 8-bit
0/255 PNG of its image's size named ``<phrase>_mask.png``, every oddity of the source written in the manifest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from ..io import IMAGE_UNREADABLE, mask_from_image, orientation_note, oriented_image, to_8bit
from .dataset import BenchLayoutError, image_path, list_images, mask_phrase

AUTHORS_REPOSITORY = "https://github.com/ml-postech/ALE.git"
AUTHORS_COMMIT = "f43ce869e6430f21a5a795aec22922565a1a1bee"
AUTHORS_SUBDIR = "ale_bench"


# Transports a bench.source may use: ``ext::`` and ``fd::`` (and any remote helper) can run arbitrary commands.
GIT_PROTOCOLS = ("https", "http", "ssh", "git", "file")
GIT_TIMEOUT_S = 600


class BenchSourceError(BenchLayoutError):
    """``bench.source``, ``bench.rev`` or ``bench.subdir`` is refused, or the source cannot be fetched."""


def is_git_source(source: str) -> bool:
    return source.endswith(".git") or source.startswith(("https://", "http://", "git@", "ssh://"))


def _refuse_option_like(key: str, value: str, hint: str = "") -> None:
    """A value git would read as an option (``--upload-pack=...``, ``-c ...``, ``--help``) is refused by name."""
    if value.startswith("-"):
        raise BenchSourceError(f"{key}={value!r} starts with '-', which git would read as an option; refused{hint}")


def _relative_subdir(subdir: str) -> Path:
    """``bench.subdir`` as a path that stays inside the clone as written: relative, without ``..``."""
    path = Path(subdir)
    if path.is_absolute() or ".." in path.parts:
        raise BenchSourceError(f"bench.subdir={subdir!r} must be a folder inside the repository (relative, "
                               f"without '..')")
    return path


def _git(*args: str) -> str:
    """Run git with no prompt and only ``GIT_PROTOCOLS``; its stdout, or ``CalledProcessError`` with its stderr."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ALLOW_PROTOCOL=":".join(GIT_PROTOCOLS))
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                          stdin=subprocess.DEVNULL, env=env).stdout.strip()


def _resolve_commit(clone: Path, rev: str) -> str:
    """The commit id ``rev`` names in ``clone``: a commit, tag or local branch, else a branch of the origin.

    ``--end-of-options`` keeps git from reading ``rev`` as an option even if the check in ``bench_source`` is
    bypassed; the id (hex only) is what reaches ``git checkout``.
    """
    for candidate in (rev, f"refs/remotes/origin/{rev}"):
        try:
            return _git("-C", str(clone), "rev-parse", "--verify", "--quiet", "--end-of-options",
                        f"{candidate}^{{commit}}")
        except subprocess.CalledProcessError:
            continue
    raise BenchSourceError(f"bench.rev={rev!r} is not a commit, tag or branch of the benchmark repository")


def _refuse_escapes(clone: Path, folder: Path, subdir: str) -> None:
    """``folder`` and every symbolic link under it must resolve inside ``clone``: a link to ``/etc`` or ``~`` would
    have the bench stage read, and copy into its output, files that are not the repository's."""
    root = clone.resolve()
    if not folder.resolve().is_relative_to(root):
        raise BenchSourceError(f"bench.subdir={subdir!r} leads outside the repository (to {folder.resolve()}) "
                               f"through a symbolic link; refused")
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(parent) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise BenchSourceError(f"{path.relative_to(clone)} in the benchmark repository is a symbolic link "
                                       f"outside it (to {os.readlink(path)}); refused")


@contextmanager
def bench_source(source: str, rev: str | None = None, subdir: str = AUTHORS_SUBDIR) -> Iterator[Path]:
    """Yield the ALE-Bench folder of ``source``: a local folder as it is, or a git repository checked out at
    ``rev`` into a temporary folder (``subdir`` inside it).

    Refused with ``BenchSourceError`` before git runs: a source or rev starting with ``-`` (git would read it as
    an option), a subdir that is absolute or has ``..``; after the checkout: a subdir or a symbolic link under it
    that resolves outside the clone. git itself gets ``--`` before the source, no terminal prompt, and only the
    transports in ``GIT_PROTOCOLS``.
    """
    _refuse_option_like("bench.source", source, f" (a local folder of that name can be given as ./{source})")
    if not is_git_source(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise BenchLayoutError(f"benchmark source {path} is not a folder (set bench.source to a local copy of "
                                   f"ALE-Bench, e.g. ../shared/ale_bench, or to the authors' git repository)")
        yield path
        return
    rev = "HEAD" if rev is None else str(rev)  # params.yaml gives an unquoted all-digit short id as a number
    _refuse_option_like("bench.rev", rev)
    relative = _relative_subdir(subdir)
    with tempfile.TemporaryDirectory(prefix="ale_bench_git_") as tmp:
        clone = Path(tmp)
        try:
            _git("clone", "--quiet", "--filter=blob:none", "--no-checkout", "--", source, str(clone))
            commit = _resolve_commit(clone, rev)
            _git("-C", str(clone), "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise BenchSourceError(
                f"cannot fetch ALE-Bench from {source} at {rev}: {detail.strip()}. Offline, point "
                f"bench.source at a local copy in ALE-Bench's layout (images/, masks/, prompts/), e.g. "
                f"`dvc exp run -S bench.source=../shared/ale_bench`."
            ) from exc
        path = clone / relative
        _refuse_escapes(clone, path, subdir)
        if not path.is_dir():
            raise BenchLayoutError(f"{source} at {rev} has no folder {subdir!r}")
        yield path


def select_images(available: Sequence[str], names: Sequence[str] = (), limit: int = 0) -> list[str]:
    """The images to keep: ``names`` (all when empty; each must exist), then the first ``limit`` (0: all)."""
    missing = sorted(set(names) - set(available))
    if missing:
        raise BenchLayoutError(f"images {missing} are not in the benchmark (it has {len(available)}: "
                               f"{', '.join(available[:5])}, ...)")
    chosen = [n for n in available if not names or n in names]
    return chosen[:limit] if limit else chosen


def read_image_size(path: Path) -> tuple[tuple[int, int], int]:
    """The (width, height) a benchmark image displays at and its EXIF orientation (1: as stored; the size is the
    turned one), once its pixels are known to have an 8-bit reading. A file PIL cannot read, or one over the pixel
    limit (``io.ImageTooLargeError``), is an error naming it."""
    with oriented_image(path, "benchmark image", unreadable=IMAGE_UNREADABLE) as (im, orientation):
        to_8bit(im, path)  # an unsupported mode or range fails here, naming the file, not in a later stage
        return im.size, orientation


def orientation_entry(path: Path, orientation: int) -> tuple[dict, list[str]]:
    """A manifest entry's record of an applied EXIF orientation: ``{"exif_orientation": n}`` and its note; nothing
    for a picture stored as it displays (so such manifests stay as they were)."""
    note = orientation_note(path.name, orientation)
    return ({"exif_orientation": orientation}, [note]) if note else ({}, [])


def materialize(source_root: Path, out: Path, images: Sequence[str]) -> dict:
    """Copy ``images`` with their masks and the instances under ``source_root`` into ``out``; return the manifest.

    Images are copied byte for byte. Masks are binarised at 0.5 (RGBA and antialiased ones occur) and resized
    (nearest) to their image's size when they differ; stray files are skipped. Each such event is a note in the
    manifest. An unreadable image or mask is an error naming the file. The source's own masks are kept too,
    byte for byte under ``source_masks/`` (manifest ``source_objects``): soft-weight scoring reads their
    antialiased edges, as the authors' evaluation does.
    """
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries, skipped = [], []
    for name in images:
        src = image_path(source_root, name)
        (width, height), orientation = read_image_size(src)
        shutil.copyfile(src, out / "images" / src.name)  # byte for byte: every reader applies its EXIF orientation
        oriented, notes = orientation_entry(src, orientation)
        objects, source_objects = {}, {}
        mask_dir = source_root / "masks" / name
        if not mask_dir.is_dir():
            notes.append("no mask folder")
        for path in sorted(mask_dir.iterdir()) if mask_dir.is_dir() else []:
            if path.name.startswith(".") or not path.is_file() or path.suffix.lower() != ".png":
                skipped.append(str(path.relative_to(source_root)))
                continue
            phrase = mask_phrase(path.name)
            with oriented_image(path, "mask") as (im, mask_orientation):
                mode, size = im.mode, im.size
                grey_levels = len(np.unique(np.asarray(to_8bit(im, path).convert("RGB").convert("L"))))
                if size != (width, height):
                    notes.append(f"{path.name}: {size[0]}x{size[1]} resized to {width}x{height} (nearest)")
                    warnings.warn(f"{name}/{path.name} is {size}, its image {(width, height)}: resized")
                    im = im.resize((width, height), Image.NEAREST)
                mask = mask_from_image(im, path)
            notes += orientation_entry(path, mask_orientation)[1]
            if mode != "L" or grey_levels > 2:
                notes.append(f"{path.name}: mode {mode}, {grey_levels} grey levels, binarised at 0.5")
            if not mask.any():
                notes.append(f"{path.name}: empty mask, skipped")
                continue
            if phrase in objects:
                raise BenchLayoutError(f"two masks for {phrase!r} in {mask_dir}")
            target = out / "masks" / name / f"{phrase}_mask.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L").save(target)
            objects[phrase] = str(target.relative_to(out))
            original = out / "source_masks" / name / path.name
            original.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, original)
            source_objects[phrase] = str(original.relative_to(out))
        entries.append({"image": name, "file": f"images/{src.name}", "width": width, "height": height,
                        **oriented, "objects": objects, "source_objects": source_objects, "notes": notes})
    prompts = source_root / "prompts"
    if prompts.is_dir():
        for path in sorted(prompts.glob("*/*/*_prompts.json")):
            image = path.name[: -len("_prompts.json")]
            if image in images:
                target = out / "prompts" / path.relative_to(prompts)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    return {"images": entries, "skipped": skipped}


def available_images(source_root: Path) -> list[str]:
    return list_images(source_root)


def manifest_kind(manifest: dict) -> str:
    """The benchmark a manifest holds: ``"pie"`` (PIE-Bench), or ``"ale"`` (ALE-Bench's manifest has no kind)."""
    return manifest.get("kind", "ale")


def load_objects(manifest: dict) -> dict[str, list[str]]:
    """``{image: [phrase, ...]}`` from a manifest."""
    return {e["image"]: sorted(e["objects"]) for e in manifest["images"]}


def manifest_entry(manifest: dict, image: str) -> dict:
    for e in manifest["images"]:
        if e["image"] == image:
            return e
    raise BenchLayoutError(f"image {image!r} is not in the benchmark manifest")
