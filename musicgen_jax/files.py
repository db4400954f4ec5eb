"""Writes that are whole or absent: a file is written under a temporary name beside its target, fsynced, then
renamed over it (``os.replace`` is atomic on POSIX), so a process killed at any moment leaves the old file or the
new one under the final name, never a truncated one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None):
    """Yields a file object open on a temporary file beside ``path``; on a clean exit it is fsynced and renamed over
    ``path``, on an exception it is removed. The temporary file is created exclusively (never through someone else's
    file) with the mode ``open()`` would give (0o666 less the umask). ``mode``: "wb", "r+b" (readable too, for
    writers that seek back, such as soundfile) or "w" (text, with ``encoding``)."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.part")
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, kind: str):
    """Yields a new temporary folder beside ``path`` to fill; on a clean exit it is fsynced and renamed onto ``path``
    (missing or empty), or, when ``path`` is an earlier folder of ours, that one is moved aside to a hidden name
    first and removed once the new one is in place (a kill in between leaves it there, under
    ``.NAME.KIND-*.old``; the next write of ``path`` removes such leftovers when ``is_ours`` says so). On an
    exception the temporary folder is removed. ``kind`` names the hidden folders (``export``, ``lora``).

    The caller checks that ``path`` may be replaced (a folder of ours) before calling."""
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    token = secrets.token_hex(4)
    temporary = os.path.join(parent, f".{name}.{kind}-{token}.tmp")
    os.mkdir(temporary)
    try:
        yield temporary
        for root, _, names in os.walk(temporary):
            for entry in names:
                fsync(os.path.join(root, entry))
            fsync(root)
        if os.path.isdir(path) and os.listdir(path):
            old = os.path.join(parent, f".{name}.{kind}-{token}.old")
            os.rename(path, old)
            os.rename(temporary, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, path)  # onto a missing or empty folder
        fsync(parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def folder_leftovers(path: str | os.PathLike, kind: str) -> list[str]:
    """The hidden folders a killed :func:`atomic_folder` of ``path`` left beside it (for the caller to check and
    remove)."""
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(re.escape(f".{name}.{kind}-") + r"[0-9a-f]+\.(tmp|old)$")
    return [os.path.join(parent, e) for e in os.listdir(parent) if pattern.match(e)]


def has_marker(folder: str | os.PathLike, marker: str, fmt: str) -> bool:
    """Whether ``folder`` holds the JSON file ``marker`` whose ``"format"`` is ``fmt``: how a folder we wrote (an
    export, a LoRA folder, or what a killed write of one left) is told from anyone else's."""
    try:
        with open(os.path.join(folder, marker), encoding="utf-8") as f:
            return json.load(f).get("format") == fmt
    except (OSError, ValueError, AttributeError):
        return False


def fsync(path: str) -> None:
    """fsyncs a file or a folder (its entries) by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
