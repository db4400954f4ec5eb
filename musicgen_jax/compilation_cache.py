"""A persistent XLA compilation cache, on by default for the ``musicgen-jax`` command.

What is cached: the compiled XLA executables of every program jax compiles (T5, prefill, the scanned decode
steps, EnCodec, training steps), one file per program. Each entry's key is a hash of the lowered program, the
compile options, the jax/jaxlib version and the backend and devices, so a changed model, shape, flag or jax
upgrade simply misses and compiles afresh: a stale entry is never used. Tracing and lowering still run on every
start; a hit skips only XLA's backend compilation, which is most of the compile time.

Where: ``$MUSICGEN_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/musicgen-jax/xla``, else ``~/.cache/musicgen-jax/xla``.
If jax's own ``jax_compilation_cache_dir`` is already set (``JAX_COMPILATION_CACHE_DIR`` or
``jax.config.update``), that folder is used instead and nothing is changed.

How to turn it off: ``musicgen-jax generate --no-compilation-cache ...`` or ``MUSICGEN_JAX_COMPILATION_CACHE=0``
(also ``false``, ``off``, ``no``). A folder that cannot be created or written leaves the cache off, silently.

The folder is safe to delete at any time (the next run compiles and fills it again); it grows by one entry per
distinct program. Like any jax compilation cache it is trusted code: do not point it at a folder others can write to.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile

ENV_DIR = "MUSICGEN_JAX_CACHE_DIR"
ENV_SWITCH = "MUSICGEN_JAX_COMPILATION_CACHE"
_OFF = {"0", "false", "off", "no"}


def default_dir() -> str:
    """The cache folder :func:`enable` uses when given none: ``$MUSICGEN_JAX_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/musicgen-jax/xla``, else ``~/.cache/musicgen-jax/xla``."""
    if os.environ.get(ENV_DIR):
        return os.path.expanduser(os.environ[ENV_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "musicgen-jax", "xla")


def _writable_folder(path: str) -> bool:
    """Creates ``path`` if needed and probes it with a file: jax reports a failed cache write as a warning on every
    compile, so an unusable folder must be found here, once."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError:
        return False
    return True


def enable(path: str | None = None) -> str | None:
    """Turns on jax's persistent compilation cache in ``path`` (default :func:`default_dir`) for this process.

    Every program is cached, however fast it compiled or small it is. Returns the folder in use, or None when the
    cache is off: ``MUSICGEN_JAX_COMPILATION_CACHE`` is ``0``/``false``/``off``/``no``, jax's
    ``jax_enable_compilation_cache`` is off, or the folder cannot be created or written. A folder the user already
    gave jax (``jax_compilation_cache_dir``) is kept and returned. Calling it again changes nothing.
    """
    import jax

    if _refused[0] or os.environ.get(ENV_SWITCH, "").strip().lower() in _OFF:
        return None
    if not jax.config.jax_enable_compilation_cache:
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    folder = os.path.abspath(path or default_dir())
    if not _writable_folder(folder):
        return None
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor, and no backend override
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder


_refused = [False]  # set by :func:`refused` (the CLI's --no-compilation-cache)


@contextlib.contextmanager
def refused():
    """Inside the block, :func:`enable` (also the one ``from_pretrained`` calls) turns nothing on: what the CLI's
    ``--no-compilation-cache`` runs its subcommand under. A cache already on stays on."""
    before, _refused[0] = _refused[0], True
    try:
        yield
    finally:
        _refused[0] = before


def add_argument(parser: argparse.ArgumentParser) -> None:
    """Adds ``--no-compilation-cache`` (stored as ``no_compilation_cache``) to an argparse (sub)parser."""
    parser.add_argument(
        "--no-compilation-cache",
        action="store_true",
        help=(
            f"turn off the persistent compilation cache folder (default ${ENV_DIR}, else "
            f"$XDG_CACHE_HOME/musicgen-jax/xla or ~/.cache/musicgen-jax/xla); {ENV_SWITCH}=0 does the same"
        ),
    )
