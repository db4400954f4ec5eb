"""The frozen T5 text encoder of MusicGen (HF ``T5EncoderModel``: ``T5Stack`` with ``is_decoder=False``).

Einsum letters: the package legend (``musicgen_jax/__init__.py``).

Layout of the parameter tree (what ``convert/t5.py`` writes):
  embed              (V, E)            token embedding (HF ``shared``, tied to ``encoder.embed_tokens``)
  rel_bias           (U, N)            relative position bias table (HF: owned by block 0, shared by all blocks)
  layers/attn_norm   {scale} (L, E)    T5 RMS norm before self-attention
  layers/attn/qkv    (L, E, 3, N, H)   fused query/key/value projections (bias-free); N*H may differ from E
  layers/attn/out    (L, N, H, E)
  layers/mlp_norm    {scale} (L, E)    T5 RMS norm before the feed-forward block
  layers/mlp/gate    (L, E, F)         only for ``gated-*`` feed_forward_proj (HF ``wi_0``, the activated branch)
  layers/mlp/up      (L, E, F)         HF ``wi`` (plain) or ``wi_1`` (gated, the linear branch)
  layers/mlp/down    (L, F, E)         HF ``wo``
  final_norm         {scale} (E,)
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.config import T5Config
from musicgen_jax.layers import activation, declared, einsum


class RMSNorm(nn.Module):
    """HF ``T5LayerNorm``: ``scale * x / sqrt(mean(x^2) + eps)``; no mean subtraction, no bias, float32 statistics."""

    epsilon: float

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", declared, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        return (scale.astype(jnp.float32) * (x32 * jax.lax.rsqrt(variance + self.epsilon))).astype(x.dtype)


def relative_position_buckets(query_len: int, key_len: int, num_buckets: int, max_distance: int) -> jax.Array:
    """HF ``T5Attention._relative_position_bucket`` with ``bidirectional=True``, for every (query, key) pair.

    Returns int32 ``(W, S)`` in ``[0, num_buckets)``. Half the buckets hold keys after the query, half keys at or
    before it; within each half, distances below ``num_buckets // 4`` get one bucket each, larger ones share
    logarithmically wider buckets up to ``max_distance``, beyond which all share the last bucket.
    """
    relative_WS = jnp.arange(key_len)[None, :] - jnp.arange(query_len)[:, None]  # key position - query position
    half = num_buckets // 2
    buckets_WS = jnp.where(relative_WS > 0, half, 0)
    distance_WS = jnp.abs(relative_WS)
    max_exact = half // 2
    # Float32 like HF; the cast truncates towards zero as torch's `.to(torch.long)` does (the value is >= 0 wherever
    # it is used). max(distance, 1) only avoids log(0) at positions the `where` discards anyway.
    ratio_WS = jnp.maximum(distance_WS, 1).astype(jnp.float32) / max_exact
    log_WS = jnp.log(ratio_WS) / math.log(max_distance / max_exact) * (half - max_exact)
    large_WS = jnp.minimum(max_exact + log_WS.astype(jnp.int32), half - 1)
    return buckets_WS + jnp.where(distance_WS < max_exact, distance_WS, large_WS)


class Attention(nn.Module):
    """Bidirectional self-attention without ``1/sqrt(H)`` scaling (T5 folds it into the init); adds ``bias_BNWS``."""

    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BWE, bias_BNWS):
        cfg = self.config
        E, N, H = cfg.d_model, cfg.num_heads, cfg.d_kv
        qkv = self.param("qkv", declared, (E, 3, N, H))
        out = self.param("out", declared, (N, H, E))
        prec = cfg.matmul_precision
        qkv_BWGNH = einsum("BWE,EGNH->BWGNH", x_BWE, qkv, matmul_precision=prec)
        q_BWNH, k_BSNH, v_BSNH = qkv_BWGNH[:, :, 0], qkv_BWGNH[:, :, 1], qkv_BWGNH[:, :, 2]
        scores_BNWS = einsum("BWNH,BSNH->BNWS", q_BWNH, k_BSNH, matmul_precision=prec, out_dtype=jnp.float32)
        probs_BNWS = jax.nn.softmax(scores_BNWS + bias_BNWS, axis=-1).astype(x_BWE.dtype)
        probs_BNWS = nn.Dropout(cfg.dropout_rate)(probs_BNWS, deterministic=self.deterministic)
        attn_BWNH = einsum("BNWS,BSNH->BWNH", probs_BNWS, v_BSNH, matmul_precision=prec)
        return einsum("BWNH,NHE->BWE", attn_BWNH, out, matmul_precision=prec)


class MLP(nn.Module):
    """HF ``T5DenseActDense`` (``down(act(up x))``) or, for ``gated-*``, ``T5DenseGatedActDense``
    (``down(act(gate x) * up x)``)."""

    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BWE):
        cfg = self.config
        E, F = cfg.d_model, cfg.d_ff
        act = activation(cfg.dense_act_fn)
        up = self.param("up", declared, (E, F))
        down = self.param("down", declared, (F, E))
        prec = cfg.matmul_precision
        h_BWF = einsum("BWE,EF->BWF", x_BWE, up, matmul_precision=prec)
        if cfg.is_gated_act:
            gate = self.param("gate", declared, (E, F))
            h_BWF = act(einsum("BWE,EF->BWF", x_BWE, gate, matmul_precision=prec)) * h_BWF
        else:
            h_BWF = act(h_BWF)
        h_BWF = nn.Dropout(cfg.dropout_rate)(h_BWF, deterministic=self.deterministic)
        return einsum("BWF,FE->BWE", h_BWF, down, matmul_precision=prec)


class EncoderLayer(nn.Module):
    """HF ``T5Block`` (encoder): ``x + attn(norm(x))``, then ``x + mlp(norm(x))``. Scanned by :class:`T5Encoder`."""

    config: T5Config
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BWE, bias_BNWS):
        cfg = self.config
        with jax.named_scope("attn"):
            h = RMSNorm(cfg.layer_norm_epsilon, name="attn_norm")(x_BWE)
            h = Attention(cfg, self.deterministic, name="attn")(h, bias_BNWS)
            x_BWE = x_BWE + nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
        with jax.named_scope("mlp"):
            h = RMSNorm(cfg.layer_norm_epsilon, name="mlp_norm")(x_BWE)
            h = MLP(cfg, self.deterministic, name="mlp")(h)
            x_BWE = x_BWE + nn.Dropout(cfg.dropout_rate)(h, deterministic=self.deterministic)
        return x_BWE, None


class T5Encoder(nn.Module):
    """Token embedding, L T5 blocks sharing one relative position bias, final RMS norm. The blocks are scanned over
    one stacked ``layers`` subtree (``scan_layers=True``, the stored layout) or run unrolled over ``layers_0`` ...
    (``decoder.unstack_layers`` converts; the fast layout on XLA:CPU, as for the decoder).

    Call with:
      input_ids_BW: int ``(B, W)`` token ids in ``[0, V)``.
      attention_mask_BW: optional ``(B, W)`` of 1 (attend) / 0 (padding); keys at 0 are not attended to.

    Returns the last hidden state, ``(B, W, E)`` in the parameters' dtype (HF's ``last_hidden_state``). Padded
    positions get values too (they attend to the real tokens), exactly as in HF.
    """

    config: T5Config
    deterministic: bool = True
    scan_layers: bool = True  # the layout: one stacked ``layers`` (checkpoints, training) or ``layers_0`` ...

    @nn.compact
    def __call__(self, input_ids_BW, attention_mask_BW=None):
        cfg = self.config
        embed = self.param("embed", declared, (cfg.vocab_size, cfg.d_model))
        rel_bias = self.param("rel_bias", declared, (cfg.relative_attention_num_buckets, cfg.num_heads))
        x_BWE = embed[input_ids_BW]
        x_BWE = nn.Dropout(cfg.dropout_rate)(x_BWE, deterministic=self.deterministic)
        W = input_ids_BW.shape[1]

        # HF computes the bias in block 0 and hands it to every later block (T5Stack.forward), so one table serves all.
        buckets_WS = relative_position_buckets(
            W, W, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
        )
        bias_BNWS = jnp.transpose(rel_bias.astype(jnp.float32)[buckets_WS], (2, 0, 1))[None]
        if attention_mask_BW is not None:
            # As HF's sdpa path (create_position_bias_mask): masked keys get float32 min *instead of* the bias, so a
            # row with no key left becomes uniform rather than NaN.
            keep_B11S = attention_mask_BW.astype(bool)[:, None, None, :]
            bias_BNWS = jnp.where(keep_B11S, bias_BNWS, jnp.finfo(jnp.float32).min)

        if self.scan_layers:
            layers = nn.scan(
                EncoderLayer,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,),
                length=cfg.num_layers,
            )(cfg, self.deterministic, name="layers")
            x_BWE, _ = layers(x_BWE, bias_BNWS)
        else:  # one buffer per layer: XLA:CPU would copy each layer's weights out of a stack on every call
            for i in range(cfg.num_layers):
                x_BWE, _ = EncoderLayer(cfg, self.deterministic, name=f"layers_{i}")(x_BWE, bias_BNWS)

        x_BWE = RMSNorm(cfg.layer_norm_epsilon, name="final_norm")(x_BWE)
        return nn.Dropout(cfg.dropout_rate)(x_BWE, deterministic=self.deterministic)


def abstract_params(config: T5Config) -> Any:
    """The T5 encoder's parameter tree as ``jax.ShapeDtypeStruct`` leaves (float32), without allocating it."""
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)  # abstract inputs: nothing is computed or compiled
    shapes = jax.eval_shape(lambda ids: T5Encoder(config).init(jax.random.PRNGKey(0), ids), ids)
    return shapes["params"]
