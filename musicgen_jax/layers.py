"""Small building blocks shared by several network parts: activations and layer norms matching PyTorch."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def gelu_exact(x):
    # torch.nn.functional.gelu default: the erf form, not the tanh approximation.
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x):
    # HF "gelu_new" / "gelu_pytorch_tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * jnp.power(x, 3.0))))


_ACTIVATIONS = {
    "gelu": gelu_exact,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str):
    """The function HF's ``ACT2FN[name]`` computes (names validated by the configs)."""
    return _ACTIVATIONS[name]


def layer_norm(name: str, epsilon: float = 1e-5, dtype=None) -> nn.LayerNorm:
    """``torch.nn.LayerNorm`` semantics: two-pass variance (mean of squared deviations), eps 1e-5 by default.

    Statistics are computed in float32 (flax upcasts); the output takes the input/parameter dtype."""
    return nn.LayerNorm(epsilon=epsilon, use_fast_variance=False, dtype=dtype, name=name)
