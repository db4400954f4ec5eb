"""Small building blocks shared by several network parts: the matmul precision policy, activations and layer norms
matching PyTorch.

The precision policy (every matmul of T5, the conditioning projections and the decoder goes through :func:`einsum`,
:func:`linear` or :func:`dot_general`): JAX's default precision is one bfloat16 pass on TPU and TF32 on recent GPUs,
so "float32" would silently not be float32 there. Float32 operands therefore ask for ``Precision.HIGHEST`` (exact
float32 products on every backend, as PyTorch's float32 with TF32 off; XLA:CPU computes float32 either way).
Lower-precision operands (bfloat16 weights) run one pass at their precision and accumulate in float32
(``preferred_element_type``); softmax and norms run in float32 in the modules. A config's ``matmul_precision``
("highest", "high", "default") overrides the precision for users who trade exactness for speed.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# The initializer every module declares its parameters with. Modules only declare names and shapes (read through
# ``jax.eval_shape`` by ``musicgen_jax.parameters.abstract``); values come from the converter or from
# ``parameters.random``'s host-side rules. A zeros initializer traces to one op per parameter, where flax's random
# initializers traced a PRNG draw each: the abstract tree of the small model took 0.6 s of a 0.7 s load (NOTES #13).
declared = nn.initializers.zeros


def gelu_exact(x):
    # torch.nn.functional.gelu default: the erf form, not the tanh approximation.
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x):
    # HF "gelu_new" / "gelu_pytorch_tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * jnp.power(x, 3.0))))


_PRECISIONS = {
    "highest": jax.lax.Precision.HIGHEST,
    "high": jax.lax.Precision.HIGH,
    "default": jax.lax.Precision.DEFAULT,
}


def precision_policy(dtype, matmul_precision: str | None = None):
    """``(precision, accumulation dtype)`` for a matmul over operands of ``dtype``: see the module docstring.

    ``matmul_precision`` None picks by dtype: float32 (or wider) -> HIGHEST, accumulated in its own dtype; bfloat16
    or float16 -> DEFAULT (one pass at that precision), accumulated in float32. A name from
    :data:`musicgen_jax.config.MATMUL_PRECISIONS` sets the precision; accumulation stays float32 or wider."""
    low = jnp.finfo(dtype).bits < 32
    if matmul_precision is None:
        precision = jax.lax.Precision.DEFAULT if low else jax.lax.Precision.HIGHEST
    else:
        precision = _PRECISIONS[matmul_precision]
    return precision, (jnp.float32 if low else None)


def einsum(spec: str, x, y, *, matmul_precision: str | None = None, out_dtype=None):
    """``jnp.einsum(spec, x, y)`` under the precision policy. ``y`` (usually a kernel) is cast to ``x``'s dtype; the
    result is ``out_dtype`` (default ``x``'s dtype; pass float32 to keep the float32 accumulation, e.g. scores)."""
    precision, acc = precision_policy(x.dtype, matmul_precision)
    out = jnp.einsum(spec, x, y.astype(x.dtype), precision=precision, preferred_element_type=acc)
    return out.astype(out_dtype or x.dtype)


def dot_general(x, y, dimension_numbers, *, matmul_precision: str | None = None, out_dtype=None):
    """``jax.lax.dot_general`` under the precision policy (as :func:`einsum`)."""
    precision, acc = precision_policy(x.dtype, matmul_precision)
    out = jax.lax.dot_general(
        x, y.astype(x.dtype), dimension_numbers, precision=(precision, precision), preferred_element_type=acc
    )
    return out.astype(out_dtype or x.dtype)


# Rows up to which :func:`linear` puts the kernel on the left (``W @ x.T``): XLA:CPU streams an ``(out, in)`` kernel
# against a few rows at up to 1.9x the speed of ``x @ W`` over an ``(in, out)`` kernel (the decode step's 2-32
# rows), while for the prefill's hundreds of rows ``x @ W.T`` is the faster of the two (benchmarks/NOTES.md #20).
LEFT_KERNEL_ROWS = 64


def linear(x, kernel, n_out: int = 1, *, matmul_precision: str | None = None, out_dtype=None):
    """``x (..., *in_dims)`` through a kernel stored as PyTorch's ``nn.Linear`` stores it, ``(*out_dims, *in_dims)``
    (the first ``n_out`` axes are the output features): ``(..., *out_dims)``, under the precision policy (as
    :func:`einsum`). Few rows (the decode step) run as ``W @ x.T``, many (the prefill, training) as ``x @ W.T``; both
    are one matmul over the kernel as it lies in memory, so XLA copies no weights."""
    out_dims, in_dims = kernel.shape[:n_out], kernel.shape[n_out:]
    lead = x.shape[: x.ndim - len(in_dims)]
    rows = math.prod(lead)
    x_RI = x.reshape(rows, math.prod(in_dims))
    w_OI = kernel.reshape(math.prod(out_dims), x_RI.shape[1]).astype(x.dtype)
    contract = (((1,), (1,)), ((), ()))  # in with in
    if rows <= LEFT_KERNEL_ROWS:
        y_OR = dot_general(w_OI, x_RI, contract, matmul_precision=matmul_precision)
        # The barrier keeps XLA from folding the transpose into the dot, which would make it ``x @ W.T`` again.
        y_RO = jax.lax.optimization_barrier(y_OR).T
    else:
        y_RO = dot_general(x_RI, w_OI, contract, matmul_precision=matmul_precision)
    return y_RO.reshape(*lead, *out_dims).astype(out_dtype or x.dtype)


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
