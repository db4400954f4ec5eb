"""Sharding by logical axis names: every parameter's logical axes are declared with it
(:data:`musicgen_jax.parameters.PARAM_AXES`), and one rules table here maps those names to the axes of a
``("data", "model")`` device mesh.

Einsum letters: the package legend (``musicgen_jax/__init__.py``).

A dimension whose size does not divide its mesh axis is replicated rather than refused (e.g. the decoder's
embedding has ``V + 1`` rows, which no even ``model`` axis divides). Small tensors (norms, biases, the relative
position bias, the conditioning projections, the whole EnCodec codec) are replicated. ``jit`` propagates these
shardings through the forward pass, the train step and the decode loop; :func:`decode` pins the decode loop's
inputs and outputs so that the KV cache stays split over ``data`` (batch) and ``model`` (heads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from musicgen_jax import sampling
from musicgen_jax.parameters import logical_axes

DATA, MODEL = "data", "model"


# Logical axis -> mesh axis. Anything not named here (embed, layers, head_dim, codebooks, norm, length) is
# replicated. Tensor parallelism splits heads, ffn and vocab over "model"; data parallelism splits the batch.
RULES: Mapping[str, str | None] = {
    "batch": DATA,
    "heads": MODEL,
    "ffn": MODEL,
    "vocab": MODEL,
}


def make_mesh(data: int = 1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, model)`` mesh over ``devices`` (default: all, across every host) with ``Auto`` axes, so that
    ``jit`` propagates shardings (jax's ``make_mesh`` defaults to ``Explicit`` axes)."""
    devices = jax.devices() if devices is None else list(devices)
    if data * model != len(devices):
        raise ValueError(f"a ({data}, {model}) mesh needs {data * model} devices, there are {len(devices)}")
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), (DATA, MODEL), axis_types=auto, devices=devices)


def _path_string(path) -> str:
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
        else:
            names.append(str(entry))
    return "/".join(names)


def spec_for(
    axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Mapping[str, str | None] = RULES
) -> PartitionSpec:
    """Logical axes -> a ``PartitionSpec`` on ``mesh``: a dimension takes its rule's mesh axis when that axis exists,
    has more than one device and divides it (and no earlier dimension took it), else it is replicated."""
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape, strict=True):
        axis = None if name is None else rules.get(name)
        if axis is not None and mesh.shape.get(axis, 1) > 1 and axis not in used and size % mesh.shape[axis] == 0:
            used.add(axis)
            spec.append(axis)
        else:
            spec.append(None)
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def shardings_for(tree: Any, mesh: Mesh, rules: Mapping[str, str | None] = RULES) -> Any:
    """A tree of ``NamedSharding`` matching ``tree`` (arrays or ``jax.ShapeDtypeStruct``: parameters, a
    :class:`~musicgen_jax.training.TrainState`, an optimizer state)."""

    def sharding(path, leaf):
        shape = np.shape(leaf)
        return NamedSharding(mesh, spec_for(logical_axes(_path_string(path), len(shape)), shape, mesh, rules))

    return jax.tree_util.tree_map_with_path(sharding, tree)


def shard_params(params: Any, mesh: Mesh, rules: Mapping[str, str | None] = RULES) -> Any:
    """``params`` (or any tree :func:`shardings_for` understands) placed on ``mesh`` by the rules."""
    return jax.device_put(params, shardings_for(params, mesh, rules))


def batch_sharding(mesh: Mesh, ndim: int = 1, batch_size: int | None = None) -> NamedSharding:
    """Inputs split over ``data`` along their first (batch) dimension; replicated when ``batch_size`` is given and
    the data axis does not divide it."""
    size = mesh.shape[DATA] if batch_size is None else batch_size
    return NamedSharding(mesh, spec_for(("batch", *(None,) * (ndim - 1)), (size, *(1,) * (ndim - 1)), mesh))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Every array of ``batch`` (a dict, tuple, ...) split over ``data`` along its first dimension (replicated when
    the data axis does not divide it)."""

    def put(x):
        if x is None:
            return None
        shape = np.shape(x)
        if not shape:
            return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))
        return jax.device_put(x, batch_sharding(mesh, len(shape), shape[0]))

    return jax.tree_util.tree_map(put, batch)


def shard_host_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Multi-host input: each process passes its own slice of the global batch (the same shapes on every process;
    the global batch is the concatenation over processes in ``jax.process_index()`` order) and gets global arrays
    split over ``data``. With one process this equals :func:`shard_batch`."""

    def put(x):
        if x is None:
            return None
        x = np.asarray(x)
        global_rows = x.shape[0] * jax.process_count()
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim, global_rows), x)

    return jax.tree_util.tree_map(put, local_batch)


def cache_sharding(mesh: Mesh, rows: int, num_heads: int, scanned: bool = True) -> NamedSharding:
    """The KV cache, ``(L, B', N, S, H)`` scanned or ``(B', N, S, H)`` per layer: rows over ``data``, heads over
    ``model`` (each when it divides)."""
    spec = spec_for(("batch", "heads", None, None), (rows, num_heads, 1, 1), mesh)
    return NamedSharding(mesh, PartitionSpec(None, *spec) if scanned else spec)


def decode(mesh: Mesh, decoder_params, prefix_BPD, prompt_BKQ, pattern_BKT, rng, knobs, **static):
    """:func:`musicgen_jax.sampling.decode` on ``mesh``: the parameters by the rules, the (CFG-doubled) prefix, the
    prompt and the pattern split over ``data``, and the returned code buffer ``(B, K, max_length)`` too.

    Arguments are those of ``sampling.decode`` (``static`` its keyword-only arguments). The inputs are placed here
    (a no-op when they already are); jit propagates the shardings into the loop, where the KV cache follows the
    batch (``data``) and the heads (``model``) of the keys and values written into it.
    """
    decoder_params = jax.device_put(decoder_params, shardings_for({"decoder": decoder_params}, mesh)["decoder"])
    prefix_BPD, prompt_BKQ, pattern_BKT = shard_batch((prefix_BPD, prompt_BKQ, pattern_BKT), mesh)
    rng, knobs = jax.device_put((rng, knobs), NamedSharding(mesh, PartitionSpec()))
    return sampling.decode(decoder_params, prefix_BPD, prompt_BKQ, pattern_BKT, rng, knobs, **static)


__all__ = [
    "DATA",
    "MODEL",
    "RULES",
    "batch_sharding",
    "cache_sharding",
    "decode",
    "logical_axes",
    "make_mesh",
    "shard_batch",
    "shard_host_batch",
    "shard_params",
    "shardings_for",
    "spec_for",
]
