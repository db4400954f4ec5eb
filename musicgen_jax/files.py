"""Writes that are whole or absent: a file is written under a temporary name beside its target, fsynced, then
renamed over it (``os.replace`` is atomic on POSIX), so a process killed at any moment leaves the old file or the
new one under the final name, never a truncated one."""

from __future__ import annotations

import contextlib
import os
import secrets


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
