"""torchaudio's ``functional.resample`` (``method="sinc_interp_hann"``) without torchaudio: the kernel in numpy, the
strided convolution in JAX. HF's feature extractor resamples melodies with it, and so do :func:`musicgen_jax.audio.load`
and the chroma extractor here, with HF's parameters (:data:`HF_LOWPASS_FILTER_WIDTH`, :data:`HF_ROLLOFF`).

Einsum letters: the package legend (``musicgen_jax/__init__.py``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# HF's call to torchaudio.functional.resample (both for plain audio and for Demucs stems).
HF_LOWPASS_FILTER_WIDTH = 24
HF_ROLLOFF = 0.945
_HIGHEST = jax.lax.Precision.HIGHEST


def _integral_rate(rate: Any, name: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a positive integer number of Hz, got {rate!r}")
    if rate <= 0 or int(rate) != rate:
        # torchaudio refuses non-integral rates too ("Frequencies must be of integer type").
        raise ValueError(f"{name} must be a positive integer number of Hz, got {rate!r}")
    return int(rate)


def sinc_resample_kernel(
    orig_freq: int, new_freq: int, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> tuple[np.ndarray, int]:
    """torchaudio's Hann-windowed sinc kernel for ``orig_freq -> new_freq``.

    Returns ``(kernel, width)``: ``kernel`` is float32 (J, Z) with J = new_freq / gcd output phases and
    Z = 2 * width + orig_freq / gcd taps; the input is zero-padded by ``width`` on the left before convolving.
    """
    orig_freq, new_freq = _integral_rate(orig_freq, "orig_freq"), _integral_rate(new_freq, "new_freq")
    if lowpass_filter_width <= 0:
        raise ValueError(f"lowpass_filter_width must be positive, got {lowpass_filter_width}")
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    # Same Python float arithmetic as torchaudio, so that `width` (a ceil) comes out identical.
    base_freq = min(orig, new)
    base_freq *= rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    # Quirk: torchaudio builds the kernel in the waveform's dtype (float32 here), step by step as below; we repeat
    # its float32 operation order so the taps agree to the last bit or two rather than to float32-vs-float64 rounding.
    f32 = np.float32
    idx = np.arange(-width, width + orig, dtype=f32)[None, :] / f32(orig)
    t = np.arange(0, -new, -1, dtype=f32)[:, None] / f32(new) + idx
    t = t * f32(base_freq)
    t = np.clip(t, f32(-lowpass_filter_width), f32(lowpass_filter_width))
    window = np.cos(t * f32(math.pi) / f32(lowpass_filter_width) / f32(2)) ** 2
    t = t * f32(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, f32(1.0), np.sin(t) / t)
    kernel = kernel * (window * f32(base_freq / orig))
    return kernel.astype(np.float32), width


@functools.partial(jax.jit, static_argnames=("stride", "width", "target_length"))
def _apply_resample_kernel(x_BA: jax.Array, kernel_JZ: jax.Array, *, stride: int, width: int, target_length: int):
    """torchaudio's `_apply_sinc_resample_kernel`: zero-pad, strided conv1d, interleave the J phases, cut."""
    batch = x_BA.shape[0]
    x_BA = jnp.pad(x_BA, ((0, 0), (width, width + stride)))
    y_BJY = jax.lax.conv_general_dilated(
        x_BA[:, None, :],
        kernel_JZ[:, None, :],
        window_strides=(stride,),
        padding="VALID",
        dimension_numbers=("NCH", "OIH", "NCH"),
        precision=_HIGHEST,
    )
    y_BA = jnp.swapaxes(y_BJY, 1, 2).reshape(batch, -1)
    return y_BA[:, :target_length]


def resample(
    waveform: Any, orig_freq: int, new_freq: int, *, lowpass_filter_width: int = 6, rolloff: float = 0.99
) -> np.ndarray:
    """``torchaudio.functional.resample`` (Hann-windowed sinc) along the last axis, in float32.

    Args:
        waveform: float array (..., A).
        orig_freq, new_freq: integer sampling rates in Hz.
        lowpass_filter_width, rolloff: torchaudio's parameters and defaults. The feature extractor (like HF) uses
            ``lowpass_filter_width=24, rolloff=0.945``.

    Returns:
        float32 numpy array (..., A') with ``A' = ceil(new_freq * A / orig_freq)`` (see the float32 quirk below).
    """
    x = np.asarray(waveform, dtype=np.float32)
    orig_freq, new_freq = _integral_rate(orig_freq, "orig_freq"), _integral_rate(new_freq, "new_freq")
    if orig_freq == new_freq:
        return x
    kernel, width = sinc_resample_kernel(orig_freq, new_freq, lowpass_filter_width, rolloff)
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    length = x.shape[-1]
    # Quirk: torchaudio computes `torch.ceil(torch.as_tensor(new * length / orig))`; `as_tensor` of a Python float is
    # float32, so for long inputs the ratio is rounded to float32 before the ceil and one sample can be lost.
    target_length = int(np.ceil(np.float32(new * length / orig)))
    flat = x.reshape(-1, length)
    out = _apply_resample_kernel(
        jnp.asarray(flat), jnp.asarray(kernel), stride=orig, width=width, target_length=target_length
    )
    return np.asarray(out).reshape(x.shape[:-1] + (out.shape[-1],))
