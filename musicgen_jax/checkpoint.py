"""Converted checkpoints: the parameter tree saved with orbax, beside HF's json and tokenizer files.

Layout of a converted directory::

    musicgen_jax.json          {"format": "musicgen-jax", "version": 1, "dtype": ...}: marks the format
    config.json                the HF config (read with the same strict parser as a HF checkpoint)
    generation_config.json     generation defaults
    tokenizer / preprocessor files, copied from the source when present
    params/                    the parameter tree (orbax ``StandardCheckpointer``), exactly our module layout

Restoring reads straight into the requested dtype and, when given, straight into a sharding (no host copy of the
whole tree first).
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np

from musicgen_jax.config import ConfigError

FORMAT = "musicgen-jax"
MARKER = "musicgen_jax.json"
SIDE_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "preprocessor_config.json",
)


def is_converted(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def save(dst: str | os.PathLike, params, config_json: dict, generation_json: dict | None, copy_from=None) -> str:
    """Writes ``params`` (any pytree of arrays) with orbax and the json/tokenizer files; returns ``dst``."""
    import orbax.checkpoint as ocp

    dst = os.path.abspath(os.fspath(dst))
    os.makedirs(dst, exist_ok=True)
    target = os.path.join(dst, "params")
    if os.path.exists(target):
        shutil.rmtree(target)
    if copy_from is not None:
        for name in SIDE_FILES:
            src = os.path.join(copy_from, name)
            if os.path.isfile(src) and os.path.abspath(src) != os.path.join(dst, name):
                shutil.copyfile(src, os.path.join(dst, name))
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config_json, f, indent=2)
    if generation_json is not None:
        with open(os.path.join(dst, "generation_config.json"), "w") as f:
            json.dump(generation_json, f, indent=2)
    dtypes = sorted({str(np.dtype(x.dtype)) for x in jax.tree_util.tree_leaves(params)})
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, params)
    checkpointer.wait_until_finished()
    with open(os.path.join(dst, MARKER), "w") as f:  # written last: a half-written directory has no marker
        json.dump({"format": FORMAT, "version": 1, "dtype": dtypes}, f)
    return dst


def restore(path: str | os.PathLike, abstract, dtype=None, shardings=None):
    """The parameter tree from a converted directory.

    Args:
      abstract: the expected tree of ``jax.ShapeDtypeStruct`` (from the modules); shapes are checked against it.
      dtype: target floating dtype, or None to keep the saved dtypes.
      shardings: optional tree of ``jax.sharding.Sharding`` matching ``abstract``: arrays restore straight into it.
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    with open(os.path.join(path, MARKER)) as f:
        marker = json.load(f)
    if marker.get("format") != FORMAT or marker.get("version") != 1:
        raise ConfigError(f"{os.path.join(path, MARKER)}: not a musicgen-jax v1 checkpoint ({marker})")
    target = os.path.join(path, "params")
    checkpointer = ocp.StandardCheckpointer()
    try:
        saved = checkpointer.metadata(target).item_metadata.tree
    except Exception as e:
        raise ConfigError(f"{target}: unreadable orbax checkpoint ({type(e).__name__})") from None
    saved_leaves = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(saved)}
    want_leaves = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_leaves_with_path(abstract)}
    for key in sorted(set(saved_leaves) ^ set(want_leaves)):
        where = "missing from" if key in want_leaves else "unexpected in"
        raise ConfigError(f"{target}: parameter {key} is {where} the checkpoint")
    for key, want in want_leaves.items():
        if tuple(saved_leaves[key].shape) != tuple(want.shape):
            raise ConfigError(
                f"{target}: parameter {key} has shape {tuple(saved_leaves[key].shape)}, expected {tuple(want.shape)}"
            )

    def target_struct(path, want):
        key = jax.tree_util.keystr(path)
        leaf_dtype = saved_leaves[key].dtype if dtype is None else dtype
        return jax.ShapeDtypeStruct(want.shape, leaf_dtype, sharding=_lookup(shardings, path))

    return checkpointer.restore(target, jax.tree_util.tree_map_with_path(target_struct, abstract))


def _lookup(tree, path):
    if tree is None:
        return None
    for entry in path:
        tree = tree[entry.key]
    return tree
