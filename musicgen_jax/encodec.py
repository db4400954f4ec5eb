"""EnCodec, the neural audio codec of MusicGen: a SEANet encoder, a residual vector quantizer and a SEANet decoder.

Matches HF transformers' ``EncodecModel`` (``models/encodec/modeling_encodec.py``), quirks included; each quirk is
marked where it is reproduced. Inside, activations are channels-last ``(B, Y, I)``; the public functions take and
return HF's ``(batch, channels, samples)`` audio and ``(batch, codebooks, frames)`` codes.

Einsum letters: the package legend (``musicgen_jax/__init__.py``).

Layout of the parameter tree (what ``convert/encodec.py`` writes; under ``audio_encoder`` in the full model):
  encoder/conv_in                 Conv   audio_channels -> num_filters, kernel_size taps
  encoder/stage_{s}/res_{j}       ResBlock at width num_filters * 2**s, dilation dilation_growth_rate**j
  encoder/stage_{s}/down          Conv   stride upsampling_ratios[-1 - s], 2 * ratio taps, width x2
  encoder/lstm                    LSTM
  encoder/conv_out                Conv   -> hidden_size, last_kernel_size taps
  decoder/conv_in                 Conv   hidden_size -> num_filters * 2**len(ratios), kernel_size taps
  decoder/lstm                    LSTM
  decoder/stage_{s}/up            ConvTranspose  stride upsampling_ratios[s], 2 * ratio taps, width / 2
  decoder/stage_{s}/res_{j}       ResBlock
  decoder/conv_out                Conv   num_filters -> audio_channels, last_kernel_size taps
  quantizer/codebooks             (K, V, D)  absent when the config has no quantizer (num_quantizers == 0)
where
  Conv, norm_type "weight_norm":  g (O,), v (Z, I, O), bias (O,)    kernel = g * v / ||v|| (norm over Z, I)
  Conv, "time_group_norm":        kernel (Z, I, O), bias (O,), norm/{scale, bias} (O,)
  ConvTranspose, "weight_norm":   g (I,), v (Z, I, O), bias (O,)    kernel = g * v / ||v|| (norm over Z, O: torch's
                                  weight norm is over dim 0 of the (I, O, Z) torch weight, i.e. per input channel)
  ConvTranspose, "time_group_norm": kernel (Z, I, O), bias (O,), norm/{scale, bias} (O,)
  ResBlock:                       conv_a (dim -> dim // compress, residual_kernel_size taps, dilated),
                                  conv_b (-> dim, 1 tap), shortcut (Conv dim -> dim, 1 tap; only with
                                  use_conv_shortcut)
  LSTM:                           w_in (L, I, G, O), w_rec (L, O, G, O), b_in (L, G, O), b_rec (L, G, O); O = I

Weight norm is kept as ``g`` and ``v`` and folded at apply time (exactly torch's ``v * (g / ||v||)``), so the tree
holds the checkpoint's numbers and a checkpoint converts without arithmetic.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.config import ConfigError, EncodecConfig, read_json
from musicgen_jax.layers import declared

# The codes are an argmax over distances computed from many convolutions: ask for full float32 products on every
# backend (GPUs would otherwise use TF32), or a near tie can pick another codeword than PyTorch.
_PRECISION = jax.lax.Precision.HIGHEST


def _accumulation(dtype):
    """bfloat16/float16 products accumulate in float32 (the package's precision policy, ``layers.py``)."""
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else None


def _elu(x):
    return jax.nn.elu(x)  # torch.nn.ELU(alpha=1.0); both use expm1


# --------------------------------------------------------------------------------------------------------------
# Padding rules of HF's EncodecConv1d, on static lengths.


def _extra_padding(length: int, kernel: int, stride: int, padding_total: int) -> int:
    """HF ``_get_extra_padding_for_conv1d``: right padding so that the last window is whole.

    HF computes ``ceil((length - kernel + padding_total) / stride + 1) - 1`` in float32; this integer ceiling is
    the same for every length below 2**24 samples.
    """
    n_frames = -(-(length - kernel + padding_total) // stride)
    ideal_length = n_frames * stride + kernel - padding_total
    return ideal_length - length


def _pad_time(x_BYI: jax.Array, left: int, right: int, mode: str) -> jax.Array:
    """HF ``EncodecConv1d._pad1d`` on the time axis: zero (constant) or reflect padding.

    HF quirk: reflect padding needs more samples than the pad; for a shorter input, HF first appends zeros
    (``max_pad - length + 1``), reflects that, then cuts as many samples off the right end again.
    """
    if mode != "reflect":
        return jnp.pad(x_BYI, ((0, 0), (left, right), (0, 0)))
    length = x_BYI.shape[1]
    extra = 0
    if length <= max(left, right):
        extra = max(left, right) - length + 1
        x_BYI = jnp.pad(x_BYI, ((0, 0), (0, extra), (0, 0)))
    padded = jnp.pad(x_BYI, ((0, 0), (left, right), (0, 0)), mode="reflect")
    return padded[:, : padded.shape[1] - extra]


# --------------------------------------------------------------------------------------------------------------
# Layers.


def _weight_norm(g, v, axes, dtype):
    """torch ``_weight_norm``: ``v * (g / ||v||)`` with the norm over ``axes``, computed in float32."""
    v32 = v.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(v32 * v32, axis=axes, keepdims=True))
    return (v32 * (jnp.expand_dims(g.astype(jnp.float32), axes) / norm)).astype(dtype)


class TimeGroupNorm(nn.Module):
    """``torch.nn.GroupNorm(1, O)`` on ``(B, Y, O)``: one mean and (biased) variance per example over Y and O."""

    features: int
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x_BYO):
        scale = self.param("scale", declared, (self.features,))
        bias = self.param("bias", declared, (self.features,))
        x32 = x_BYO.astype(jnp.float32)
        mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(x_BYO.dtype)


class _ConvBase(nn.Module):
    config: EncodecConfig
    features: int
    kernel_size: int
    stride: int = 1
    dtype: Any = jnp.float32

    def _kernel(self, in_features: int, transposed: bool):
        """The effective ``(Z, I, O)`` kernel, the bias, and the optional group norm."""
        cfg = self.config
        shape = (self.kernel_size, in_features, self.features)
        bias = self.param("bias", declared, (self.features,))
        if cfg.norm_type == "weight_norm":
            # torch weight norm is over dim 0 of the torch weight: output channels of a conv, but *input* channels
            # of a transposed conv (whose torch weight is (I, O, Z)).
            g = self.param("g", declared, (in_features if transposed else self.features,))
            v = self.param("v", declared, shape)
            kernel = _weight_norm(g, v, (0, 2) if transposed else (0, 1), self.dtype)
            norm = None
        else:
            kernel = self.param("kernel", declared, shape)
            kernel = kernel.astype(self.dtype)
            norm = TimeGroupNorm(self.features, name="norm")
        return kernel, bias.astype(self.dtype), norm


class Conv(_ConvBase):
    """HF ``EncodecConv1d``: explicit causal or centred padding (plus HF's extra right padding), then a conv.

    ``(B, Y, I)`` -> ``(B, ceil(Y / stride), O)``.
    """

    dilation: int = 1

    @nn.compact
    def __call__(self, x_BYI):
        cfg = self.config
        kernel_ZIO, bias, norm = self._kernel(x_BYI.shape[-1], transposed=False)
        effective = (self.kernel_size - 1) * self.dilation + 1
        padding_total = effective - self.stride
        extra = _extra_padding(x_BYI.shape[1], effective, self.stride, padding_total)
        if cfg.use_causal_conv:
            left, right = padding_total, extra
        else:
            # HF: the odd sample of the padding goes to the left.
            right = padding_total // 2
            left, right = padding_total - right, right + extra
        x_BYI = _pad_time(x_BYI.astype(self.dtype), left, right, cfg.pad_mode)
        y_BYO = jax.lax.conv_general_dilated(
            x_BYI,
            kernel_ZIO,
            window_strides=(self.stride,),
            padding=[(0, 0)],
            rhs_dilation=(self.dilation,),
            dimension_numbers=("NWC", "WIO", "NWC"),
            precision=_PRECISION,
            preferred_element_type=_accumulation(self.dtype),
        ).astype(self.dtype)
        y_BYO = y_BYO + bias
        return y_BYO if norm is None else norm(y_BYO)


class ConvTranspose(_ConvBase):
    """HF ``EncodecConvTranspose1d``: a full transposed conv, then trims ``kernel - stride`` samples.

    ``(B, Y, I)`` -> ``(B, Y * stride, O)``. Causal: ``ceil(trim * trim_right_ratio)`` off the right, the rest off
    the left; otherwise ``trim // 2`` off the right (the odd sample comes off the left).
    """

    @nn.compact
    def __call__(self, x_BYI):
        cfg = self.config
        kernel_ZIO, bias, norm = self._kernel(x_BYI.shape[-1], transposed=True)
        Z, stride = self.kernel_size, self.stride
        # torch's ConvTranspose1d as a conv of the stride-dilated input with the flipped kernel: length (Y-1)s + Z.
        y_BYO = jax.lax.conv_general_dilated(
            x_BYI.astype(self.dtype),
            kernel_ZIO[::-1],
            window_strides=(1,),
            padding=[(Z - 1, Z - 1)],
            lhs_dilation=(stride,),
            dimension_numbers=("NWC", "WIO", "NWC"),
            precision=_PRECISION,
            preferred_element_type=_accumulation(self.dtype),
        ).astype(self.dtype)
        y_BYO = y_BYO + bias
        if norm is not None:
            # HF normalises before trimming, so the trimmed samples count in the group statistics.
            y_BYO = norm(y_BYO)
        padding_total = Z - stride
        if cfg.use_causal_conv:
            right = math.ceil(padding_total * cfg.trim_right_ratio)
        else:
            right = padding_total // 2
        left = padding_total - right
        return y_BYO[:, left : y_BYO.shape[1] - right]


class ResBlock(nn.Module):
    """SEANet residual block (HF ``EncodecResnetBlock``): ``shortcut(x) + conv_b(elu(conv_a(elu(x))))``."""

    config: EncodecConfig
    dim: int
    dilation: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BYI):
        cfg = self.config
        hidden = self.dim // cfg.compress
        h = Conv(cfg, hidden, cfg.residual_kernel_size, dilation=self.dilation, dtype=self.dtype, name="conv_a")(
            _elu(x_BYI)
        )
        h = Conv(cfg, self.dim, 1, dtype=self.dtype, name="conv_b")(_elu(h))
        if cfg.use_conv_shortcut:
            x_BYI = Conv(cfg, self.dim, 1, dtype=self.dtype, name="shortcut")(x_BYI)
        return x_BYI + h


def _lstm_layer(x_YBI, w_in_IGO, w_rec_IGO, b_in_GO, b_rec_GO):
    """One torch ``nn.LSTM`` layer from zero state over time-major input: ``(Y, B, I)`` -> ``(Y, B, O)``."""
    # torch: gates = (x W_ih^T + b_ih) + (h W_hh^T + b_hh); the input half is computed for all steps at once.
    acc = _accumulation(x_YBI.dtype)
    x_in_YBGO = jnp.einsum("YBI,IGO->YBGO", x_YBI, w_in_IGO, precision=_PRECISION, preferred_element_type=acc)
    x_in_YBGO = x_in_YBGO.astype(x_YBI.dtype) + b_in_GO

    def step(carry, x_in_BGO):
        h_BO, c_BO = carry
        rec_BGO = jnp.einsum("BI,IGO->BGO", h_BO, w_rec_IGO, precision=_PRECISION, preferred_element_type=acc)
        gates_BGO = x_in_BGO + (rec_BGO.astype(h_BO.dtype) + b_rec_GO)
        i, f, g, o = (gates_BGO[:, k] for k in range(4))
        c_BO = jax.nn.sigmoid(f) * c_BO + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_BO = jax.nn.sigmoid(o) * jnp.tanh(c_BO)
        return (h_BO, c_BO), h_BO

    B, O = x_YBI.shape[1], w_rec_IGO.shape[-1]
    zeros = jnp.zeros((B, O), x_in_YBGO.dtype)
    _, h_YBO = jax.lax.scan(step, (zeros, zeros), x_in_YBGO)
    return h_YBO


class LSTM(nn.Module):
    """HF ``EncodecLSTM``: ``num_lstm_layers`` stacked LSTM layers plus one skip around the whole stack.

    ``(B, Y, I)`` -> ``(B, Y, I)``; layers scanned over their stacked weights, each layer a scan over time.
    """

    config: EncodecConfig
    dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BYI):
        L, I = self.config.num_lstm_layers, self.dim
        w_in = self.param("w_in", declared, (L, I, 4, I)).astype(self.dtype)
        w_rec = self.param("w_rec", declared, (L, I, 4, I)).astype(self.dtype)
        b_in = self.param("b_in", declared, (L, 4, I)).astype(self.dtype)
        b_rec = self.param("b_rec", declared, (L, 4, I)).astype(self.dtype)
        x_YBI = jnp.swapaxes(x_BYI.astype(self.dtype), 0, 1)

        def layer(h_YBI, weights):
            return _lstm_layer(h_YBI, *weights), None

        y_YBI, _ = jax.lax.scan(layer, x_YBI, (w_in, w_rec, b_in, b_rec))
        return jnp.swapaxes(y_YBI + x_YBI, 0, 1)


class EncoderStage(nn.Module):
    config: EncodecConfig
    dim: int
    ratio: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BYI):
        cfg = self.config
        for j in range(cfg.num_residual_layers):
            x_BYI = ResBlock(cfg, self.dim, cfg.dilation_growth_rate**j, self.dtype, name=f"res_{j}")(x_BYI)
        down = Conv(cfg, 2 * self.dim, 2 * self.ratio, stride=self.ratio, dtype=self.dtype, name="down")
        return down(_elu(x_BYI))


class DecoderStage(nn.Module):
    config: EncodecConfig
    dim: int
    ratio: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BYI):
        cfg = self.config
        up = ConvTranspose(cfg, self.dim // 2, 2 * self.ratio, stride=self.ratio, dtype=self.dtype, name="up")
        x_BYO = up(_elu(x_BYI))
        for j in range(cfg.num_residual_layers):
            x_BYO = ResBlock(cfg, self.dim // 2, cfg.dilation_growth_rate**j, self.dtype, name=f"res_{j}")(x_BYO)
        return x_BYO


class SEANetEncoder(nn.Module):
    """Audio ``(B, A, R)`` -> embeddings ``(B, Y, D)``, ``Y = ceil(A / hop_length)``."""

    config: EncodecConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, audio_BAR):
        cfg = self.config
        x_BYO = Conv(cfg, cfg.num_filters, cfg.kernel_size, dtype=self.dtype, name="conv_in")(audio_BAR)
        dim = cfg.num_filters
        for s, ratio in enumerate(reversed(cfg.upsampling_ratios)):
            with jax.named_scope(f"stage_{s}"):
                x_BYO = EncoderStage(cfg, dim, ratio, self.dtype, name=f"stage_{s}")(x_BYO)
            dim *= 2
        with jax.named_scope("lstm"):
            x_BYO = LSTM(cfg, dim, self.dtype, name="lstm")(x_BYO)
        return Conv(cfg, cfg.hidden_size, cfg.last_kernel_size, dtype=self.dtype, name="conv_out")(_elu(x_BYO))


class SEANetDecoder(nn.Module):
    """Embeddings ``(B, Y, D)`` -> audio ``(B, Y * hop_length, R)``."""

    config: EncodecConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BYD):
        cfg = self.config
        dim = cfg.num_filters * 2 ** len(cfg.upsampling_ratios)
        x_BYO = Conv(cfg, dim, cfg.kernel_size, dtype=self.dtype, name="conv_in")(x_BYD)
        with jax.named_scope("lstm"):
            x_BYO = LSTM(cfg, dim, self.dtype, name="lstm")(x_BYO)
        for s, ratio in enumerate(cfg.upsampling_ratios):
            with jax.named_scope(f"stage_{s}"):
                x_BYO = DecoderStage(cfg, dim, ratio, self.dtype, name=f"stage_{s}")(x_BYO)
            dim //= 2
        return Conv(cfg, cfg.audio_channels, cfg.last_kernel_size, dtype=self.dtype, name="conv_out")(_elu(x_BYO))


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ over ``num_quantizers`` stacked codebooks ``(K, V, D)``."""

    config: EncodecConfig

    def setup(self):
        cfg = self.config
        shape = (cfg.num_quantizers, cfg.codebook_size, cfg.codebook_dim)
        self.codebooks = self.param("codebooks", declared, shape)

    def encode(self, x_BYD, num_quantizers: int):
        """Embeddings ``(B, Y, D)`` -> codes int32 ``(K', B, Y)`` from the first ``num_quantizers`` codebooks.

        Each quantizer takes the codeword nearest to the running residual, by HF's distance
        ``-(|x|^2 - 2 x.e + |e|^2)`` evaluated in that order (float32), first index on ties (torch's max).
        """
        codebooks_KVD = self.codebooks[:num_quantizers].astype(jnp.float32)

        def step(residual_BYD, codebook_VD):
            sq_BY1 = jnp.sum(jnp.square(residual_BYD), axis=-1, keepdims=True)
            dots_BYV = jnp.einsum("BYD,VD->BYV", residual_BYD, codebook_VD, precision=_PRECISION)
            dist_BYV = -(sq_BY1 - 2 * dots_BYV + jnp.sum(jnp.square(codebook_VD), axis=-1))
            codes_BY = jnp.argmax(dist_BYV, axis=-1).astype(jnp.int32)
            return residual_BYD - codebook_VD[codes_BY], codes_BY

        _, codes_KBY = jax.lax.scan(step, x_BYD.astype(jnp.float32), codebooks_KVD)
        return codes_KBY

    def decode(self, codes_KBY):
        """Codes ``(K', B, Y)`` -> the sum of their codewords ``(B, Y, D)``, added one codebook after another."""
        codebooks_KVD = self.codebooks[: codes_KBY.shape[0]]

        def step(total_BYD, inputs):
            codebook_VD, codes_BY = inputs
            return total_BYD + codebook_VD[codes_BY], None

        K, B, Y = codes_KBY.shape
        zeros = jnp.zeros((B, Y, codebooks_KVD.shape[-1]), codebooks_KVD.dtype)
        total_BYD, _ = jax.lax.scan(step, zeros, (codebooks_KVD, codes_KBY))
        return total_BYD


class Encodec(nn.Module):
    """The codec: ``encode`` audio to codes, ``decode`` codes to audio (HF ``EncodecModel`` without chunking)."""

    config: EncodecConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.encoder = SEANetEncoder(self.config, self.dtype)
        self.decoder = SEANetDecoder(self.config, self.dtype)
        if self.config.num_quantizers > 0:
            self.quantizer = ResidualVectorQuantizer(self.config)

    def encode(self, audio_BRA, num_quantizers: int):
        """Audio ``(B, R, A)`` -> ``(codes int32 (B, K', ceil(A / hop_length)), scale (B, 1) float32 or None)``.

        With ``normalize``, the audio is divided by HF's scale ``rms(mean over channels) + 1e-8`` first.
        """
        scale_B1 = None
        x_BRA = audio_BRA.astype(jnp.float32)
        if self.config.normalize:
            mono_B1A = jnp.sum(x_BRA, axis=1, keepdims=True) / x_BRA.shape[1]
            scale_B11 = jnp.sqrt(jnp.mean(jnp.square(mono_B1A), axis=-1, keepdims=True)) + 1e-8
            x_BRA = x_BRA / scale_B11
            scale_B1 = scale_B11.reshape(-1, 1)
        with jax.named_scope("encoder"):
            emb_BYD = self.encoder(jnp.swapaxes(x_BRA, 1, 2).astype(self.dtype))
        with jax.named_scope("quantizer"):
            codes_KBY = self.quantizer.encode(emb_BYD, num_quantizers)
        return jnp.transpose(codes_KBY, (1, 0, 2)), scale_B1

    def decode(self, codes_BKY, scale_B1=None):
        """Codes ``(B, K', Y)`` -> audio float32 ``(B, R, Y * hop_length)``, times ``scale`` when given."""
        with jax.named_scope("quantizer"):
            emb_BYD = self.quantizer.decode(jnp.transpose(codes_BKY, (1, 0, 2)))
        with jax.named_scope("decoder"):
            audio_BAR = self.decoder(emb_BYD.astype(self.dtype))
        audio_BRA = jnp.swapaxes(audio_BAR, 1, 2).astype(jnp.float32)
        if scale_B1 is not None:
            audio_BRA = audio_BRA * scale_B1.astype(jnp.float32).reshape(-1, 1, 1)
        return audio_BRA

    def __call__(self, audio_BRA):
        """Touches every parameter (for ``init``): encoder, quantizer (when present) and decoder."""
        emb_BYD = self.encoder(jnp.swapaxes(audio_BRA, 1, 2).astype(self.dtype))
        if self.config.num_quantizers > 0:
            self.quantizer.encode(emb_BYD, self.config.num_quantizers)
        return self.decoder(emb_BYD)


def abstract_params(config: EncodecConfig) -> Any:
    """The codec's parameter tree as ``jax.ShapeDtypeStruct`` leaves (float32), without allocating it."""
    audio = jax.ShapeDtypeStruct((1, config.audio_channels, config.hop_length), jnp.float32)  # abstract: no compile
    shapes = jax.eval_shape(lambda audio: Encodec(config).init(jax.random.PRNGKey(0), audio), audio)
    return shapes["params"]


def num_quantizers_for_bandwidth(config: EncodecConfig, bandwidth: float | None) -> int:
    """HF ``get_num_quantizers_for_bandwidth``: ``floor(1000 bandwidth / (log2(V) frame_rate))``, at least 1.

    Capped at ``config.num_quantizers`` (HF slices its list of quantizers the same way).
    """
    count = config.num_quantizers
    if bandwidth is not None and bandwidth > 0.0:
        count = int(max(1, math.floor(bandwidth * 1000 / (math.log2(config.codebook_size) * config.frame_rate))))
    return min(count, config.num_quantizers)


def _param_dtype(params):
    return jax.tree_util.tree_leaves(params)[0].dtype


@functools.partial(jax.jit, static_argnames=("config", "num_quantizers"))
def encode_audio(params, audio_BRA, config: EncodecConfig, num_quantizers: int):
    """Jitted codec encode: ``params`` (the codec's tree), audio ``(B, R, A)`` ->
    ``(codes int32 (B, num_quantizers, ceil(A / hop_length)), scale float32 (B, 1) or None)``."""
    model = Encodec(config, _param_dtype(params))
    return model.apply({"params": params}, audio_BRA, num_quantizers, method=Encodec.encode)


@functools.partial(jax.jit, static_argnames=("config",))
def decode_codes(params, codes_BKY, scale_B1, config: EncodecConfig):
    """Jitted codec decode: codes int ``(B, K', Y)`` (``scale`` ``(B, 1)`` or None) -> audio ``(B, R, Y * hop)``."""
    model = Encodec(config, _param_dtype(params))
    return model.apply({"params": params}, codes_BKY, scale_B1, method=Encodec.decode)


# --------------------------------------------------------------------------------------------------------------
# The user-facing codec.


class EncodecModel:
    """A bare EnCodec checkpoint (HF ``model_type: "encodec"``): ``encode`` audio to codes, ``decode`` them back.

    Attributes:
      config: :class:`~musicgen_jax.config.EncodecConfig` (frozen; static under jit).
      params: the parameter tree laid out as in this module's docstring, jax arrays.
    """

    def __init__(self, config: EncodecConfig, params: Any):
        self.config = config
        self.params = params

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: Any = jnp.float32) -> EncodecModel:
        """Loads a local HF ``encodec`` checkpoint directory (``config.json`` + weights, keys without a prefix).

        ``dtype``: the floating dtype of the parameters and of the convolutions (float32 by default).
        """
        from convert.encodec import encodec_rules  # the converter is only needed when loading HF weights
        from convert.reader import read_checkpoint
        from convert.rules import convert

        path = os.fspath(path)
        file = os.path.join(path, "config.json")
        data = read_json(file)
        if data.get("model_type") != "encodec":
            raise ConfigError(f"{file}: model_type is {data.get('model_type')!r}, expected 'encodec'")
        config = EncodecConfig.from_hf(data, where=file)
        target = jnp.dtype(dtype)
        if not jnp.issubdtype(target, jnp.floating):
            raise ValueError(f"dtype={dtype!r} is not a floating dtype")
        tensors = read_checkpoint(path)
        rules, sizes = encodec_rules(config, prefix="", root=())
        params = convert(tensors, rules, sizes, abstract_params(config), getattr(tensors, "path", path))
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x), target), params)
        return cls(config, params)

    def num_quantizers(self, bandwidth: float | None = None) -> int:
        """How many codebooks ``encode`` uses at ``bandwidth`` (HF: None means ``target_bandwidths[0]``)."""
        cfg = self.config
        if bandwidth is None:
            bandwidth = cfg.target_bandwidths[0]
        if bandwidth not in cfg.target_bandwidths:
            raise ValueError(f"bandwidth {bandwidth} is not supported; choose one of {list(cfg.target_bandwidths)}")
        return num_quantizers_for_bandwidth(cfg, bandwidth)

    def encode(self, audio, bandwidth: float | None = None, return_scales: bool = False):
        """Audio float ``(batch, channels, samples)`` -> codes int32 ``(batch, num_codebooks, frames)``.

        ``frames = ceil(samples / hop_length)``; ``num_codebooks`` follows ``bandwidth`` as in HF. With
        ``return_scales``, returns ``(codes, scales)`` where ``scales`` is float32 ``(batch, 1)`` when the config
        normalizes the input (pass it to :meth:`decode`), else None.
        """
        cfg = self.config
        count = self.num_quantizers(bandwidth)
        if count == 0:
            raise ValueError("this codec has no quantizer (num_quantizers == 0 for its target_bandwidths)")
        dtype = getattr(audio, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"audio must be a floating-point array, got dtype {dtype}")
        if audio.ndim != 3 or audio.shape[1] != cfg.audio_channels or audio.shape[2] == 0:
            raise ValueError(
                f"audio must have shape (batch, {cfg.audio_channels}, samples) with samples > 0, got {audio.shape}"
            )
        codes, scales = encode_audio(self.params, jnp.asarray(audio, jnp.float32), config=cfg, num_quantizers=count)
        return (codes, scales) if return_scales else codes

    def decode(self, codes, scales=None) -> jax.Array:
        """Codes int ``(batch, num_codebooks, frames)`` -> audio float32 ``(batch, channels, frames * hop_length)``.

        ``scales``: float ``(batch, 1)`` from ``encode(..., return_scales=True)``, or None (no rescaling).
        """
        cfg = self.config
        dtype = getattr(codes, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
            raise ValueError(f"codes must be an integer array, got dtype {dtype}")
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= cfg.num_quantizers or codes.shape[2] == 0:
            raise ValueError(
                f"codes must have shape (batch, num_codebooks, frames) with 1 <= num_codebooks <= "
                f"{cfg.num_quantizers} and frames > 0, got {codes.shape}"
            )
        low, high = int(jnp.min(codes)), int(jnp.max(codes))
        if low < 0 or high >= cfg.codebook_size:
            raise ValueError(f"codes must lie in [0, {cfg.codebook_size}), got values in [{low}, {high}]")
        if scales is not None:
            scales = jnp.asarray(scales, jnp.float32)
            if scales.size != codes.shape[0]:
                raise ValueError(f"scales must have shape ({codes.shape[0]}, 1), got {scales.shape}")
            scales = scales.reshape(-1, 1)
        return decode_codes(self.params, jnp.asarray(codes, jnp.int32), scales, config=cfg)
