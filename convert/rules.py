"""The strict conversion engine: a table of rules, small named transforms, and one function that applies them.

A :class:`Rule` maps one HF tensor name pattern (``"...layers.{layer}.fc1.weight"``) to one leaf of our parameter
tree, through a transform. Several source tensors may fill one leaf: each placeholder (and each ``fixed`` index,
e.g. ``{"qkv": 0}`` for the query of a fused QKV kernel) names a stacking axis of that leaf, listed in ``stack``
outermost first. The engine is strict:

- every source tensor matches exactly one rule, or the error names it as unmapped;
- every piece of every leaf is present, or the error names the missing HF key;
- a tensor whose rule says ``drop`` (a training-only buffer, say) is matched and discarded;
- a tensor seen twice is an error, unless its rule says ``tied`` (HF saves T5's ``shared`` and ``embed_tokens``
  both), in which case the copies must be equal;
- every source shape is checked against the shape our module expects, and the error names key and both shapes;
- the result has exactly the leaves (and shapes) of the module's abstract parameter tree.

The same table runs backwards (:func:`export`, for writing HF safetensors again): each :class:`Transform` carries its
inverse, each leaf is sliced back into its pieces along its stacking axes, and every rule gives back exactly the keys
it read (``tied`` copies and all but the first spelling of a leaf excepted; see :func:`export`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from convert.reader import CheckpointError


@dataclasses.dataclass(frozen=True)
class Transform:
    """A named array transform, the inverse map on shapes (for error messages and checks) and the inverse map on
    arrays (for :func:`export`)."""

    name: str
    apply: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]  # (source, piece shape) -> piece
    source_shape: Callable[[tuple[int, ...]], tuple[int, ...]]  # piece shape -> expected source shape
    invert: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]  # (piece, source shape) -> source


def reshaped(name: str, source_shape: Callable[[tuple[int, ...]], tuple[int, ...]]) -> Transform:
    """A transform that only reshapes (same element order both ways)."""
    return Transform(name, lambda x, shape: x.reshape(shape), source_shape, lambda y, shape: y.reshape(shape))


IDENTITY = Transform("identity", lambda x, shape: x, lambda shape: tuple(shape), lambda y, shape: y)


def linear(n_in: int = 1) -> Transform:
    """torch ``nn.Linear.weight`` ``(out, in)`` -> kernel ``(*in_dims, *out_dims)``; the first ``n_in`` axes of the
    kernel are the input features (e.g. ``(D,) -> (N, H)`` for a query projection, ``(N, H) -> (D,)`` for the output
    projection)."""

    def source_shape(shape):
        return (math.prod(shape[n_in:]), math.prod(shape[:n_in]))

    def invert(y, shape):  # kernel (*in_dims, *out_dims) -> (in, out) -> torch (out, in)
        return y.reshape(shape[1], shape[0]).T

    return Transform(f"linear(n_in={n_in})", lambda x, shape: x.T.reshape(shape), source_shape, invert)


def torch_linear(n_out: int = 1) -> Transform:
    """torch ``nn.Linear.weight`` ``(out, in)`` -> kernel ``(*out_dims, *in_dims)``, the same element order (a
    reshape, no copy): the decoder's kernels (e.g. ``(N * H, D) -> (N, H, D)`` for a query projection, ``(D, N * H)
    -> (D, N, H)`` for the output projection; ``n_out`` leading kernel axes are the output features)."""
    return reshaped(f"torch_linear(n_out={n_out})", lambda shape: (math.prod(shape[:n_out]), math.prod(shape[n_out:])))


@dataclasses.dataclass(frozen=True)
class Rule:
    """HF tensor pattern ``src`` -> our leaf ``dst`` (a path), through ``transform``.

    ``stack`` lists ``(index_name, axis)`` pairs, outermost first: the leaf is built by stacking pieces along
    ``axis`` for each index (the innermost first). Index values come from the ``{name}`` placeholders in ``src``
    and from ``fixed``.
    """

    src: str
    dst: tuple[str, ...]
    transform: Transform = IDENTITY
    stack: tuple[tuple[str, int], ...] = ()
    fixed: tuple[tuple[str, int], ...] = ()
    tied: bool = False
    drop: bool = False  # matched (so the table stays strict) but not converted: no ``dst`` leaf receives it
    # for a ``drop`` rule, what :func:`export` writes when no source checkpoint supplies the tensor: ``fill(get,
    # index)`` with ``get(path)`` a leaf of our tree and ``index`` the placeholders' values (HF's initial value)
    fill: Callable[[Callable[[tuple[str, ...]], np.ndarray], Mapping[str, int]], np.ndarray] | None = None

    def regex(self) -> re.Pattern:
        parts = re.split(r"\{(\w+)\}", self.src)
        pattern = "".join(re.escape(p) if i % 2 == 0 else rf"(?P<{p}>\d+)" for i, p in enumerate(parts))
        return re.compile(pattern)

    def key_for(self, index: Mapping[str, int]) -> str:
        return self.src.format(**index)


def _tree_get(tree: Mapping, path: Sequence[str]):
    for p in path:
        tree = tree[p]
    return tree


def _tree_set(tree: dict, path: Sequence[str], value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _leaves(tree: Mapping, prefix=()) -> dict[tuple[str, ...], object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_leaves(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def convert(
    tensors: Mapping[str, np.ndarray],
    rules: Sequence[Rule],
    sizes: Mapping[str, int],
    abstract: Mapping,
    source: str = "checkpoint",
) -> dict:
    """Builds our parameter tree from HF ``tensors`` by ``rules``; strict as described in the module docstring.

    Args:
      tensors: HF name -> array (only the names this table is responsible for).
      rules: the table.
      sizes: how many values each stacking index takes (e.g. ``{"layer": 24, "qkv": 3}``).
      abstract: the module's parameter tree of ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``): the target.
      source: where the tensors came from, for error messages.

    Returns:
      A nested dict of numpy arrays with exactly the leaves and shapes of ``abstract`` (source dtype kept).
    """
    compiled = [(rule, rule.regex()) for rule in rules]
    pieces: dict[tuple[str, ...], dict[tuple[int, ...], tuple[str, np.ndarray]]] = {}
    rules_by_dst: dict[tuple[str, ...], list[Rule]] = {}
    for rule in rules:
        rules_by_dst.setdefault(rule.dst, []).append(rule)

    for key in tensors:
        matches = [(rule, m) for rule, rx in compiled if (m := rx.fullmatch(key))]
        if not matches:
            raise CheckpointError(f"{source}: unexpected tensor {key!r} (no conversion rule maps it)")
        if len(matches) > 1:
            raise AssertionError(f"conversion table is ambiguous for {key!r}: {[r.src for r, _ in matches]}")
        rule, match = matches[0]
        index = {name: int(value) for name, value in match.groupdict().items()}
        index.update(dict(rule.fixed))
        for name, value in index.items():
            if value >= sizes[name]:
                raise CheckpointError(
                    f"{source}: unexpected tensor {key!r} ({name} {value} is out of range; "
                    f"the config has {sizes[name]})"
                )
        if rule.drop:
            continue
        order = tuple(index[name] for name, _ in rule.stack)
        slot = pieces.setdefault(rule.dst, {})
        if order in slot:
            first_key, first = slot[order]
            if not rule.tied:
                raise CheckpointError(f"{source}: tensor {key!r} maps to the same parameter as {first_key!r}")
            if first.shape != tensors[key].shape or not np.array_equal(first, tensors[key]):
                raise CheckpointError(f"{source}: tied tensors {first_key!r} and {key!r} differ")
            continue
        slot[order] = (key, tensors[key])

    expected = _leaves(abstract)
    stray = [rule.src for rule in rules if not rule.drop and rule.dst not in expected]
    if stray:
        raise AssertionError(f"conversion rules write parameters the module does not have: {stray}")
    out: dict = {}
    for dst, struct in expected.items():
        if dst not in rules_by_dst:
            raise AssertionError(f"conversion table has no rule for parameter {'/'.join(dst)}")
        dst_rules = rules_by_dst[dst]
        stack = dst_rules[0].stack
        # Shape of one piece: the leaf's shape without its stacking axes (removed outermost first).
        piece_shape = list(struct.shape)
        for _, axis in stack:
            del piece_shape[axis]
        piece_shape = tuple(piece_shape)
        got = pieces.get(dst, {})
        arrays = {}
        for order in itertools.product(*(range(sizes[name]) for name, _ in stack)):
            index = dict(zip((name for name, _ in stack), order, strict=True))
            if order not in got:
                # Name the HF key that would have supplied this piece (prefer a non-tied spelling).
                candidates = [r for r in dst_rules if all(index.get(n) == v for n, v in r.fixed)] or dst_rules
                candidates.sort(key=lambda r: r.tied)
                free = {k: v for k, v in index.items() if k not in dict(candidates[0].fixed)}
                raise CheckpointError(f"{source}: missing tensor {candidates[0].key_for(free)!r}")
            key, array = got[order]
            rule = next(r for r in dst_rules if r.regex().fullmatch(key))
            want = rule.transform.source_shape(piece_shape)
            if tuple(array.shape) != tuple(want):
                raise CheckpointError(
                    f"{source}: tensor {key!r} has shape {tuple(array.shape)}, expected {tuple(want)}"
                )
            arrays[order] = np.asarray(rule.transform.apply(array, piece_shape))
        _tree_set(out, dst, _assemble(arrays, stack, sizes))
    return out


def _assemble(arrays: Mapping[tuple[int, ...], np.ndarray], stack, sizes) -> np.ndarray:
    """Stacks pieces keyed by index tuples; the innermost index first."""
    if not stack:
        return arrays[()]
    (name, axis), rest = stack[0], stack[1:]
    parts = []
    for i in range(sizes[name]):
        sub = {order[1:]: a for order, a in arrays.items() if order[0] == i}
        parts.append(_assemble(sub, rest, sizes))
    return np.stack(parts, axis=axis)


def export(
    params: Mapping,
    rules: Sequence[Rule],
    sizes: Mapping[str, int],
    dropped: Mapping[str, np.ndarray] | None = None,
    source: str = "parameters",
) -> dict[str, np.ndarray]:
    """The inverse of :func:`convert`: our parameter tree -> HF tensors, by the same table.

    Every leaf the table maps is sliced into its pieces (the stacking axes removed outermost first, as
    :func:`convert` assembled them) and each piece goes back through its rule's ``transform.invert``, to the key that
    rule reads. A leaf that several rules can supply (a ``tied`` copy, or a second spelling such as EnCodec's
    ``weight_g``) is written once, under the first non-tied rule that matches its ``fixed`` index: HF's own spelling
    today, and what ``save_pretrained`` writes (it drops tied copies). ``drop`` rules (training-only buffers) take
    their tensors from ``dropped`` (the base checkpoint's, when known; shapes must match ``fill``'s), else from
    ``fill``. Every leaf of ``params`` under the table's destinations must be used, or the error names it.

    Returns HF name -> C-contiguous numpy array (the leaves' dtype kept).
    """
    leaves = _leaves(params)
    rules_by_dst: dict[tuple[str, ...], list[Rule]] = {}
    for rule in rules:
        if not rule.drop:
            rules_by_dst.setdefault(rule.dst, []).append(rule)
    roots = {rule.dst[0] for rule in rules if not rule.drop}
    unused = [path for path in leaves if path[0] in roots and path not in rules_by_dst]
    if unused:
        raise AssertionError(f"{source}: no conversion rule for parameter {'/'.join(unused[0])}")
    out: dict[str, np.ndarray] = {}

    def put(key: str, array: np.ndarray) -> None:
        if key in out:
            raise AssertionError(f"conversion table writes {key!r} twice")
        out[key] = np.ascontiguousarray(array)

    for dst, dst_rules in rules_by_dst.items():
        if dst not in leaves:
            raise CheckpointError(f"{source}: parameter {'/'.join(dst)} is missing")
        leaf = np.asarray(leaves[dst])
        stack = dst_rules[0].stack
        for order in itertools.product(*(range(sizes[name]) for name, _ in stack)):
            index = dict(zip((name for name, _ in stack), order, strict=True))
            rule = next(r for r in dst_rules if not r.tied and all(index[n] == v for n, v in r.fixed))
            piece = leaf
            for (_, axis), i in zip(stack, order, strict=True):
                piece = np.take(piece, i, axis=axis)
            free = {k: v for k, v in index.items() if k not in dict(rule.fixed)}
            put(rule.key_for(free), rule.transform.invert(piece, rule.transform.source_shape(piece.shape)))

    def get(path):
        return np.asarray(leaves[tuple(path)])

    for rule in rules:
        if not rule.drop:
            continue
        names = [name for name, _ in rule.stack]
        for order in itertools.product(*(range(sizes[name]) for name in names)):
            index = dict(zip(names, order, strict=True))
            key = rule.key_for(index)
            default = None if rule.fill is None else np.asarray(rule.fill(get, index))
            if dropped is not None and key in dropped:
                value = np.asarray(dropped[key])
                if default is not None and value.shape != default.shape:
                    raise CheckpointError(f"{source}: {key!r} has shape {value.shape}, expected {default.shape}")
            elif default is not None:
                value = default
            else:
                raise CheckpointError(f"{source}: no value for the training buffer {key!r}")
            put(key, value)
    return out
