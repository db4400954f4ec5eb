"""The MusicGen decoder: a causal transformer over K parallel EnCodec codebook streams, with a conditioning prefix.

Einsum letters: the package legend (``musicgen_jax/__init__.py``).

Layout of the parameter tree (what ``convert/decoder.py`` writes):
  embed            (K, V+1, D)   one embedding table per codebook; row V is the BOS/pad token
  layers/attn_norm {scale, bias} (L, D)
  layers/attn/qkv  (L, 3, N, H, D)  fused query/key/value projections (bias-free)
  layers/attn/out  (L, D, N, H)
  layers/mlp_norm  {scale, bias} (L, D)
  layers/mlp/up    (L, F, D)
  layers/mlp/down  (L, D, F)
  final_norm       {scale, bias} (D,)
  lm_heads         (K, D, V)

That is the scanned layout (``scan_layers=True``, what checkpoints store and training uses: one compiled layer body,
flat compile time). The unrolled layout (``scan_layers=False``) holds each layer in its own subtree ``layers_0``,
``layers_1``, ... (the same leaves without the leading L axis) and runs the layers as straight-line code: every
matmul then reads its kernel, and attention its KV cache, from a buffer of its own. XLA:CPU cannot read a slice of a
stacked buffer in place and copies each layer's kernels and cache slice out of the stack on every decode step, so
the unrolled layout is the fast one for generation. :func:`unstack_layers` / :func:`stack_layers` convert between
the two; :func:`is_scanned` tells which one a tree uses.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.config import DecoderConfig
from musicgen_jax.layers import activation, declared, dot_general, einsum, layer_norm, linear


class Conditions(NamedTuple):
    """What the decoder is conditioned on, by family (the fields the other family has are None).

    prefix_BPD: MusicGen Melody: float ``(B, P, D)`` states in front of the tokens (chroma frames, then text).
    cross_BWD, cross_mask_BW: plain MusicGen: the projected text states ``(B, W, D)`` every layer cross-attends to,
      and their 1/0 mask ``(B, W)``."""

    prefix_BPD: Any = None
    cross_BWD: Any = None
    cross_mask_BW: Any = None

    @property
    def prefix_length(self) -> int:
        """Positions of the decoder's position table the conditions take (the prefix; cross-attention takes none)."""
        return 0 if self.prefix_BPD is None else self.prefix_BPD.shape[1]

    @property
    def rows(self) -> int:
        return next(x for x in self if x is not None).shape[0]


class Segment(NamedTuple):
    """Read-only keys and values of some positions in front of a cache's buffer (:class:`KVCache`), each array in
    the cache's layout (a leading L axis scanned, a tuple of L arrays unrolled) with U rows, the values transposed
    to ``(U, N, H, C)`` (read kernel-first, the form XLA:CPU streams fastest for a few rows; 2.6x ``(U, N, C, H)``).

    ``k`` ``(U, N, C, H)`` and ``v_t`` ``(U, N, H, C)``: U = B (row by row) or U = 1 (one row every row reads: the
    part of a conditioning prefix that is the same in every row, e.g. the null chroma of a text-only batch). With
    ``k_uncond``, ``v_t_uncond`` (one row): ``k``, ``v_t`` hold the first half of the rows (the conditional rows
    under CFG) and the second half all read the one row (CFG's identical unconditional prefix)."""

    k: Any
    v_t: Any
    k_uncond: Any = None
    v_t_uncond: Any = None

    def layer(self, i: int) -> Segment:
        """Layer ``i``'s arrays of an unrolled segment."""
        return Segment(*(None if x is None else x[i] for x in self))

    @staticmethod
    def length_of(k, scanned: bool) -> int:
        return k.shape[3] if scanned else k[0].shape[2]


class KVCache(NamedTuple):
    """Preallocated keys and values of every layer; ``S`` is the capacity of the writable buffer.

    Scanned layout: ``k``, ``v`` are ``(L, B, N, S, H)`` arrays. Unrolled layout: tuples of L ``(B, N, S, H)``
    arrays, one buffer per layer (see the module docstring). Head-major, so attention reads them without a copy.

    Plain MusicGen (cross-attention) also carries the keys and values of the text states, computed once by the first
    pass (the prefill) and read by every step: ``cross_k``, ``cross_v`` ``(L, B, N, W, H)`` or L ``(B, N, W, H)``,
    and ``cross_mask`` bool ``(B, W)`` (keys at False are not attended to). None for MusicGen Melody.

    ``context``: read-only keys and values of the positions in front of the buffer, kept once for the rows that
    share them (what the prefill found the rows have in common, ``musicgen_jax.sampling``): a tuple of
    :class:`Segment`. The buffer's position 0 is the position after them. A shared segment is read once for all its
    rows, where per-row copies are read once per row: at batch 16 the prefix is most of what a step reads."""

    k: Any
    v: Any
    cross_k: Any = None
    cross_v: Any = None
    cross_mask: Any = None
    context: tuple = ()

    @classmethod
    def zeros(
        cls, config: DecoderConfig, batch: int, capacity: int, dtype=jnp.float32, scanned: bool = True, context=()
    ) -> KVCache:
        L, N, H = config.num_hidden_layers, config.num_attention_heads, config.head_dim
        if scanned:
            shape = (L, batch, N, capacity, H)
            return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), context=tuple(context))
        shape = (batch, N, capacity, H)
        return cls(
            tuple(jnp.zeros(shape, dtype) for _ in range(L)),
            tuple(jnp.zeros(shape, dtype) for _ in range(L)),
            context=tuple(context),
        )

    @property
    def scanned(self) -> bool:
        return not isinstance(self.k, tuple | list)

    @property
    def buffer_length(self) -> int:
        """Positions the writable buffer holds."""
        return self.k.shape[3] if self.scanned else self.k[0].shape[2]

    @property
    def context_length(self) -> int:
        """Positions in front of the buffer (the read-only ``context`` segments)."""
        return sum(Segment.length_of(segment.k, self.scanned) for segment in self.context)

    @property
    def capacity(self) -> int:
        """Positions in all: the context's and the buffer's."""
        return self.context_length + self.buffer_length


def is_scanned(decoder_params) -> bool:
    """Whether a decoder parameter tree is in the scanned layout (one stacked ``layers`` subtree)."""
    return "layers" in decoder_params


def unstack_layers(decoder_params: dict, *, consume: bool = False) -> dict:
    """Scanned -> unrolled layout: ``layers`` (leading L axis) becomes ``layers_0`` ... ``layers_{L-1}``.

    Numpy leaves are sliced as views. With ``consume=True`` the stacked subtree is removed from ``decoder_params``
    and each stacked array is released as soon as it is sliced, so the peak extra memory is one stacked leaf
    rather than a second copy of every layer (what loading uses). A tree already unrolled is returned as is."""
    if not is_scanned(decoder_params):
        return dict(decoder_params)
    out = {k: v for k, v in decoder_params.items() if k != "layers"}
    leaves, treedef = jax.tree_util.tree_flatten(decoder_params.pop("layers") if consume else decoder_params["layers"])
    L = leaves[0].shape[0]
    per_layer = [[None] * len(leaves) for _ in range(L)]
    for j in range(len(leaves)):
        leaf, leaves[j] = leaves[j], None
        for i in range(L):
            per_layer[i][j] = leaf[i]
        del leaf
    for i in range(L):
        out[f"layers_{i}"] = jax.tree_util.tree_unflatten(treedef, per_layer[i])
    return out


def stack_layers(decoder_params) -> dict:
    """Unrolled -> scanned layout (the inverse of :func:`unstack_layers`). A scanned tree is returned as is."""
    if is_scanned(decoder_params):
        return dict(decoder_params)
    names = sorted((k for k in decoder_params if k.startswith("layers_")), key=lambda k: int(k.split("_")[1]))
    if [int(k.split("_")[1]) for k in names] != list(range(len(names))):
        raise ValueError(f"decoder layers are not numbered 0..{len(names) - 1}: {names}")
    out = {k: v for k, v in decoder_params.items() if not k.startswith("layers_")}
    layers = [decoder_params[k] for k in names]
    numpy = all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(layers))
    out["layers"] = jax.tree_util.tree_map(lambda *xs: (np.stack if numpy else jnp.stack)(xs), *layers)
    return out


def sinusoidal_positions(positions_T: jax.Array, dim: int) -> jax.Array:
    """HF's MusicGen sinusoids: ``[cos(p w), sin(p w)]`` (cos half first), ``w_i = 10000^(-i / (dim/2 - 1))``.

    ``positions_T`` int ``(T,)`` -> float32 ``(T, dim)``; an odd ``dim`` gets a zero last column, as in HF.
    """
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -scale)
    angles = positions_T.astype(jnp.float32)[:, None] * freqs[None, :]  # (T, dim // 2)
    emb = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=1)
    if dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class Attention(nn.Module):
    """Causal self-attention with bias-free fused QKV, writing into an optional preallocated KV cache."""

    config: DecoderConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BTD, mask_BTS, cache=None, layer=None, cache_index=None, context=()):
        """``cache``: None; or, scanned, ``(k, v)`` of every layer ``(L, B, N, S, H)`` and this layer's index
        ``layer``: the new keys and values are written in place at ``[layer, :, :, cache_index]`` (the cache travels in
        the layer scan's carry, so XLA updates the buffer instead of rebuilding it each step); or, unrolled
        (``layer`` None), this layer's own ``(k, v)`` ``(B, N, S, H)``, written at ``[:, :, cache_index]``.
        ``context``: this layer's read-only :class:`Segment` s in front of the cache, visible to every query;
        ``mask_BTS`` then covers the cache's positions only.
        Returns ``(y_BTD, cache)``.

        Layouts are chosen so that no weight or cache buffer is transposed on the way into a matmul (XLA would
        otherwise copy it on every decode step): the kernels are stored ``(out, in)`` as PyTorch's and read by
        :func:`~musicgen_jax.layers.linear` as the matrices they are in memory, the QKV output keeps the kernel's
        (G, N, H) order, and the cache is head-major (the attention matmuls batch over B, N)."""
        cfg = self.config
        D, N, H = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
        qkv = self.param("qkv", declared, (3, N, H, D))
        out = self.param("out", declared, (D, N, H))
        prec = cfg.matmul_precision
        qkv_BTGNH = linear(x_BTD, qkv, 3, matmul_precision=prec)
        qkv_GBNTH = qkv_BTGNH.transpose(2, 0, 3, 1, 4)  # activations only: tiny
        q_BNTH, k_BNTH, v_BNTH = qkv_GBNTH[0], qkv_GBNTH[1], qkv_GBNTH[2]
        if cache is not None and layer is None:
            k_BNSH, v_BNSH = cache
            start = (0, 0, cache_index, 0)
            k_BNSH = jax.lax.dynamic_update_slice(k_BNSH, k_BNTH.astype(k_BNSH.dtype), start)
            v_BNSH = jax.lax.dynamic_update_slice(v_BNSH, v_BNTH.astype(v_BNSH.dtype), start)
            cache = (k_BNSH, v_BNSH)
        elif cache is not None:
            k_LBNSH, v_LBNSH = cache
            start = (layer, 0, 0, cache_index, 0)
            k_LBNSH = jax.lax.dynamic_update_slice(k_LBNSH, k_BNTH[None].astype(k_LBNSH.dtype), start)
            v_LBNSH = jax.lax.dynamic_update_slice(v_LBNSH, v_BNTH[None].astype(v_LBNSH.dtype), start)
            k_BNSH = jax.lax.dynamic_index_in_dim(k_LBNSH, layer, 0, keepdims=False)
            v_BNSH = jax.lax.dynamic_index_in_dim(v_LBNSH, layer, 0, keepdims=False)
            cache = (k_LBNSH, v_LBNSH)
        else:
            k_BNSH, v_BNSH = k_BNTH, v_BNTH
        scores_BNTS = einsum("BNTH,BNSH->BNTS", q_BNTH, k_BNSH, matmul_precision=prec, out_dtype=jnp.float32)
        scores_BNTS = jnp.where(mask_BTS[:, None], scores_BNTS * (H**-0.5), jnp.finfo(jnp.float32).min)
        # One softmax over every key: the context segments' scores in front of the cache's (HF's one attention over
        # the whole sequence; only the order of the float32 sums differs).
        parts = [_segment_scores(q_BNTH, segment, prec) * (H**-0.5) for segment in context] + [scores_BNTS]
        probs_BNTS = jax.nn.softmax(jnp.concatenate(parts, axis=-1), axis=-1).astype(x_BTD.dtype)
        probs_BNTS = nn.Dropout(cfg.attention_dropout)(probs_BNTS, deterministic=self.deterministic)
        bounds = [0, *np.cumsum([p.shape[-1] for p in parts]).tolist()]
        probs = [probs_BNTS[..., start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
        attn_BNTH = einsum("BNTS,BNSH->BNTH", probs[-1], v_BNSH, matmul_precision=prec)
        for segment, p in zip(context, probs[:-1], strict=True):
            attn_BNTH = attn_BNTH + _segment_values(p, segment, prec)
        return linear(attn_BNTH.transpose(0, 2, 1, 3), out, 1, matmul_precision=prec), cache


def _rows_einsum(spec_own: str, spec_one: str, x, y, prec, out_dtype=None):
    """``x`` (query rows first) against a segment array ``y``: row by row when their rows agree, else (``y`` one row)
    every row against the one (a matmul over the rows, the array read once)."""
    if y.shape[0] == x.shape[0]:
        return einsum(spec_own, x, y, matmul_precision=prec, out_dtype=out_dtype)
    if y.shape[0] != 1:
        raise ValueError(f"a context segment of {y.shape[0]} rows cannot serve {x.shape[0]} query rows")
    return einsum(spec_one, x, y[0], matmul_precision=prec, out_dtype=out_dtype)


def _by_halves(fn, x, own, uncond):
    """``fn(x, own)`` for every row, or with an unconditional part: the first half of ``x`` against ``own``, the
    second against ``uncond``."""
    if uncond is None:
        return fn(x, own)
    half = x.shape[0] // 2
    return jnp.concatenate([fn(x[:half], own), fn(x[half:], uncond)], axis=0)


def _segment_scores(q_BNTH, segment: Segment, prec):
    """Float32 scores ``(B, N, T, C)`` of the queries against a context :class:`Segment`."""

    def scores(q, k):
        return _rows_einsum("BNTH,BNCH->BNTC", "BNTH,NCH->BNTC", q, k, prec, jnp.float32)

    return _by_halves(scores, q_BNTH, segment.k, segment.k_uncond)


def _segment_values(probs_BNTC, segment: Segment, prec):
    """``probs (B, N, T, C)`` over a context :class:`Segment`'s values: ``(B, N, T, H)``."""

    def values(p, v_t):
        return _rows_einsum("BNTC,BNHC->BNTH", "BNTC,NHC->BNTH", p, v_t, prec)

    return _by_halves(values, probs_BNTC, segment.v_t, segment.v_t_uncond)


class CrossAttention(nn.Module):
    """Plain MusicGen's ``encoder_attn``: queries from the decoder, keys and values from the (projected) text states,
    all projections bias-free. Keys at mask 0 get float32 min (HF's additive mask), so a row whose keys are all
    masked (the unconditional half under guidance) averages the values, as HF does."""

    config: DecoderConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BTD, encoder_BWD, mask_BW, kv=None):
        """``kv``: the keys and values ``(k_BNWH, v_BNWH)`` of an earlier pass, or None to compute them from
        ``encoder_BWD``. Returns ``(y_BTD, (k_BNWH, v_BNWH))``."""
        cfg = self.config
        D, N, H = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
        prec = cfg.matmul_precision
        q = self.param("q", declared, (N, H, D))
        kv_proj = self.param("kv", declared, (2, N, H, D))
        out = self.param("out", declared, (D, N, H))
        if kv is None:
            kv_BWGNH = linear(encoder_BWD.astype(x_BTD.dtype), kv_proj, 3, matmul_precision=prec)
            kv_GBNWH = kv_BWGNH.transpose(2, 0, 3, 1, 4)
            kv = (kv_GBNWH[0], kv_GBNWH[1])
        k_BNWH, v_BNWH = kv
        # The kernels are read as the (N*H, D) / (D, N*H) matrices they are in memory (layers.linear); only the
        # tiny activations are transposed.
        q_BNTH = linear(x_BTD, q, 2, matmul_precision=prec).transpose(0, 2, 1, 3)
        scores_BNTW = einsum("BNTH,BNWH->BNTW", q_BNTH, k_BNWH, matmul_precision=prec, out_dtype=jnp.float32)
        scores_BNTW = jnp.where(mask_BW[:, None, None, :], scores_BNTW * (H**-0.5), jnp.finfo(jnp.float32).min)
        probs_BNTW = jax.nn.softmax(scores_BNTW, axis=-1).astype(x_BTD.dtype)
        probs_BNTW = nn.Dropout(cfg.attention_dropout)(probs_BNTW, deterministic=self.deterministic)
        attn_BNTH = einsum("BNTW,BNWH->BNTH", probs_BNTW, v_BNWH, matmul_precision=prec)
        return linear(attn_BNTH.transpose(0, 2, 1, 3), out, 1, matmul_precision=prec), kv


class MLP(nn.Module):
    config: DecoderConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BTD):
        cfg = self.config
        up = self.param("up", declared, (cfg.ffn_dim, cfg.hidden_size))
        down = self.param("down", declared, (cfg.hidden_size, cfg.ffn_dim))
        prec = cfg.matmul_precision
        h_BTF = activation(cfg.activation_function)(linear(x_BTD, up, 1, matmul_precision=prec))
        h_BTF = nn.Dropout(cfg.activation_dropout)(h_BTF, deterministic=self.deterministic)
        return linear(h_BTF, down, 1, matmul_precision=prec)


class DecoderLayer(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln(x))``, then (plain MusicGen) ``x + cross_attn(ln(x), text)``, then
    ``x + mlp(ln(x))``. Scanned over layers by :class:`Decoder`, the carry is ``(x_BTD, layer index, every layer's
    cache or None)``; unrolled, ``(x_BTD, None, this layer's cache or None)``.

    ``cross_kv``: this layer's cross-attention keys and values from an earlier pass, or None to compute them from
    ``encoder_BWD``; the second output is the newly computed ones (None when they were given or there is no
    cross-attention), so a scan stacks them only at the prefill."""

    config: DecoderConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, carry, mask_BTS, cache_index, encoder_BWD=None, encoder_mask_BW=None, cross_kv=None, context=()):
        x_BTD, layer, cache = carry
        cfg = self.config
        with jax.named_scope("attn"):
            h = layer_norm("attn_norm")(x_BTD)
            h, cache = Attention(cfg, self.deterministic, name="attn")(h, mask_BTS, cache, layer, cache_index, context)
            x_BTD = x_BTD + nn.Dropout(cfg.dropout)(h, deterministic=self.deterministic)
        new_kv = None
        if cfg.cross_attention:
            with jax.named_scope("cross_attn"):
                h = layer_norm("cross_norm")(x_BTD)
                h, kv = CrossAttention(cfg, self.deterministic, name="cross_attn")(
                    h, encoder_BWD, encoder_mask_BW, cross_kv
                )
                new_kv = kv if cross_kv is None else None
                x_BTD = x_BTD + nn.Dropout(cfg.dropout)(h, deterministic=self.deterministic)
        with jax.named_scope("mlp"):
            h = layer_norm("mlp_norm")(x_BTD)
            h = MLP(cfg, self.deterministic, name="mlp")(h)
            x_BTD = x_BTD + nn.Dropout(cfg.dropout)(h, deterministic=self.deterministic)
        return (x_BTD, None if layer is None else layer + 1, cache), new_kv


class Decoder(nn.Module):
    """Token embeddings (summed over codebooks) behind a conditioning prefix, L scanned layers, K LM heads.

    Call with:
      input_ids_BKT: int ``(B, K, T)`` codes in ``[0, V]`` (``V`` is BOS/pad), or None: the prefix alone.
      prefix_BPD: optional float ``(B, P, D)`` conditioning states placed in front of the embedded tokens.
      cache: optional :class:`KVCache` in this module's layout; the new positions are written at ``cache_index``.
      cache_index: int scalar, how many positions the cache already holds, its read-only context included (0
        without a cache): the position of the first new one.
      attention_mask_BT: optional ``(B, T)`` 1/0 over the target tokens (HF's ``decoder_attention_mask``): keys at
        0 are not attended to. Every prefix position stays visible, as in HF. Only without a cache.
      encoder_BWD, encoder_mask_BW: plain MusicGen (``config.cross_attention``): the projected text states every
        layer attends to, and their 1/0 mask (default all 1). With a cache they are needed only by the first pass,
        which stores their keys and values (and the mask) in the cache for the steps after it.

    Returns ``(logits_BKTV, cache)``, where the logits cover the prefix positions too (``T' = P + T``), as in HF.
    """

    config: DecoderConfig
    deterministic: bool = True
    scan_layers: bool = True  # the parameter layout; see the module docstring
    # gradient checkpointing: each layer's activations are recomputed in the backward pass instead of being kept
    # (jax.checkpoint around every layer, inside the scan); the same numbers, less memory, about one more forward
    remat: bool = False

    @nn.compact
    def __call__(
        self,
        input_ids_BKT,
        prefix_BPD=None,
        cache: KVCache | None = None,
        cache_index=0,
        attention_mask_BT=None,
        encoder_BWD=None,
        encoder_mask_BW=None,
    ):
        cfg = self.config
        K, V, D = cfg.num_codebooks, cfg.vocab_size, cfg.hidden_size
        embed = self.param("embed", declared, (K, V + 1, D))
        if input_ids_BKT is None:  # the prefix alone (the prefill's common positions): no zero-length arrays
            x_BTD = prefix_BPD.astype(embed.dtype)
        else:
            x_BKTD = embed[jnp.arange(K)[None, :, None], input_ids_BKT]
            x_BTD = jnp.sum(x_BKTD, axis=1)
            if prefix_BPD is not None:
                x_BTD = jnp.concatenate([prefix_BPD.astype(x_BTD.dtype), x_BTD], axis=1)
        B, T = x_BTD.shape[:2]

        positions_T = cache_index + jnp.arange(T)
        x_BTD = x_BTD + sinusoidal_positions(positions_T, D).astype(x_BTD.dtype)
        x_BTD = nn.Dropout(cfg.dropout)(x_BTD, deterministic=self.deterministic)

        # The cache's buffer starts after its read-only context (every query sees all of that): the mask covers the
        # buffer's positions, and the new keys and values are written at their position in it.
        offset = 0 if cache is None else cache.context_length
        S = T if cache is None else cache.buffer_length
        mask_BTS = ((offset + jnp.arange(S))[None, :] <= positions_T[:, None])[None]
        if attention_mask_BT is not None:
            if cache is not None:
                raise ValueError("attention_mask_BT is only supported without a KV cache")
            # HF concatenates ones for the conditioning prefix in front of decoder_attention_mask.
            key_mask_BS = jnp.concatenate(
                [jnp.ones((B, T - attention_mask_BT.shape[1]), bool), attention_mask_BT.astype(bool)], axis=1
            )
            mask_BTS = mask_BTS & key_mask_BS[:, None, :]
        mask_BTS = jnp.broadcast_to(mask_BTS, (B, T, S))

        if cache is not None and cache.scanned != self.scan_layers:
            raise ValueError(
                f"the KV cache layout (scanned={cache.scanned}) differs from scan_layers={self.scan_layers}"
            )
        cross_kv, cross_mask_BW = None, None
        if cfg.cross_attention:
            if cache is not None and cache.cross_k is not None:
                cross_kv, cross_mask_BW = (cache.cross_k, cache.cross_v), cache.cross_mask
            elif encoder_BWD is None:
                raise ValueError("this decoder attends to text states (plain MusicGen): pass encoder_BWD")
            else:
                cross_mask_BW = (
                    jnp.ones(encoder_BWD.shape[:2], bool) if encoder_mask_BW is None else encoder_mask_BW.astype(bool)
                )
        layer_class = nn.remat(DecoderLayer, prevent_cse=not self.scan_layers) if self.remat else DecoderLayer
        if self.scan_layers:
            layers = nn.scan(
                layer_class,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0, 0),
                length=cfg.num_hidden_layers,
            )(cfg, self.deterministic, name="layers")
            carry = (x_BTD, jnp.zeros((), jnp.int32), None if cache is None else (cache.k, cache.v))
            context = () if cache is None else cache.context
            (x_BTD, _, new_cache), new_kv = layers(
                carry, mask_BTS, cache_index - offset, encoder_BWD, cross_mask_BW, cross_kv, context
            )
        else:
            ks, vs, new_ks, new_vs = [], [], [], []
            # Inference (deterministic, no remat): each layer runs as one jitted function of its own parameters,
            # which JAX traces and lowers once for all L layers (the same shapes), instead of L times; XLA inlines
            # the calls, so the compiled program and its numbers are those of the layers written out. A cached
            # run's tracing of the prefill and the steps is most of its start-up (benchmarks/NOTES.md #18).
            traced_once = self.deterministic and not self.remat and not self.is_initializing()
            for i in range(cfg.num_hidden_layers):
                layer_cache = None if cache is None else (cache.k[i], cache.v[i])
                layer_kv = None if cross_kv is None else (cross_kv[0][i], cross_kv[1][i])
                context = () if cache is None else tuple(segment.layer(i) for segment in cache.context)
                args = (
                    (x_BTD, None, layer_cache),
                    mask_BTS,
                    cache_index - offset,
                    encoder_BWD,
                    cross_mask_BW,
                    layer_kv,
                    context,
                )
                if traced_once:
                    (x_BTD, _, layer_cache), kv = _layer_call(cfg, self.variables["params"][f"layers_{i}"], *args)
                else:
                    (x_BTD, _, layer_cache), kv = layer_class(cfg, self.deterministic, name=f"layers_{i}")(*args)
                if layer_cache is not None:
                    ks.append(layer_cache[0])
                    vs.append(layer_cache[1])
                if kv is not None:
                    new_ks.append(kv[0])
                    new_vs.append(kv[1])
            new_cache = None if cache is None else (tuple(ks), tuple(vs))
            new_kv = (tuple(new_ks), tuple(new_vs)) if new_ks else None
        if new_cache is not None and cfg.cross_attention:  # the text's keys and values ride in the cache
            new_cache = (*new_cache, *(cross_kv if new_kv is None else new_kv), cross_mask_BW)
        if new_cache is not None:
            new_cache = KVCache(*new_cache)._replace(context=cache.context)

        x_BTD = layer_norm("final_norm")(x_BTD)
        lm_heads = self.param("lm_heads", declared, (K, D, V))
        # K as a batch axis of both operands, activations as the left operand: the heads are read as the K (D, V)
        # matrices they are in memory. ("BTD,KDV" has XLA transpose them all into one (D, K * V) matrix on every
        # step, and jnp.einsum puts the kernel on the left, where XLA:CPU's batched matmul is 8x slower.)
        B, T = x_BTD.shape[:2]
        x_rows = jnp.broadcast_to(x_BTD.reshape(1, B * T, D), (K, B * T, D))  # (K, B*T, D)
        dims = (((2,), (1,)), ((0,), (0,)))  # contract D; batch over K
        # float32 logits whatever the weights' dtype (sampling and the loss read them in float32)
        logits_rows = dot_general(  # (K, B*T, V)
            x_rows, lm_heads, dims, matmul_precision=cfg.matmul_precision, out_dtype=jnp.float32
        )
        logits_BKTV = logits_rows.reshape(K, B, T, V).transpose(1, 0, 2, 3)
        return logits_BKTV, new_cache


@functools.partial(jax.jit, static_argnums=0)
def _layer_call(
    config: DecoderConfig, layer_params, carry, mask_BTS, cache_index, encoder_BWD, encoder_mask_BW, kv, context
):
    """One unrolled layer's inference forward (:class:`DecoderLayer`, deterministic) as a function of its parameters."""
    return DecoderLayer(config).apply(
        {"params": layer_params}, carry, mask_BTS, cache_index, encoder_BWD, encoder_mask_BW, kv, context
    )


def abstract_params(config: DecoderConfig) -> Any:
    """The decoder's parameter tree as ``jax.ShapeDtypeStruct`` leaves (float32), without allocating it."""
    ids = jax.ShapeDtypeStruct((1, config.num_codebooks, 1), jnp.int32)  # abstract: nothing is computed or compiled
    text = jax.ShapeDtypeStruct((1, 1, config.hidden_size), jnp.float32) if config.cross_attention else None
    shapes = jax.eval_shape(
        lambda ids, text: Decoder(config).init(jax.random.PRNGKey(0), ids, encoder_BWD=text), ids, text
    )
    return shapes["params"]
