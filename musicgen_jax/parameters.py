"""The model's parameters, each declared once, in one place:

- shape and dtype: by its Flax module (``t5``, ``encodec``, ``decoder``, ``conditioning``), read here through
  ``jax.eval_shape`` (:func:`abstract`; nothing is allocated or compiled);
- logical axes: :data:`PARAM_AXES`, by path (the names :mod:`musicgen_jax.sharding` maps onto a mesh);
- initialiser: :func:`_fill`, by the leaf's name (:func:`random`).

Everything that needs the whole tree derives it from here: loading (shapes checked against :func:`abstract`), the
converter's expectations, random initialisation, and shardings. ``tests/test_parameters.py`` checks that every leaf
of both decoder layouts has all three.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable

import jax
import numpy as np

from musicgen_jax import conditioning, decoder, encodec, t5
from musicgen_jax.config import MusicgenConfig, MusicgenMelodyConfig

# The logical axes of every parameter, by path below its top-level part (a regular expression on "a/b/c") and rank.
# Leaves of any tree are matched by the part of their path that starts at a top-level part name, so optimizer
# states (mu/nu/acc_grads/... over the same tree) shard like the parameters they follow.
# The decoder stores its kernels (out, in), as PyTorch does (its decode step reads them fastest so, NOTES #20); T5
# keeps (in, out).
_DECODER_STACKED_MATMULS = (
    (r"layers/attn/qkv", ("layers", None, "heads", "head_dim", "embed")),
    (r"layers/attn/out", ("layers", "embed", "heads", "head_dim")),
    (r"layers/mlp/up", ("layers", "ffn", "embed")),
    (r"layers/mlp/down", ("layers", "embed", "ffn")),
    (r"layers/(attn|mlp|cross)_norm/(scale|bias)", ("layers", "norm")),
    # plain MusicGen's cross-attention to the text states
    (r"layers/cross_attn/q", ("layers", "heads", "head_dim", "embed")),
    (r"layers/cross_attn/kv", ("layers", None, "heads", "head_dim", "embed")),
    (r"layers/cross_attn/out", ("layers", "embed", "heads", "head_dim")),
)
_STACKED_MATMULS = (
    (r"layers/attn/qkv", ("layers", "embed", None, "heads", "head_dim")),
    (r"layers/attn/out", ("layers", "heads", "head_dim", "embed")),
    (r"layers/mlp/(up|gate)", ("layers", "embed", "ffn")),
    (r"layers/mlp/down", ("layers", "ffn", "embed")),
    (r"layers/(attn|mlp|cross)_norm/(scale|bias)", ("layers", "norm")),
    # plain MusicGen's cross-attention to the text states (decoder only)
    (r"layers/cross_attn/q", ("layers", "embed", "heads", "head_dim")),
    (r"layers/cross_attn/kv", ("layers", "embed", None, "heads", "head_dim")),
    (r"layers/cross_attn/out", ("layers", "heads", "head_dim", "embed")),
)


# The unrolled layout of the decoder and T5 (``layers_0`` ...; see ``musicgen_jax.decoder``): the same axes without
# "layers".
def _unrolled(stacked):
    return tuple((path.replace("layers/", r"layers_\d+/", 1), axes[1:]) for path, axes in stacked)


_UNROLLED_MATMULS = _unrolled(_STACKED_MATMULS)
_DECODER_UNROLLED_MATMULS = _unrolled(_DECODER_STACKED_MATMULS)
PARAM_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"decoder/embed", ("codebooks", "vocab", "embed")),  # (K, V+1, D)
    (r"decoder/lm_heads", ("codebooks", "embed", "vocab")),  # (K, D, V)
    (r"decoder/final_norm/(scale|bias)", ("norm",)),
    *((rf"decoder/{path}", axes) for path, axes in _DECODER_STACKED_MATMULS),
    *((rf"decoder/{path}", axes) for path, axes in _DECODER_UNROLLED_MATMULS),
    (r"text_encoder/embed", ("vocab", "embed")),  # (V_text, E)
    (r"text_encoder/rel_bias", (None, None)),  # (U, N): tiny
    (r"text_encoder/final_norm/scale", ("norm",)),
    *((rf"text_encoder/{path}", axes) for path, axes in _STACKED_MATMULS),
    *((rf"text_encoder/{path}", axes) for path, axes in _UNROLLED_MATMULS),
    (r"(text_proj|chroma_proj)/kernel", (None, "embed")),  # (E or C, D)
    (r"(text_proj|chroma_proj)/bias", ("norm",)),
    (r"audio_encoder/.*", None),  # the codec (a few tens of MB): replicated, any rank
)
_PARTS = ("decoder", "text_encoder", "audio_encoder", "text_proj", "chroma_proj")


def logical_axes(path: str, ndim: int) -> tuple[str | None, ...]:
    """The logical axes of a leaf from its path (``"decoder/layers/attn/qkv"``, or any path that contains a
    top-level part name, such as an optimizer state's ``"0/mu/decoder/layers/attn/qkv"``) and its rank.

    Leaves outside the parameter tree (step counters, PRNG keys) are replicated. A parameter path that the table
    does not know, or a rank that does not match it, raises ``ValueError`` naming the path.
    """
    names = path.split("/")
    start = next((i for i, name in enumerate(names) if name in _PARTS), None)
    if start is None:
        return (None,) * ndim
    param_path = "/".join(names[start:])
    for pattern, axes in PARAM_AXES:
        if re.fullmatch(pattern, param_path):
            if axes is None:
                return (None,) * ndim
            if len(axes) != ndim:
                raise ValueError(f"{path}: rank {ndim} does not match its logical axes {axes}")
            return axes
    raise ValueError(f"{path}: no logical axes for this parameter (add it to musicgen_jax.parameters.PARAM_AXES)")


def abstract(config: MusicgenMelodyConfig | MusicgenConfig, parts: Iterable[str] | None = None) -> dict:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (float32, the scanned decoder layout).

    Top-level parts: ``text_encoder``, ``audio_encoder``, ``decoder`` and the projections HF creates only when sizes
    differ (``text_proj``, ``chroma_proj``). ``parts``: keep only these names (those the config has).
    """
    builders = {
        "text_encoder": lambda: t5.abstract_params(config.text_encoder),
        "audio_encoder": lambda: encodec.abstract_params(config.audio_encoder),
        "decoder": lambda: decoder.abstract_params(config.decoder),
    }
    projections = conditioning.abstract_params(config)  # only those the config has
    wanted = (
        [*builders, *projections]
        if parts is None
        else [name for name in parts if name in builders or name in projections]
    )
    return {name: builders[name]() if name in builders else projections[name] for name in wanted}


def _fill(names: tuple[str, ...], shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random float32 value for the leaf at path ``names`` (its last name says what it is).

    Norm scales and weight-norm gains 1 (``g * v / ||v||`` is then a unit-norm filter, a fan-in scale), biases 0,
    embeddings / codebooks / T5's relative bias N(0, 1), kernels N(0, 1 / fan_in) (the decoder's are stored
    ``(out, in)``, the others ``(in, out)``).
    """
    name = names[-1]
    fan_in = {
        "qkv": lambda s: s[-4],  # (..., D, 3, N, H)
        "kv": lambda s: s[-4],  # (..., D, 2, N, H)
        "q": lambda s: s[-3],  # (..., D, N, H)
        "out": lambda s: s[-3] * s[-2],  # (..., N, H, D)
        "up": lambda s: s[-2],  # (..., D, F)
        "gate": lambda s: s[-2],
        "down": lambda s: s[-2],  # (..., F, D)
        "lm_heads": lambda s: s[-2],  # (K, D, V)
        "w_in": lambda s: s[-3],  # LSTM (L, I, G, O)
        "w_rec": lambda s: s[-3],
        "v": lambda s: s[0] * s[1],  # conv (Z, I, O)
        "kernel": lambda s: math.prod(s[:-1]),  # conv (Z, I, O) or projection (E, D)
    }
    if name in ("scale", "g"):
        return np.ones(shape, np.float32)
    if name in ("bias", "b_in", "b_rec"):
        return np.zeros(shape, np.float32)
    if name in ("embed", "codebooks", "rel_bias"):
        return rng.standard_normal(shape, np.float32)
    if names[0] == "decoder" and name in ("qkv", "kv", "q", "out", "up", "down"):  # (out, in): the last axes in
        n_in = 2 if name == "out" else 1  # (..., D, N, H)
        return rng.standard_normal(shape, np.float32) * np.float32(math.prod(shape[-n_in:]) ** -0.5)
    if name in fan_in:
        return rng.standard_normal(shape, np.float32) * np.float32(fan_in[name](shape) ** -0.5)
    raise ValueError(f"no random init rule for parameter {'/'.join(names)} {shape}")


def random(config: MusicgenMelodyConfig | MusicgenConfig, seed: int = 0) -> dict:
    """Random float32 numpy parameters shaped as :func:`abstract` (scanned decoder), filled on the host: nothing is
    compiled. Each leaf draws from its own stream, seeded by ``seed`` and its path, so the same seed gives
    bit-identical values whatever the order of the leaves. For random-weight checkpoints, tests and training from
    scratch (cast with ``jnp.asarray``)."""

    def fill(path, leaf):
        names = tuple(str(k.key) for k in path)
        digest = hashlib.sha256(f"{seed}:{'/'.join(names)}".encode()).digest()
        return _fill(names, leaf.shape, np.random.default_rng(np.frombuffer(digest, np.uint32)))

    return jax.tree_util.tree_map_with_path(fill, abstract(config))
