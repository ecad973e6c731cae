"""Atomic file writes: a reader (or an interrupted run) never sees half a file, and a write that fails (a full
disk, a read-only place) leaves nothing behind and is an ``OutputWriteError`` naming the file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .paths import image_format


PROC_STATUS = "/proc/self/status"


def current_umask() -> int:
    """The process's umask, read without changing it where the kernel shows it (Linux >= 4.7).

    Elsewhere it is set to 0o077 and restored at once: a file another thread created in between would be made
    0o600; the callers here (the stages, the CLI) write from one thread.
    """
    try:
        with open(PROC_STATUS, encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open`` gives a new file: 0o666 less the umask (0o644 under the usual 0o022)."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0o777 less the umask (0o755 under the usual 0o022)."""
    return 0o777 & ~current_umask()


class OutputWriteError(OSError):
    """An output that could not be written (``errno`` kept: ENOSPC for a full disk); nothing of it was left. Its
    message is one line naming the file and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_error(path: str | os.PathLike, exc: OSError) -> OutputWriteError:
    """``exc``, raised while writing ``path``, as an ``OutputWriteError`` naming the file and the reason."""
    if isinstance(exc, OutputWriteError):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = ": the disk is full (free some space, or write elsewhere)" if exc.errno == errno.ENOSPC else ""
    return OutputWriteError(exc.errno, f"cannot write {path}: {reason}{hint}; nothing of it was left")


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The file ends with the mode a plain ``open`` would give it (``file_mode``), not mkstemp's 0o600: results are
    shared with colleagues and web servers. Missing parent folders are made with the usual mkdir mode. An
    ``OSError`` on the way (the body's writes included) is an ``OutputWriteError``; the temporary file is removed.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name stays under the file system's 255 bytes whatever the final name's length.
        prefix = "." + path.name.encode()[:200].decode(errors="ignore") + "."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=path.suffix or ".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_image(path: str | os.PathLike, image) -> None:
    """Save ``image`` in the format its extension names (``paths.image_extensions``); an unknown extension is an
    ``OutputPathError`` listing the known ones, raised before anything is written."""
    path = Path(path)
    pil_format = image_format(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=pil_format)


def replace_folder(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Replace ``dst`` by ``src`` (a finished temporary folder) in as few steps as the filesystem allows.

    ``src`` gets the mode ``mkdir`` would have given ``dst`` (a ``mkdtemp`` folder is 0o700, unreadable to others).
    """
    src, dst = Path(src), Path(dst)
    os.chmod(src, folder_mode())
    old = dst.with_name(f".{dst.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    if old.exists():
        shutil.rmtree(old)


@contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target`` (a whole output folder
    appears at once or not at all)."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise write_error(target, exc) from exc
    try:
        yield tmp
        try:
            replace_folder(tmp, target)
        except OSError as exc:
            raise write_error(target, exc) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
