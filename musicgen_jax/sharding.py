"""Sharding by logical axis names: every parameter's logical axes are declared with it
(:data:`musicgen_jax.parameters.PARAM_AXES`), and one rules table here maps those names to the axes of a device mesh
(by default ``("data", "model")``; any other axis names through a ``rules`` argument, see :func:`rules_for`).

Any mesh works: ours (:func:`make_mesh`), one from ``jax.make_mesh`` (whose axes are ``Explicit`` by default:
sharding in types) or a ``jax.sharding.Mesh`` with ``Auto`` axes. Our programs let ``jit`` propagate shardings from
the parameters and inputs, so a mesh whose axes are not ``Auto`` is used through its ``Auto`` twin (:func:`auto`:
the same devices in the same order under the same names), and what comes back lives on those devices.

Einsum letters: the package legend (``musicgen_jax/__init__.py``).

A dimension whose size does not divide its mesh axis is replicated rather than refused (e.g. the decoder's
embedding has ``V + 1`` rows, which no even ``model`` axis divides). Small tensors (norms, biases, the relative
position bias, the conditioning projections, the whole EnCodec codec) are replicated. ``jit`` propagates these
shardings through the forward pass, the train step and the decode loop; :func:`decode` pins the decode loop's
inputs and outputs so that the KV cache stays split over ``data`` (batch) and ``model`` (heads).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from musicgen_jax import cpu_devices, sampling
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


def rules_for(data: str | tuple[str, ...] | None = DATA, model: str | tuple[str, ...] | None = MODEL) -> dict:
    """The rules table for a mesh with other axis names: ``data`` splits the batch, ``model`` the heads, ffn and
    vocab (tensor parallelism). Either may be a tuple of mesh axes (e.g. ``("replica", "data")``) or None."""
    return {"batch": data, "heads": model, "ffn": model, "vocab": model}


def auto(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis ``Auto`` (the same devices, order and names): the mesh our programs run on. A mesh
    already ``Auto`` is returned as is."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    kinds = getattr(mesh, "axis_types", None)
    if kinds is None or all(k == jax.sharding.AxisType.Auto for k in kinds):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names))


def check_rules(mesh: Mesh, rules: Mapping[str, Any] = RULES) -> None:
    """Every mesh axis of more than one device must be named by a rule, else it would silently replicate every
    array over it (a one-line ValueError naming the axis). A rule naming an axis the mesh lacks is fine (a 1-D
    ``("data",)`` mesh with the default rules): that dimension is replicated."""
    named = set()
    for value in rules.values():
        named.update(_axes(value))
    unused = [a for a, n in mesh.shape.items() if n > 1 and a not in named]
    if unused:
        raise ValueError(
            f"mesh axis {unused[0]!r} ({mesh.shape[unused[0]]} devices) is used by no sharding rule (they name "
            f"{sorted(named)}); pass rules=musicgen_jax.sharding.rules_for(data=..., model=...) naming it"
        )


def _axes(value) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def make_mesh(data: int = 1, model: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, model)`` mesh over ``devices`` (default: all, across every host) with ``Auto`` axes, so that
    ``jit`` propagates shardings (jax's ``make_mesh`` defaults to ``Explicit`` axes)."""
    devices = jax.devices() if devices is None else list(devices)
    if data * model != len(devices):
        raise ValueError(f"a ({data}, {model}) mesh needs {data * model} devices, there are {len(devices)}")
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), (DATA, MODEL), axis_types=auto, devices=devices)


def cpu_mesh() -> Mesh | None:
    """The ``(1, n)`` mesh over this process's ``n`` CPU devices when :mod:`musicgen_jax.cpu_devices` split the CPU
    into one device per core and JAX's default backend is the CPU (what ``from_pretrained(mesh="auto")`` loads
    onto: tensor parallelism over the cores); None otherwise (one device, as JAX's default)."""
    if cpu_devices.chosen() is None or jax.default_backend() != "cpu":
        return None
    devices = jax.local_devices(backend="cpu")
    return make_mesh(1, len(devices), devices=devices) if len(devices) > 1 else None


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
    axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Mapping[str, Any] = RULES
) -> PartitionSpec:
    """Logical axes -> a ``PartitionSpec`` on ``mesh``: a dimension takes its rule's mesh axes (one name or a tuple)
    when they exist, span more than one device and divide it (and no earlier dimension took them), else it is
    replicated."""
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape, strict=True):
        mesh_axes = () if name is None else _axes(rules.get(name))
        devices = math.prod(mesh.shape.get(a, 1) for a in mesh_axes)
        if (
            mesh_axes
            and all(a in mesh.shape for a in mesh_axes)
            and devices > 1
            and not used.intersection(mesh_axes)
            and size % devices == 0
        ):
            used.update(mesh_axes)
            spec.append(mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
        else:
            spec.append(None)
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def shardings_for(tree: Any, mesh: Mesh, rules: Mapping[str, Any] = RULES) -> Any:
    """A tree of ``NamedSharding`` matching ``tree`` (arrays or ``jax.ShapeDtypeStruct``: parameters, a
    :class:`~musicgen_jax.training.TrainState`, an optimizer state), on ``auto(mesh)``."""
    check_rules(mesh, rules)
    mesh = auto(mesh)

    def sharding(path, leaf):
        shape = np.shape(leaf)
        return NamedSharding(mesh, spec_for(logical_axes(_path_string(path), len(shape)), shape, mesh, rules))

    return jax.tree_util.tree_map_with_path(sharding, tree)


def shard_params(params: Any, mesh: Mesh, rules: Mapping[str, Any] = RULES) -> Any:
    """``params`` (or any tree :func:`shardings_for` understands) placed on ``mesh`` by the rules."""
    return jax.device_put(params, shardings_for(params, mesh, rules))


def data_parallelism(mesh: Mesh, rules: Mapping[str, Any] = RULES) -> int:
    """How many ways the batch is split on ``mesh``: the product of the sizes of the mesh axes ``batch`` maps to."""
    return math.prod(mesh.shape.get(a, 1) for a in _axes(rules.get("batch")))


def batch_sharding(
    mesh: Mesh, ndim: int = 1, batch_size: int | None = None, rules: Mapping[str, Any] = RULES
) -> NamedSharding:
    """Inputs split over the batch rule's axes (``data``) along their first dimension; replicated when
    ``batch_size`` is given and those axes do not divide it."""
    size = data_parallelism(mesh, rules) if batch_size is None else batch_size
    spec = spec_for(("batch", *(None,) * (ndim - 1)), (size, *(1,) * (ndim - 1)), mesh, rules)
    return NamedSharding(auto(mesh), spec)


def shard_batch(batch: Any, mesh: Mesh, rules: Mapping[str, Any] = RULES) -> Any:
    """Every array of ``batch`` (a dict, tuple, ...) split over ``data`` along its first dimension (replicated when
    the data axis does not divide it)."""

    def put(x):
        if x is None:
            return None
        shape = np.shape(x)
        if not shape:
            return jax.device_put(x, NamedSharding(auto(mesh), PartitionSpec()))
        return jax.device_put(x, batch_sharding(mesh, len(shape), shape[0], rules))

    return jax.tree_util.tree_map(put, batch)


def mesh_of(tree: Any) -> Mesh | None:
    """The mesh the first array of ``tree`` is placed on by a ``NamedSharding`` over more than one device, or None
    (one device, or not placed by name)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves or not isinstance(leaves[0], jax.Array) or isinstance(leaves[0], jax.core.Tracer):
        return None
    placement = leaves[0].sharding
    if isinstance(placement, NamedSharding) and len(placement.device_set) > 1:
        return placement.mesh
    return None


def to_host(x) -> np.ndarray:
    """A global array as numpy on this process: as is when this process holds all of it, else gathered from every
    process (a collective: every process of the job must call it, as every process runs the same program)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


@contextlib.contextmanager
def context(tree: Any):
    """Runs the block on the ``Auto`` twin of the mesh ``tree``'s arrays live on, when the caller has set another
    context mesh (``with jax.set_mesh(jax.make_mesh(...))``: explicit axes), so that our programs, which propagate
    shardings, see the mesh their arrays are on. A no-op otherwise."""
    mesh = mesh_of(tree)
    current = jax.sharding.get_abstract_mesh()
    if mesh is None or current.empty or current == auto(mesh).abstract_mesh:
        yield
        return
    with jax.set_mesh(auto(mesh)):
        yield


def shard_host_batch(local_batch: Any, mesh: Mesh, rules: Mapping[str, Any] = RULES) -> Any:
    """Multi-host input: each process passes its own slice of the global batch (the same shapes on every process;
    the global batch is the concatenation over processes in ``jax.process_index()`` order) and gets global arrays
    split over ``data``. With one process this equals :func:`shard_batch`."""

    def put(x):
        if x is None:
            return None
        x = np.asarray(x)
        global_rows = x.shape[0] * jax.process_count()
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim, global_rows, rules), x)

    return jax.tree_util.tree_map(put, local_batch)


def cache_sharding(
    mesh: Mesh, rows: int, num_heads: int, scanned: bool = True, rules: Mapping[str, Any] = RULES
) -> NamedSharding:
    """The KV cache, ``(L, B', N, S, H)`` scanned or ``(B', N, S, H)`` per layer: rows over ``data``, heads over
    ``model`` (each when it divides)."""
    spec = spec_for(("batch", "heads", None, None), (rows, num_heads, 1, 1), mesh, rules)
    return NamedSharding(auto(mesh), PartitionSpec(None, *spec) if scanned else spec)


def decode(mesh: Mesh, decoder_params, prefix_BPD, prompt_BKQ, pattern_BKT, rng, knobs, *, rules=RULES, **static):
    """:func:`musicgen_jax.sampling.decode` on ``mesh``: the parameters by the rules, the (CFG-doubled) prefix, the
    prompt and the pattern split over ``data``, and the returned code buffer ``(B, K, max_length)`` too.

    Arguments are those of ``sampling.decode`` (``static`` its keyword-only arguments). The inputs are placed here
    (a no-op when they already are); jit propagates the shardings into the loop, where the KV cache follows the
    batch (``data``) and the heads (``model``) of the keys and values written into it.
    """
    decoder_params = jax.device_put(decoder_params, shardings_for({"decoder": decoder_params}, mesh, rules)["decoder"])
    prefix_BPD, prompt_BKQ, pattern_BKT = shard_batch((prefix_BPD, prompt_BKQ, pattern_BKT), mesh, rules)
    rng, knobs = jax.device_put((rng, knobs), NamedSharding(auto(mesh), PartitionSpec()))
    return sampling.decode(decoder_params, prefix_BPD, prompt_BKQ, pattern_BKT, rng, knobs, **static)


__all__ = [
    "DATA",
    "MODEL",
    "RULES",
    "auto",
    "batch_sharding",
    "cache_sharding",
    "check_rules",
    "context",
    "data_parallelism",
    "decode",
    "logical_axes",
    "make_mesh",
    "mesh_of",
    "rules_for",
    "shard_batch",
    "shard_host_batch",
    "shard_params",
    "shardings_for",
    "spec_for",
    "to_host",
]
