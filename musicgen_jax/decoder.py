"""The MusicGen decoder: a causal transformer over K parallel EnCodec codebook streams, with a conditioning prefix.

Einsum letters: B batch, T target (query) length, S source (key) length, P prefix length, N heads, H head dim,
D model dim, F ffn dim, K codebooks, V vocab (logits), L layers.

Layout of the parameter tree (what ``convert/decoder.py`` writes):
  embed            (K, V+1, D)   one embedding table per codebook; row V is the BOS/pad token
  layers/attn_norm {scale, bias} (L, D)
  layers/attn/qkv  (L, D, 3, N, H)  fused query/key/value projections (bias-free)
  layers/attn/out  (L, N, H, D)
  layers/mlp_norm  {scale, bias} (L, D)
  layers/mlp/up    (L, D, F)
  layers/mlp/down  (L, F, D)
  final_norm       {scale, bias} (D,)
  lm_heads         (K, D, V)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from musicgen_jax.config import DecoderConfig
from musicgen_jax.layers import activation, layer_norm

_init = nn.initializers.normal(0.02)


class KVCache(NamedTuple):
    """Preallocated keys and values of every layer: ``k``, ``v`` ``(L, B, S, N, H)``; ``S`` is the capacity."""

    k: jax.Array
    v: jax.Array

    @classmethod
    def zeros(cls, config: DecoderConfig, batch: int, capacity: int, dtype=jnp.float32) -> KVCache:
        shape = (config.num_hidden_layers, batch, capacity, config.num_attention_heads, config.head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def sinusoidal_positions(positions_T: jax.Array, dim: int) -> jax.Array:
    """HF's MusicGen sinusoids: ``[cos(p w), sin(p w)]`` (cos half first), ``w_i = 10000^(-i / (dim/2 - 1))``.

    ``positions_T`` int ``(T,)`` -> float32 ``(T, dim)``; an odd ``dim`` gets a zero last column, as in HF.
    """
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -scale)
    angles_TH = positions_T.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(angles_TH), jnp.sin(angles_TH)], axis=1)
    if dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class Attention(nn.Module):
    """Causal self-attention with bias-free fused QKV, writing into an optional preallocated KV cache."""

    config: DecoderConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BTD, mask_BTS, cache=None, layer=None, cache_index=None):
        """``cache``: None, or ``(k, v)`` of every layer ``(L, B, S, N, H)``; this layer's new keys and values are
        written in place at ``[layer, :, cache_index]`` (the cache travels in the layer scan's carry, so XLA updates
        the buffer instead of rebuilding it each step). Returns ``(y_BTD, cache)``."""
        cfg = self.config
        D, N, H = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
        qkv = self.param("qkv", _init, (D, 3, N, H))
        out = self.param("out", _init, (N, H, D))
        # Output axes in the kernel's own order (B, T, then C, N, H): the CPU matmul reads the kernel in place
        # instead of transposing a copy of it every step.
        qkv_BTCNH = jnp.einsum("BTD,DCNH->BTCNH", x_BTD, qkv.astype(x_BTD.dtype))
        q_BTNH, k_BTNH, v_BTNH = qkv_BTCNH[:, :, 0], qkv_BTCNH[:, :, 1], qkv_BTCNH[:, :, 2]
        if cache is not None:
            k_LBSNH, v_LBSNH = cache
            start = (layer, 0, cache_index, 0, 0)
            k_LBSNH = jax.lax.dynamic_update_slice(k_LBSNH, k_BTNH[None].astype(k_LBSNH.dtype), start)
            v_LBSNH = jax.lax.dynamic_update_slice(v_LBSNH, v_BTNH[None].astype(v_LBSNH.dtype), start)
            k_BSNH = jax.lax.dynamic_index_in_dim(k_LBSNH, layer, 0, keepdims=False)
            v_BSNH = jax.lax.dynamic_index_in_dim(v_LBSNH, layer, 0, keepdims=False)
            cache = (k_LBSNH, v_LBSNH)
        else:
            k_BSNH, v_BSNH = k_BTNH, v_BTNH
        scores_BNTS = jnp.einsum("BTNH,BSNH->BNTS", q_BTNH, k_BSNH.astype(q_BTNH.dtype)) * (H**-0.5)
        scores_BNTS = jnp.where(mask_BTS[:, None], scores_BNTS.astype(jnp.float32), jnp.finfo(jnp.float32).min)
        probs_BNTS = jax.nn.softmax(scores_BNTS, axis=-1).astype(x_BTD.dtype)
        probs_BNTS = nn.Dropout(cfg.attention_dropout)(probs_BNTS, deterministic=self.deterministic)
        attn_BNTH = jnp.einsum("BNTS,BSNH->BNTH", probs_BNTS, v_BSNH.astype(x_BTD.dtype))
        return jnp.einsum("BNTH,NHD->BTD", attn_BNTH, out.astype(x_BTD.dtype)), cache


class MLP(nn.Module):
    config: DecoderConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BTD):
        cfg = self.config
        up = self.param("up", _init, (cfg.hidden_size, cfg.ffn_dim))
        down = self.param("down", _init, (cfg.ffn_dim, cfg.hidden_size))
        h_BTF = activation(cfg.activation_function)(jnp.einsum("BTD,DF->BTF", x_BTD, up.astype(x_BTD.dtype)))
        h_BTF = nn.Dropout(cfg.activation_dropout)(h_BTF, deterministic=self.deterministic)
        return jnp.einsum("BTF,FD->BTD", h_BTF, down.astype(x_BTD.dtype))


class DecoderLayer(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``. Scanned over layers by :class:`Decoder`;
    the carry is ``(x_BTD, layer index, cache or None)``."""

    config: DecoderConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, carry, mask_BTS, cache_index):
        x_BTD, layer, cache = carry
        cfg = self.config
        with jax.named_scope("attn"):
            h = layer_norm("attn_norm")(x_BTD)
            h, cache = Attention(cfg, self.deterministic, name="attn")(h, mask_BTS, cache, layer, cache_index)
            x_BTD = x_BTD + nn.Dropout(cfg.dropout)(h, deterministic=self.deterministic)
        with jax.named_scope("mlp"):
            h = layer_norm("mlp_norm")(x_BTD)
            h = MLP(cfg, self.deterministic, name="mlp")(h)
            x_BTD = x_BTD + nn.Dropout(cfg.dropout)(h, deterministic=self.deterministic)
        return (x_BTD, layer + 1, cache), None


class Decoder(nn.Module):
    """Token embeddings (summed over codebooks) behind a conditioning prefix, L scanned layers, K LM heads.

    Call with:
      input_ids_BKT: int ``(B, K, T)`` codes in ``[0, V]`` (``V`` is BOS/pad).
      prefix_BPD: optional float ``(B, P, D)`` conditioning states placed in front of the embedded tokens.
      cache: optional :class:`KVCache`; the new positions are written at ``cache_index``.
      cache_index: int scalar, how many positions the cache already holds (0 without a cache).
      attention_mask_BT: optional ``(B, T)`` 1/0 over the target tokens (HF's ``decoder_attention_mask``): keys at
        0 are not attended to. Every prefix position stays visible, as in HF. Only without a cache.

    Returns ``(logits_BKTV, cache)``, where the logits cover the prefix positions too (``T' = P + T``), as in HF.
    """

    config: DecoderConfig
    deterministic: bool = True

    @nn.compact
    def __call__(
        self, input_ids_BKT, prefix_BPD=None, cache: KVCache | None = None, cache_index=0, attention_mask_BT=None
    ):
        cfg = self.config
        K, V, D = cfg.num_codebooks, cfg.vocab_size, cfg.hidden_size
        embed = self.param("embed", _init, (K, V + 1, D))
        x_BKTD = embed[jnp.arange(K)[None, :, None], input_ids_BKT]
        x_BTD = jnp.sum(x_BKTD, axis=1)
        if prefix_BPD is not None:
            x_BTD = jnp.concatenate([prefix_BPD.astype(x_BTD.dtype), x_BTD], axis=1)
        B, T = x_BTD.shape[:2]

        positions_T = cache_index + jnp.arange(T)
        x_BTD = x_BTD + sinusoidal_positions(positions_T, D).astype(x_BTD.dtype)
        x_BTD = nn.Dropout(cfg.dropout)(x_BTD, deterministic=self.deterministic)

        S = T if cache is None else cache.k.shape[2]
        mask_BTS = (jnp.arange(S)[None, :] <= positions_T[:, None])[None]
        if attention_mask_BT is not None:
            if cache is not None:
                raise ValueError("attention_mask_BT is only supported without a KV cache")
            # HF concatenates ones for the conditioning prefix in front of decoder_attention_mask.
            key_mask_BS = jnp.concatenate(
                [jnp.ones((B, T - attention_mask_BT.shape[1]), bool), attention_mask_BT.astype(bool)], axis=1
            )
            mask_BTS = mask_BTS & key_mask_BS[:, None, :]
        mask_BTS = jnp.broadcast_to(mask_BTS, (B, T, S))

        layers = nn.scan(
            DecoderLayer,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast, nn.broadcast),
            length=cfg.num_hidden_layers,
        )(cfg, self.deterministic, name="layers")
        carry = (x_BTD, jnp.zeros((), jnp.int32), None if cache is None else (cache.k, cache.v))
        (x_BTD, _, new_cache), _ = layers(carry, mask_BTS, cache_index)

        x_BTD = layer_norm("final_norm")(x_BTD)
        lm_heads = self.param("lm_heads", _init, (K, D, V))
        logits_BKTV = jnp.einsum("BTD,KDV->BKTV", x_BTD, lm_heads.astype(x_BTD.dtype))
        return logits_BKTV, (None if new_cache is None else KVCache(*new_cache))


def abstract_params(config: DecoderConfig) -> Any:
    """The decoder's parameter tree as ``jax.ShapeDtypeStruct`` leaves (float32), without allocating it."""
    ids = jnp.zeros((1, config.num_codebooks, 1), jnp.int32)
    shapes = jax.eval_shape(lambda: Decoder(config).init(jax.random.PRNGKey(0), ids))
    return shapes["params"]
