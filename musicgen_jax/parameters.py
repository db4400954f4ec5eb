"""The model's parameters as a whole: the abstract tree and random values for it, built in one place.

Each network part declares its own parameters (``t5``, ``encodec``, ``decoder``, ``conditioning``: shapes and dtypes
come from the Flax modules through ``jax.eval_shape``, so nothing is allocated or compiled); the logical axes of every
leaf are :data:`musicgen_jax.sharding.PARAM_AXES`. Everything that needs the whole tree derives it from here: loading
(shapes checked against it), the converter's expectations, random initialisation, and shardings.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import jax
import numpy as np

from musicgen_jax import conditioning, decoder, encodec, t5
from musicgen_jax.config import MusicgenMelodyConfig


def abstract(config: MusicgenMelodyConfig, parts: Iterable[str] | None = None) -> dict:
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
    embeddings / codebooks / T5's relative bias N(0, 1), kernels N(0, 1 / fan_in).
    """
    name = names[-1]
    fan_in = {
        "qkv": lambda s: s[-4],  # (..., D, 3, N, H)
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
    if name in fan_in:
        return rng.standard_normal(shape, np.float32) * np.float32(fan_in[name](shape) ** -0.5)
    raise ValueError(f"no random init rule for parameter {'/'.join(names)} {shape}")


def random(config: MusicgenMelodyConfig, seed: int = 0) -> dict:
    """Random float32 numpy parameters shaped as :func:`abstract` (scanned decoder), filled on the host: nothing is
    compiled. Each leaf draws from its own stream, seeded by ``seed`` and its path, so the same seed gives
    bit-identical values whatever the order of the leaves. For random-weight checkpoints, tests and training from
    scratch (cast with ``jnp.asarray``)."""

    def fill(path, leaf):
        names = tuple(str(k.key) for k in path)
        digest = hashlib.sha256(f"{seed}:{'/'.join(names)}".encode()).digest()
        return _fill(names, leaf.shape, np.random.default_rng(np.frombuffer(digest, np.uint32)))

    return jax.tree_util.tree_map_with_path(fill, abstract(config))
