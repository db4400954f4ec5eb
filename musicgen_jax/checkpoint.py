"""Converted checkpoints: the parameter tree saved with orbax, beside HF's json and tokenizer files, replaced
atomically.

Layout of a converted directory (format version 2)::

    musicgen_jax.json          the pointer: {"format": "musicgen-jax", "version": 2, "current": "musicgen-jax-v3"}
    musicgen-jax-v3/           one complete version, self-contained:
        musicgen_jax.json      {"format", "version": 2, "kernels": 2, "dtype": [...], "files": {path: size}}, last
        config.json            the HF config (read with the same strict parser as a HF checkpoint)
        generation_config.json generation defaults
        tokenizer / preprocessor files, copied from the source when present
        params/                the parameter tree (orbax ``StandardCheckpointer``), exactly our module layout
    anything else              the user's: never read, written or removed

Why a pointer: a folder cannot be swapped in one step on Linux, but a file can (``os.replace``). A save writes a
new version folder beside the old one, fsyncs it, then switches the pointer, then removes the old version. A
process killed at any moment leaves the old checkpoint or the new one, each loadable; leftovers of a killed save are
recognised by their owner stamp and removed by the next save. Loading follows the pointer (:func:`resolve`).
Version-1 directories (``params/`` and the json files at the top, written by musicgen-jax 0.1) still load, and so do
saves from before the decoder stored its kernels ``(out, in)`` (no ``"kernels"`` in the marker): their kernels are
transposed once at load.

Parameters are saved uncompressed, one zarr array (one chunk file) per leaf, without orbax's OCDBT container: each
chunk file is then the array's bytes in C order, and :func:`restore` maps it into memory (``np.memmap``,
copy-on-write) instead of reading it; on CPU ``jax.device_put`` adopts an aligned host buffer without a copy, so the
weights are on the device as soon as they are mapped (pages are read on first use, as HF's safetensors loading does).
Any other layout (older, compressed or OCDBT saves) is read by orbax. Both read straight into the requested dtype
and, when given, straight into a sharding (no host copy of the whole tree first). Before anything is read, every
file the version lists is checked for presence and size, so a truncated or missing file is reported by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time

import jax
import numpy as np

from musicgen_jax.config import ConfigError
from musicgen_jax.files import fsync

FORMAT = "musicgen-jax"
MARKER = "musicgen_jax.json"
VERSION_PREFIX = "musicgen-jax-v"
OWNER_STAMP = ".musicgen-jax-owner"  # the first file of every version folder: what makes a leftover ours
SIDE_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "preprocessor_config.json",
    "processor_config.json",  # transformers 5's processor.save_pretrained nests the feature extractor here
)
_VERSION_RE = re.compile(re.escape(VERSION_PREFIX) + r"(\d+)$")
# Test-only hook: the named point of :func:`save` at which the process SIGKILLs itself (tests/test_checkpoint.py).
KILL_AT_ENV = "MUSICGEN_JAX_TEST_KILL_AT"
SAVE_POINTS = (
    "version-created",
    "side-files-written",
    "params-written",
    "version-complete",
    "pointer-written",
    "pointer-switched",
    "old-removed",
)


class CheckpointError(ConfigError):
    """A checkpoint directory that cannot be read or written as asked; the message names the file."""


def _reached(point: str) -> None:
    if os.environ.get(KILL_AT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def read_marker(path: str | os.PathLike) -> dict | None:
    """The ``musicgen_jax.json`` of directory ``path``, or None when there is none; a marker that is not ours (bad
    JSON, another format or version) is a :class:`CheckpointError` naming the file."""
    file = os.path.join(os.fspath(path), MARKER)
    if not os.path.isfile(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{file}: not a musicgen-jax marker ({type(e).__name__}: {e})") from None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT or marker.get("version") not in (1, 2):
        raise CheckpointError(f"{file}: not a musicgen-jax v1/v2 marker ({str(marker)[:120]})")
    return marker


def is_converted(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a converted directory (a pointer, a version folder, or the version-1 layout)."""
    return os.path.isfile(os.path.join(os.fspath(path), MARKER))


def resolve(path: str | os.PathLike) -> str:
    """The folder holding the files of the checkpoint at ``path``: the current version of a converted directory,
    else ``path`` itself (a version-1 directory, a version folder, or any other directory)."""
    path = os.fspath(path)
    marker = read_marker(path)
    if marker is None or "current" not in marker:
        return path
    current = marker["current"]
    if not isinstance(current, str) or not _VERSION_RE.match(current):
        raise CheckpointError(f"{os.path.join(path, MARKER)}: bad 'current' entry {current!r}")
    folder = os.path.join(path, current)
    if read_marker(folder) is None:
        raise CheckpointError(f"{os.path.join(path, MARKER)}: points to {current}, which is missing or incomplete")
    return folder


def _entries_ours(dst: str, marker: dict | None) -> set[str]:
    """The names in ``dst`` that a save wrote (and may replace or remove)."""
    ours = {MARKER} if marker is not None else set()
    for name in os.listdir(dst):
        folder = os.path.join(dst, name)
        if _VERSION_RE.match(name) and os.path.isdir(folder):
            if os.path.isfile(os.path.join(folder, OWNER_STAMP)) or not os.listdir(folder):
                ours.add(name)
        elif name.startswith(f".{MARKER}.tmp-"):
            ours.add(name)
    return ours


def check_destination(dst: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuses a destination a save must not write to: a file, a folder holding a marker that is not ours, or a
    non-empty folder that is not a converted checkpoint (unless ``overwrite``; even then nothing in it is removed)."""
    dst = os.fspath(dst)
    if not os.path.exists(dst):
        return
    if not os.path.isdir(dst):
        raise CheckpointError(f"{dst}: exists and is not a directory")
    marker = read_marker(dst)  # a foreign musicgen_jax.json is an error even with overwrite: we would replace it
    foreign = set(os.listdir(dst)) - _entries_ours(dst, marker)
    if marker is None and foreign and not overwrite:
        raise CheckpointError(
            f"{dst}: not empty and not a musicgen-jax checkpoint ({len(foreign)} entries such as "
            f"{sorted(foreign)[0]!r}); choose an empty or new folder, or pass --overwrite (overwrite=True) to add "
            "the checkpoint beside them (nothing of theirs is removed)"
        )


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _listing(folder: str) -> dict[str, int]:
    """Every file under ``folder``: relative path -> size in bytes."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            files[os.path.relpath(full, folder)] = os.path.getsize(full)
    return files


def _sync_tree(folder: str) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            fsync(os.path.join(root, name))
        fsync(root)


def save(
    dst: str | os.PathLike,
    params,
    config_json: dict,
    generation_json: dict | None,
    copy_from=None,
    overwrite: bool = False,
) -> str:
    """Writes ``params`` (any pytree of arrays) with orbax and the json/tokenizer files as a new version of ``dst``,
    then switches to it atomically; returns ``dst``. See the module docstring for the layout and the guarantees.

    Raises :class:`CheckpointError` when ``dst`` is a file, or a non-empty folder that is not a converted checkpoint
    (unless ``overwrite``).
    """
    import orbax.checkpoint as ocp

    dst = os.path.abspath(os.fspath(dst))
    check_destination(dst, overwrite)
    os.makedirs(dst, exist_ok=True)
    old_marker = read_marker(dst)
    source = None if copy_from is None else os.path.abspath(resolve(copy_from))

    # 1. A fresh version folder, stamped as ours before anything else goes in.
    numbers = [int(m.group(1)) for m in map(_VERSION_RE.match, os.listdir(dst)) if m]
    number = max(numbers, default=0) + 1
    while True:
        name = f"{VERSION_PREFIX}{number}"
        folder = os.path.join(dst, name)
        try:
            os.mkdir(folder)
            break
        except FileExistsError:  # another save in the same folder got there first
            number += 1
    with open(os.path.join(folder, OWNER_STAMP), "w") as f:
        f.write("written by musicgen-jax; removed with its version\n")
    _reached("version-created")

    # 2. Side files and json, then the parameters.
    if source is not None:
        for side in SIDE_FILES:
            if os.path.isfile(os.path.join(source, side)):
                shutil.copyfile(os.path.join(source, side), os.path.join(folder, side))
    _write_json(os.path.join(folder, "config.json"), config_json)
    if generation_json is not None:
        _write_json(os.path.join(folder, "generation_config.json"), generation_json)
    _reached("side-files-written")
    # Uncompressed: orbax's default zstd saves ~10% of float32 weights, but each array is one chunk decompressed
    # on one core, and the small model's restore took 4.8 s instead of 1.9 s (AMD EPYC, warm page cache). No OCDBT:
    # one plain chunk file per array, which restore() maps into memory (benchmarks/NOTES.md #13). Older, compressed
    # or OCDBT checkpoints restore as before (orbax reads each array's metadata).
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False, use_ocdbt=False))
    try:
        with _absl_quiet():  # orbax warns that it found no OCDBT files to merge: we asked for none
            checkpointer.save(os.path.join(folder, "params"), args=ocp.args.PyTreeSave(params))
    finally:
        checkpointer.close()
    _reached("params-written")

    # 3. The version's own marker lists every file with its size (checked before each restore); then all on disk.
    dtypes = sorted({str(np.dtype(x.dtype)) for x in jax.tree_util.tree_leaves(params)})
    files = {k: v for k, v in _listing(folder).items() if k != OWNER_STAMP}
    _write_json(
        os.path.join(folder, MARKER),
        {"format": FORMAT, "version": 2, "kernels": KERNELS, "dtype": dtypes, "files": files},
    )
    _sync_tree(folder)
    fsync(dst)
    _reached("version-complete")

    # 4. The switch: one os.replace of the pointer file.
    pointer = os.path.join(dst, f".{MARKER}.tmp-{os.getpid()}")
    _write_json(pointer, {"format": FORMAT, "version": 2, "current": name})
    _reached("pointer-written")
    os.replace(pointer, os.path.join(dst, MARKER))
    fsync(dst)
    _reached("pointer-switched")

    # 5. What the old version and killed saves left: only what we wrote.
    _remove_old(dst, keep=name, old_marker=old_marker)
    _reached("old-removed")
    return dst


@contextlib.contextmanager
def _absl_quiet():
    """absl's (orbax's) log records below ERROR dropped while the block runs."""
    import logging

    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def _remove_old(dst: str, keep: str, old_marker: dict | None) -> None:
    for entry in _entries_ours(dst, old_marker) - {MARKER, keep}:
        path = os.path.join(dst, entry)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    if old_marker is not None and old_marker.get("version") == 1:
        # The version-1 layout kept params/ at the top (its json files may be a HF checkpoint's own: left alone).
        legacy = os.path.join(dst, "params")
        if os.path.isfile(os.path.join(legacy, "_METADATA")) or os.path.isfile(
            os.path.join(legacy, "_CHECKPOINT_METADATA")
        ):
            shutil.rmtree(legacy, ignore_errors=True)


def _check_files(path: str, marker: dict) -> None:
    """Every file a version lists is there with its size: a truncated or missing file is named before orbax reads."""
    files = marker.get("files")
    if not isinstance(files, dict):
        return
    for relative, size in sorted(files.items()):
        full = os.path.join(path, relative)
        if not os.path.isfile(full):
            raise CheckpointError(f"{full}: missing from the checkpoint (it lists {len(files)} files)")
        actual = os.path.getsize(full)
        if actual != size:
            raise CheckpointError(f"{full}: {actual} bytes, the checkpoint wrote {size} (truncated or replaced)")


@contextlib.contextmanager
def _stderr_held(linger: float = 0.5):
    """Holds what is written to file descriptor 2 (by any thread) while orbax reads, and replays it afterwards.

    When the read fails, tensorstore's worker threads may still call back into orbax's event loop after it closed
    and print ``RuntimeError: Event loop is closed`` tracebacks; on failure this waits ``linger`` seconds for them
    and drops what was held, so the caller's one-line error is all that reaches the user.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (e.g. a closed stderr): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            time.sleep(linger)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                data = held.read()
                if data:
                    os.write(2, data)


def restore(path: str | os.PathLike, abstract, dtype=None, shardings=None, host: bool = False):
    """The parameter tree from a converted directory (the pointer is followed).

    Args:
      abstract: the expected tree of ``jax.ShapeDtypeStruct`` (from the modules); shapes are checked against it.
      dtype: target floating dtype, or None to keep the saved dtypes.
      shardings: optional tree of ``jax.sharding.Sharding`` matching ``abstract``: arrays restore straight into it.
      host: numpy arrays (memory-mapped where the layout allows) instead of device arrays; not with ``shardings``.
    """
    if host and shardings is not None:
        raise ValueError("restore: host=True and shardings exclude each other")
    path = os.path.abspath(resolve(path))
    marker = read_marker(path)
    if marker is None:
        raise CheckpointError(f"{os.path.join(path, MARKER)}: missing; not a converted musicgen-jax checkpoint")
    _check_files(path, marker)
    if marker.get("kernels") != KERNELS:
        return _restore_old_kernels(path, abstract, dtype, shardings, host)
    return _read(path, abstract, dtype, shardings, host)


def _read(path: str, abstract, dtype, shardings, host: bool):
    """:func:`restore`'s reading, once the version folder ``path`` is checked."""
    target = os.path.join(path, "params")
    views = mapped_arrays(target, abstract)
    if views is not None:
        return _place(views, abstract, dtype, shardings, host)
    import orbax.checkpoint as ocp  # only for layouts it alone reads: importing it takes ~0.3 s

    checkpointer = ocp.StandardCheckpointer()
    with _stderr_held():
        try:
            params = _restore_checked(checkpointer, target, abstract, dtype, shardings)
        finally:
            checkpointer.close()
    return jax.tree_util.tree_map(np.asarray, params) if host else params


def _restore_checked(checkpointer, target: str, abstract, dtype, shardings):
    """orbax's metadata checked against ``abstract`` (names and shapes), then the restore itself."""
    try:
        saved = checkpointer.metadata(target).item_metadata.tree
    except Exception as e:
        raise CheckpointError(f"{target}: unreadable orbax checkpoint ({type(e).__name__})") from None
    saved_leaves = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(saved)}
    want_leaves = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_leaves_with_path(abstract)}
    for key in sorted(set(saved_leaves) ^ set(want_leaves)):
        where = "missing from" if key in want_leaves else "unexpected in"
        raise CheckpointError(f"{target}: parameter {key} is {where} the checkpoint")
    for key, want in want_leaves.items():
        if tuple(saved_leaves[key].shape) != tuple(want.shape):
            raise CheckpointError(
                f"{target}: parameter {key} has shape {tuple(saved_leaves[key].shape)}, expected {tuple(want.shape)}"
            )

    def target_struct(path, want):
        key = jax.tree_util.keystr(path)
        leaf_dtype = saved_leaves[key].dtype if dtype is None else dtype
        return jax.ShapeDtypeStruct(want.shape, leaf_dtype, sharding=_lookup(shardings, path))

    try:
        return checkpointer.restore(target, jax.tree_util.tree_map_with_path(target_struct, abstract))
    except Exception as e:  # tensorstore's messages are long; the first line names the array and the file
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise CheckpointError(f"{target}: cannot read the parameters ({reason})") from None


# The decoder's projection kernels are stored (out, in) since version markers carry "kernels": 2 (NOTES #20);
# checkpoints written before (no "kernels") hold them (in, out). Each entry: the last names of such a leaf's path ->
# the axes of the old layout, per axis of the new one (a leading stacked L axis kept in front).
KERNELS = 2
_OLD_KERNEL_AXES = {
    ("attn", "qkv"): (1, 2, 3, 0),  # (D, 3, N, H) -> (3, N, H, D)
    ("attn", "out"): (2, 0, 1),  # (N, H, D) -> (D, N, H)
    ("mlp", "up"): (1, 0),  # (D, F) -> (F, D)
    ("mlp", "down"): (1, 0),  # (F, D) -> (D, F)
    ("cross_attn", "q"): (1, 2, 0),  # (D, N, H) -> (N, H, D)
    ("cross_attn", "kv"): (1, 2, 3, 0),  # (D, 2, N, H) -> (2, N, H, D)
    ("cross_attn", "out"): (2, 0, 1),  # (N, H, D) -> (D, N, H)
}


def _old_kernel_axes(path, ndim: int) -> tuple[int, ...] | None:
    """For a decoder projection kernel (any tree holding ``decoder/.../layers[_i]/attn/qkv`` and the like, optimizer
    states too), the transpose taking its pre-``KERNELS`` layout to today's; None for every other leaf."""
    names = [str(getattr(entry, "key", entry)) for entry in path]
    if "decoder" not in names or len(names) < 3 or not names[-3].startswith("layers"):
        return None
    axes = _OLD_KERNEL_AXES.get(tuple(names[-2:]))
    if axes is None:
        return None
    lead = ndim - len(axes)
    return (*range(lead), *(lead + a for a in axes))


def _restore_old_kernels(path: str, abstract, dtype, shardings, host: bool):
    """A checkpoint written before ``KERNELS`` (the decoder's kernels ``(in, out)``): read in its own layout on the
    host, each kernel transposed to today's (one copy, made once at load; saving again writes today's layout), then
    placed as :func:`restore` would."""
    inverse = {}

    def old_struct(p, want):
        axes = _old_kernel_axes(p, len(want.shape))
        if axes is None:
            return want
        inverse[jax.tree_util.keystr(p)] = tuple(int(i) for i in np.argsort(axes))
        old_shape = tuple(want.shape[i] for i in np.argsort(axes))
        return jax.ShapeDtypeStruct(old_shape, want.dtype)

    old_abstract = jax.tree_util.tree_map_with_path(old_struct, abstract)
    old = _read(path, old_abstract, dtype, None, host=True)
    views = {}
    for p, leaf in jax.tree_util.tree_leaves_with_path(old):
        key = jax.tree_util.keystr(p)
        views[key] = np.ascontiguousarray(np.transpose(leaf, np.argsort(inverse[key]))) if key in inverse else leaf
    return _place(views, abstract, None, shardings, host)


# zarr v2 dtype strings of the arrays orbax writes -> numpy dtypes (little-endian only: what every host here is).
_ZARR_DTYPES = {"<f4": "float32", "<f2": "float16", "<f8": "float64", "bfloat16": "bfloat16", "<i4": "int32"}
_MAP_AT_LEAST = 1 << 20  # arrays this large are memory-mapped; smaller ones are read (a page per array is waste)


def mapped_arrays(target: str, abstract) -> dict | None:
    """Host views of every array of an orbax save in the plain layout :func:`save` writes (one uncompressed,
    C-ordered zarr v2 chunk per array, no OCDBT), keyed by ``keystr`` of its path, when the save holds exactly the
    leaves of ``abstract`` with their shapes; None for any other layout or tree, which orbax then reads (and
    reports, naming the parameter).

    Large arrays are ``np.memmap`` views (copy-on-write: a donated or updated buffer never writes to the file),
    small ones are read. The chunk files' sizes are checked, so a view never reaches past a truncated file.
    """
    leaves = jax.tree_util.tree_leaves_with_path(abstract)
    folders = {".".join(str(entry.key) for entry in path): (path, want) for path, want in leaves}
    try:
        present = {n for n in os.listdir(target) if os.path.isfile(os.path.join(target, n, ".zarray"))}
    except OSError:
        return None
    if present != set(folders):
        return None
    views = {}
    for folder, (path, want) in folders.items():
        try:
            with open(os.path.join(target, folder, ".zarray"), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        shape = tuple(meta.get("shape") or ())
        dtype = _ZARR_DTYPES.get(meta.get("dtype"))
        plain = (
            meta.get("zarr_format") == 2
            and meta.get("compressor") is None
            and meta.get("filters") is None
            and meta.get("order") == "C"
            and meta.get("dimension_separator", ".") == "."
            and tuple(meta.get("chunks") or ()) == shape
        )
        if not plain or dtype is None or shape != tuple(want.shape):
            return None
        dtype = np.dtype(jax.numpy.dtype(dtype))  # bfloat16 through ml_dtypes
        chunk = os.path.join(target, folder, ".".join("0" * len(shape)) or "0")
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not os.path.isfile(chunk) or os.path.getsize(chunk) != size:
            return None
        if size >= _MAP_AT_LEAST:
            views[jax.tree_util.keystr(path)] = np.memmap(chunk, dtype, mode="c", shape=shape)
        else:
            views[jax.tree_util.keystr(path)] = np.fromfile(chunk, dtype).reshape(shape)
    return views


def _place(views: dict, abstract, dtype, shardings, host: bool = False):
    """The tree of ``abstract`` from :func:`mapped_arrays`' views, cast to ``dtype`` (None: as saved) and put on the
    device: without a copy on CPU when the dtype is kept (``jax.device_put`` adopts aligned host buffers), or
    straight into ``shardings``, each device reading only its slice; ``host``: the numpy views themselves."""

    def leaf(path, want):
        host = views[jax.tree_util.keystr(path)]
        if dtype is not None and host.dtype != np.dtype(dtype):
            host = host.astype(dtype)
        target = _lookup(shardings, path)
        if target is None:
            return host
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    tree = jax.tree_util.tree_map_with_path(leaf, abstract)
    return jax.device_put(tree) if shardings is None and not host else tree


def _lookup(tree, path):
    if tree is None:
        return None
    for entry in path:
        tree = tree[entry.key]
    return tree
