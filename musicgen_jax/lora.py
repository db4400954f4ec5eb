"""LoRA adapters on the decoder's projections: pure functions over explicit parameter trees.

Einsum letters: the package legend (``musicgen_jax/__init__.py``); ``I`` and ``O`` here are a projection's input and
output features flattened (``D`` or ``N*H``, ``D`` or ``F``), and ``R`` is the adapter rank.

A target is one projection matrix ``W (I, O)`` of every decoder layer (a slice of a fused kernel for q, k, v). Its
adapter is ``a (L, I, R)`` and ``b (L, R, O)``, stacked over the L layers like the scanned decoder, and the adapted
weight is ``W + scale * a @ b`` with ``scale = alpha / rank`` (peft's ``lora_alpha / r``). :func:`init` draws ``a``
as peft does (uniform in +-1/sqrt(I)) and sets ``b`` to zeros, so a fresh adapter leaves the model unchanged.

The adapters tree is ``{target: {"a": ..., "b": ...}}``. In a training parameter tree it sits beside the model's
parts under :data:`PART` (``params["lora"]``), so the trainer's split of trainable parts gives the adapters alone the
gradients and the optimizer state. :func:`merge` folds them into the decoder's kernels (differentiable, either
layer layout: scanned ``layers`` or unrolled ``layers_0`` ...); the loss reads the merged tree, and inference uses
it at full speed. :func:`save` / :func:`load` write and read the adapters alone (orbax + ``lora.json``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax import files
from musicgen_jax.config import ConfigError

PART = "lora"  # the top-level part of a training parameter tree that holds the adapters
FORMAT = "musicgen-jax-lora"
MARKER = "lora.json"


class Target(NamedTuple):
    """Where a target's matrix lives in a decoder layer: the kernel's path, the fused-slot ``(axis, index)`` it
    takes (None for a whole kernel), and how many leading kernel axes (after the slot's is removed) are output
    features (the decoder stores its kernels ``(out, in)``, as PyTorch)."""

    path: tuple[str, ...]
    slot: tuple[int, int] | None
    n_out: int


# Every target, declared once (the kernel layouts are musicgen_jax/decoder.py's, without the leading L axis).
TARGETS: dict[str, Target] = {
    "q": Target(("attn", "qkv"), (0, 0), 2),  # (3, N, H, D)
    "k": Target(("attn", "qkv"), (0, 1), 2),
    "v": Target(("attn", "qkv"), (0, 2), 2),
    "out": Target(("attn", "out"), None, 1),  # (D, N, H)
    "up": Target(("mlp", "up"), None, 1),  # (F, D)
    "down": Target(("mlp", "down"), None, 1),  # (D, F)
    # plain MusicGen's cross-attention to the text states
    "cross_q": Target(("cross_attn", "q"), None, 2),  # (N, H, D)
    "cross_k": Target(("cross_attn", "kv"), (0, 0), 2),  # (2, N, H, D)
    "cross_v": Target(("cross_attn", "kv"), (0, 1), 2),
    "cross_out": Target(("cross_attn", "out"), None, 1),  # (D, N, H)
}
DEFAULT_TARGETS = ("q", "k", "v", "out", "up", "down")


class LoraError(ConfigError):
    """A LoRA setting or adapter folder that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """rank R, alpha (default: R, i.e. scale 1, as peft's defaults r=8, lora_alpha=8) and the targets."""

    rank: int
    alpha: float | None = None
    targets: tuple[str, ...] = DEFAULT_TARGETS

    def __post_init__(self):
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise LoraError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if self.alpha is not None and not (isinstance(self.alpha, int | float) and np.isfinite(self.alpha)):
            raise LoraError(f"LoRA alpha must be a finite number, got {self.alpha!r}")
        targets = tuple(self.targets)
        unknown = [t for t in targets if t not in TARGETS]
        if unknown or not targets or len(set(targets)) != len(targets):
            raise LoraError(
                f"LoRA targets must be distinct names among {', '.join(TARGETS)}; got {', '.join(targets) or 'none'}"
            )
        object.__setattr__(self, "targets", tuple(t for t in TARGETS if t in targets))  # one order

    @property
    def scale(self) -> float:
        return (self.rank if self.alpha is None else self.alpha) / self.rank

    def check(self, config) -> None:
        """Raises :class:`LoraError` when a target is not in the model (cross-attention in MusicGen Melody)."""
        if not config.decoder.cross_attention:
            cross = [t for t in self.targets if t.startswith("cross_")]
            if cross:
                raise LoraError(f"LoRA targets {', '.join(cross)}: MusicGen Melody's decoder has no cross-attention")

    def to_json(self) -> dict:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "LoRA settings") -> LoraConfig:
        unknown = set(data) - {"rank", "alpha", "targets"}
        if unknown or "rank" not in data:
            raise LoraError(f"{where}: expected rank, alpha and targets, got {sorted(data)}")
        return cls(int(data["rank"]), data.get("alpha"), tuple(data.get("targets", DEFAULT_TARGETS)))


def _piece_shape(target: Target, kernel_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(in_dims, out_dims)`` of one layer's matrix of ``target`` in a kernel of ``kernel_shape`` (no L axis)."""
    shape = list(kernel_shape)
    if target.slot is not None:
        del shape[target.slot[0]]
    return tuple(shape[target.n_out :]), tuple(shape[: target.n_out])


def _layers(decoder_params: Mapping) -> tuple[bool, int]:
    """``(scanned, L)`` of a decoder tree."""
    if "layers" in decoder_params:
        return True, jax.tree_util.tree_leaves(decoder_params["layers"])[0].shape[0]
    return False, sum(1 for k in decoder_params if k.startswith("layers_"))


def _kernel(layer: Mapping, path: tuple[str, ...]):
    for p in path:
        layer = layer[p]
    return layer


def init(key: jax.Array, decoder_params: Mapping, lora: LoraConfig) -> dict:
    """Fresh adapters for ``decoder_params`` (either layout): ``a`` float32 ``(L, I, R)`` uniform in
    ``+-1/sqrt(I)`` (peft's kaiming-uniform with a=sqrt(5)), ``b`` float32 zeros ``(L, R, O)``. Each target draws
    from ``fold_in(key, its index in TARGETS)``, so adding a target changes no other."""
    scanned, L = _layers(decoder_params)
    layer = decoder_params["layers"] if scanned else decoder_params["layers_0"]
    out = {}
    for name in lora.targets:
        target = TARGETS[name]
        if target.path[0] not in layer:
            raise LoraError(f"LoRA target {name}: the decoder has no {'/'.join(target.path)}")
        shape = _kernel(layer, target.path).shape[1:] if scanned else _kernel(layer, target.path).shape
        in_dims, out_dims = _piece_shape(target, tuple(shape))
        I, O = int(np.prod(in_dims)), int(np.prod(out_dims))
        bound = I**-0.5
        k = jax.random.fold_in(key, list(TARGETS).index(name))
        out[name] = {
            "a": jax.random.uniform(k, (L, I, lora.rank), jnp.float32, -bound, bound),
            "b": jnp.zeros((L, lora.rank, O), jnp.float32),
        }
    return out


def delta(adapter: Mapping, scale: float) -> jax.Array:
    """``scale * a @ b``: float32 ``(L, I, O)`` (or ``(I, O)`` for one layer's ``a (I, R)``, ``b (R, O)``)."""
    a = jnp.asarray(adapter["a"], jnp.float32)
    b = jnp.asarray(adapter["b"], jnp.float32)
    return scale * jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _add(kernel, target: Target, delta_IO, stacked: bool):
    """``kernel`` with ``delta_IO`` (``(L, I, O)`` when ``stacked``, else ``(I, O)``) added to the target's slice."""
    lead = 1 if stacked else 0
    in_dims, out_dims = _piece_shape(target, tuple(kernel.shape[lead:]))
    want = (int(np.prod(in_dims)), int(np.prod(out_dims)))
    if tuple(delta_IO.shape[-2:]) != want:
        raise LoraError(f"LoRA adapter {'/'.join(target.path)}: a @ b is {tuple(delta_IO.shape[-2:])}, expected {want}")
    piece = jnp.swapaxes(delta_IO, -1, -2).reshape(*kernel.shape[:lead], *out_dims, *in_dims)  # (out, in) kernels
    kernel32 = kernel.astype(jnp.float32)
    if target.slot is None:
        merged = kernel32 + piece
    else:
        axis, index = target.slot
        at = (slice(None),) * (lead + axis) + (index,)
        merged = kernel32.at[at].add(piece)
    return merged.astype(kernel.dtype)


def _set(tree: Mapping, path: tuple[str, ...], value) -> dict:
    """A copy of ``tree`` (dicts along ``path`` copied) with the leaf at ``path`` replaced."""
    out = dict(tree)
    out[path[0]] = value if len(path) == 1 else _set(tree[path[0]], path[1:], value)
    return out


def merge_decoder(decoder_params: Mapping, adapters: Mapping, lora: LoraConfig) -> dict:
    """``decoder_params`` (either layout) with every target's kernel replaced by ``W + scale * a @ b``, in the
    kernel's dtype (summed in float32). Differentiable in both trees; the input trees are not changed."""
    scanned, L = _layers(decoder_params)
    out = dict(decoder_params)
    for name in lora.targets:
        target = TARGETS[name]
        if name not in adapters:
            raise LoraError(f"LoRA adapters have no target {name!r} (they hold {', '.join(adapters)})")
        d = delta(adapters[name], lora.scale)  # (L, I, O)
        if d.shape[0] != L:
            raise LoraError(f"LoRA target {name}: adapters for {d.shape[0]} layers, the decoder has {L}")
        if scanned:
            out["layers"] = _set(out["layers"], target.path, _add(_kernel(out["layers"], target.path), target, d, True))
        else:
            for i in range(L):
                layer = out[f"layers_{i}"]
                out[f"layers_{i}"] = _set(layer, target.path, _add(_kernel(layer, target.path), target, d[i], False))
    return out


def merge(params: Mapping, lora: LoraConfig) -> dict:
    """A training tree with adapters (``params[PART]``) -> the model's tree without them, the decoder merged."""
    params = dict(params)
    adapters = params.pop(PART)
    params["decoder"] = merge_decoder(params["decoder"], adapters, lora)
    return params


# ---------------------------------------------------------------------------------------------------------------
# The adapters alone on disk.


def check_destination(dst: str | os.PathLike) -> None:
    """Refuses a destination :func:`save` must not replace: a file, or a non-empty folder of other adapters' or
    anyone else's files (an earlier adapter folder is replaced)."""
    dst = os.fspath(dst)
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise LoraError(f"{dst}: exists and is not a directory")
    if os.path.isdir(dst) and os.listdir(dst) and not files.has_marker(dst, MARKER, FORMAT):
        raise LoraError(f"{dst}: not empty and not a musicgen-jax LoRA folder; choose a new or empty folder")


def save(dst: str | os.PathLike, adapters: Mapping, lora: LoraConfig, metadata: Mapping | None = None) -> str:
    """Writes ``adapters`` (orbax, under ``adapters/``) and ``lora.json`` (rank, alpha, targets, shapes and
    ``metadata`` such as the base model and step) to folder ``dst``, atomically (:func:`files.atomic_folder`);
    returns its absolute path."""
    import orbax.checkpoint as ocp

    dst = os.path.abspath(os.fspath(dst))
    check_destination(dst)
    for leftover in files.folder_leftovers(dst, "lora"):
        if files.has_marker(leftover, MARKER, FORMAT) or not os.listdir(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
    host = jax.tree_util.tree_map(np.asarray, dict(adapters))
    with files.atomic_folder(dst, "lora") as temporary:
        marker = {"format": FORMAT, "version": 1, **lora.to_json(), **dict(metadata or {})}
        with open(os.path.join(temporary, MARKER), "w", encoding="utf-8") as f:
            json.dump(marker, f, indent=2)
        checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False))
        try:
            checkpointer.save(os.path.join(temporary, "adapters"), args=ocp.args.PyTreeSave(host))
        finally:
            checkpointer.close()
    return dst


def read_config(folder: str | os.PathLike) -> tuple[LoraConfig, dict]:
    """``(LoraConfig, the whole lora.json)`` of an adapter folder written by :func:`save`."""
    file = os.path.join(os.fspath(folder), MARKER)
    if not os.path.isfile(file):
        raise LoraError(f"{folder}: not a LoRA adapter folder (no {MARKER}; musicgen-jax finetune writes OUT/lora)")
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise LoraError(f"{file}: unreadable ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LoraError(f"{file}: not a musicgen-jax LoRA file")
    settings = {k: data[k] for k in ("rank", "alpha", "targets") if k in data}
    return LoraConfig.from_json(settings, where=file), data


def load(folder: str | os.PathLike) -> tuple[dict, LoraConfig]:
    """``(adapters as float32 numpy, LoraConfig)`` of a folder written by :func:`save`."""
    import orbax.checkpoint as ocp

    lora, _ = read_config(folder)
    checkpointer = ocp.StandardCheckpointer()
    try:
        adapters = checkpointer.restore(os.path.join(os.path.abspath(os.fspath(folder)), "adapters"))
    except Exception as e:
        raise LoraError(f"{folder}: cannot read the adapters ({type(e).__name__})") from None
    finally:
        checkpointer.close()
    adapters = jax.tree_util.tree_map(np.asarray, adapters)
    if set(adapters) != set(lora.targets):
        raise LoraError(f"{folder}: adapters for {sorted(adapters)}, {MARKER} names {list(lora.targets)}")
    return adapters, lora


def count(adapters: Mapping) -> int:
    """How many numbers the adapters hold."""
    return sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(adapters))
