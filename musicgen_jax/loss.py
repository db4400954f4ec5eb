"""HF's language-modelling loss for MusicGen Melody: pure functions below both the model and the trainer.

Einsum letters: the package legend (``musicgen_jax/__init__.py``).

The loss is HF's ``MusicgenMelodyForConditionalGeneration.forward(..., labels=...)``: labels ``(B, T, K)`` int
(HF's layout, already in the delay pattern), decoder inputs ``shift_tokens_right(labels)`` (BOS first, -100 -> pad),
logits over prefix + T positions of which the last T are scored, labels equal to ``pad_token_id`` ignored like -100,
and the mean cross-entropy of each codebook averaged over codebooks.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax import core, sampling
from musicgen_jax.config import MusicgenMelodyConfig

IGNORE_INDEX = -100  # torch CrossEntropyLoss's default ignore_index, which HF relies on


def shift_tokens_right(labels_BTK, pad_token_id: int, bos_token_id: int):
    """HF ``shift_tokens_right``: labels ``(B, T, K)`` -> decoder input ids ``(B, K, T)``.

    Position 0 is ``bos_token_id``; position t is the label at t - 1; -100 becomes ``pad_token_id``. Works on numpy
    and jax arrays alike.
    """
    xp = jnp if isinstance(labels_BTK, jax.Array) else np
    ids_BKT = xp.swapaxes(labels_BTK, 1, 2)
    bos_BK1 = xp.full((*ids_BKT.shape[:2], 1), bos_token_id, ids_BKT.dtype)
    shifted = xp.concatenate([bos_BK1, ids_BKT[..., :-1]], axis=-1)
    return xp.where(shifted == IGNORE_INDEX, pad_token_id, shifted)


def check_labels(labels, num_codebooks: int, vocab_size: int) -> np.ndarray:
    """HF labels ``(B, T, K)`` as int64 numpy, after checking their shape and that values lie in -100 or [0, V]."""
    array = np.asarray(labels)
    if array.ndim != 3 or array.shape[2] != num_codebooks or array.shape[1] == 0:
        raise ValueError(
            f"labels must have shape (batch, seq_len, num_codebooks={num_codebooks}) as in HF, got {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must hold integers, got dtype {array.dtype}")
    bad = (array != IGNORE_INDEX) & ((array < 0) | (array > vocab_size))
    if bad.any():
        raise ValueError(f"labels values must be -100 or lie in [0, {vocab_size}], got {array[bad][0]}")
    return array.astype(np.int64)


def delay_labels(codes_BKY: np.ndarray, pad_token_id: int, audio_channels: int = 1) -> np.ndarray:
    """Codec codes ``(B, K, Y)`` -> training labels ``(B, Y + K' - 1, K)`` in HF's layout (``K'`` codebooks per
    channel).

    The labels are the code buffer that ``generate`` fills, without its BOS column: codebook k (stereo: pair k) is
    delayed by k and ``pad_token_id`` fills the triangles (ignored by the loss). Negative codes (e.g. -100 for
    frames past the end of a clip) stay in place and are ignored too.
    """
    B, K, Y = codes_BKY.shape
    per_channel = K // audio_channels
    length = Y + per_channel  # BOS + Y frames + the delays
    if length < 2 * per_channel - 1:
        raise ValueError(f"{Y} frames are too few for the delay pattern of {per_channel} codebooks")
    bos = np.full((B, K, 1), pad_token_id, np.int64)
    ids = np.concatenate([bos, codes_BKY.astype(np.int64)], axis=2)
    _, pattern_BKT = sampling.build_delay_pattern(ids, pad_token_id, length, audio_channels)
    return np.swapaxes(pattern_BKT[:, :, 1:], 1, 2)


def codebook_cross_entropy(logits_BKTV, labels_BTK, pad_token_id: int):
    """HF's per-codebook loss on the logits of the last ``T`` positions.

    Args:
      logits_BKTV: ``(B, K, T', V)`` with ``T' >= T`` (the prefix positions in front are dropped).
      labels_BTK: int ``(B, T, K)``; -100 and ``pad_token_id`` are ignored.

    Returns:
      ``(loss, per_codebook_K, tokens_K)``: the float32 mean over codebooks of each codebook's mean cross-entropy over
      its non-ignored positions, those means ``(K,)`` and how many positions each counted ``(K,)``. As torch's
      ``CrossEntropyLoss``, a codebook with no label left gives NaN (0 / 0), and so does the loss.
    """
    T = labels_BTK.shape[1]
    logits_BKTV = logits_BKTV[:, :, -T:].astype(jnp.float32)
    labels_BKT = jnp.swapaxes(labels_BTK, 1, 2)
    valid_BKT = (labels_BKT != IGNORE_INDEX) & (labels_BKT != pad_token_id)
    safe_BKT = jnp.where(valid_BKT, labels_BKT, 0).astype(jnp.int32)
    logz_BKT = jax.nn.logsumexp(logits_BKTV, axis=-1)
    picked_BKT = jnp.take_along_axis(logits_BKTV, safe_BKT[..., None], axis=-1)[..., 0]
    nll_BKT = jnp.where(valid_BKT, logz_BKT - picked_BKT, 0.0)
    tokens_K = jnp.sum(valid_BKT, axis=(0, 2)).astype(jnp.float32)
    per_codebook_K = jnp.sum(nll_BKT, axis=(0, 2)) / tokens_K
    return jnp.mean(per_codebook_K), per_codebook_K, tokens_K


def _cast_floating(tree, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def drop_conditions(text_BWE, mask_BW, chroma_BMC, uncond_B):
    """Classifier-free guidance dropout: rows where ``uncond_B`` (bool ``(B,)``) is set become the unconditional
    input exactly as generation builds it (:func:`musicgen_jax.conditioning.generation_conditions`): zero T5 states
    and a zero mask for the text (after T5, so the states are zeros and not those of an empty caption) and, for a
    melody model given chroma ``(B, M, C)``, the null chroma (one-hot at bin 0) with as many frames. Any input may be
    None. Returns ``(text_BWE, mask_BW, chroma_BMC)``."""
    keep_B = jnp.logical_not(jnp.asarray(uncond_B, bool))
    if text_BWE is not None:
        text_BWE = jnp.where(keep_B[:, None, None], text_BWE, jnp.zeros_like(text_BWE))
    if mask_BW is not None:
        mask_BW = jnp.where(keep_B[:, None], mask_BW, jnp.zeros_like(mask_BW))
    if chroma_BMC is not None:
        null_BMC = jnp.zeros_like(chroma_BMC).at[:, :, 0].set(1)
        chroma_BMC = jnp.where(keep_B[:, None, None], chroma_BMC, null_BMC)
    return text_BWE, mask_BW, chroma_BMC


def _cast_params(params: dict, trainable: tuple[str, ...] | None, compute_dtype: Any) -> dict:
    if trainable is not None:
        params = {k: v if k in trainable else jax.lax.stop_gradient(v) for k, v in params.items()}
    if compute_dtype is not None:
        params = _cast_floating(params, compute_dtype)  # bf16 compute; the gradient flows back to the f32 masters
    return params


def training_logits(
    params: dict,
    config: MusicgenMelodyConfig,
    batch: Mapping[str, Any],
    *,
    rng: jax.Array | None = None,
    deterministic: bool = True,
    trainable: tuple[str, ...] | None = None,
    remat: bool = False,
) -> jax.Array:
    """The decoder logits ``(B, K, P + T, V)`` the loss scores, from a batch as for :func:`loss_fn` (``params``
    already cast by the caller). A row whose optional ``uncond`` flag (bool ``(B,)``) is set is conditioned as
    generation's unconditional row (:func:`drop_conditions`). ``remat``: each decoder layer recomputed in the
    backward pass."""
    dtype = jax.tree_util.tree_leaves(params["decoder"])[0].dtype
    dec = config.decoder
    if not deterministic and rng is None:
        raise ValueError("deterministic=False (dropout) needs an rng")
    text_rng, decoder_rng = (None, None) if rng is None else jax.random.split(rng)

    # The prefix, as HF's forward builds it (text zeroed at padding, null chroma when only text is given).
    text = mask = None
    if batch.get("input_ids") is not None:
        mask = batch.get("attention_mask")
        # A frozen text encoder is a fixed feature extractor: no dropout in it.
        text_deterministic = deterministic or (trainable is not None and "text_encoder" not in trainable)
        text = core.encode_text(
            params, config, batch["input_ids"], mask, deterministic=text_deterministic, rng=text_rng
        )
    features = batch.get("input_features")
    features = None if features is None else features.astype(dtype)
    if batch.get("uncond") is not None:
        if mask is None and text is not None:
            mask = jnp.ones(batch["input_ids"].shape, jnp.int32)
        text, mask, features = drop_conditions(text, mask, features, batch["uncond"])

    labels_BTK = batch["labels"]
    ids_BKT = batch.get("decoder_input_ids")
    if ids_BKT is None:
        ids_BKT = shift_tokens_right(labels_BTK, dec.pad_token_id, dec.bos_token_id)
    logits_BKTV, _ = core.forward(
        params,
        config,
        ids_BKT,
        text_BWE=text,
        text_mask_BW=mask,
        chroma_BMC=features,
        target_mask_BT=batch.get("decoder_attention_mask"),
        deterministic=deterministic,
        rng=decoder_rng,
        remat=remat,
    )
    return logits_BKTV


def loss_and_metrics(
    params: dict,
    config: MusicgenMelodyConfig,
    batch: Mapping[str, Any],
    *,
    rng: jax.Array | None = None,
    deterministic: bool = True,
    trainable: tuple[str, ...] | None = None,
    compute_dtype: Any = None,
    remat: bool = False,
) -> tuple[jax.Array, dict]:
    """:func:`loss_fn` and its metrics ``{"per_codebook": (K,), "tokens": scalar, "tokens_K": (K,)}`` (for
    ``has_aux``)."""
    params = _cast_params(params, trainable, compute_dtype)
    logits_BKTV = training_logits(
        params, config, batch, rng=rng, deterministic=deterministic, trainable=trainable, remat=remat
    )
    loss, per_codebook, tokens = codebook_cross_entropy(logits_BKTV, batch["labels"], config.decoder.pad_token_id)
    return loss, {"per_codebook": per_codebook, "tokens": jnp.sum(tokens), "tokens_K": tokens}


def loss_fn(
    params: dict,
    config: MusicgenMelodyConfig,
    batch: Mapping[str, Any],
    *,
    rng: jax.Array | None = None,
    deterministic: bool = True,
    trainable: tuple[str, ...] | None = None,
    compute_dtype: Any = None,
    remat: bool = False,
) -> jax.Array:
    """HF's training loss, a pure differentiable function: float32 scalar.

    Args:
      params: the full parameter tree (``text_encoder``, ``decoder``, projections; ``audio_encoder`` is unused).
      config: the model config (static under jit).
      batch: ``labels`` int ``(B, T, K)`` in HF's layout (delay pattern applied; -100 or ``pad_token_id`` where
        nothing is scored); optional ``input_ids``/``attention_mask`` int ``(B, W)`` (text), ``input_features`` float
        ``(B, M, C)`` (chroma), ``decoder_attention_mask`` ``(B, T)``, ``decoder_input_ids`` int ``(B, K, T)``
        (default: ``shift_tokens_right(labels)``, as HF), and ``uncond`` bool ``(B,)``: rows trained as
        generation's unconditional input (classifier-free guidance dropout, :func:`drop_conditions`).
      rng: PRNG key for dropout (needed when ``deterministic`` is False).
      deterministic: False applies the config's dropout rates (the decoder's; T5's only when it is trainable).
      trainable: top-level parts that receive gradients; the others pass through ``stop_gradient``. None: all.
      compute_dtype: e.g. ``jnp.bfloat16``: the parameters are cast inside the loss (mixed precision); the logits
        are cast back to float32 for the cross-entropy.
      remat: gradient checkpointing: each decoder layer is recomputed in the backward pass (less memory).
    """
    return loss_and_metrics(
        params,
        config,
        batch,
        rng=rng,
        deterministic=deterministic,
        trainable=trainable,
        compute_dtype=compute_dtype,
        remat=remat,
    )[0]


@functools.partial(jax.jit, static_argnames=("pad_token_id",))
def loss_from_logits(logits_BKTV, labels_BTK, pad_token_id: int):
    """:func:`codebook_cross_entropy`'s scalar, jitted (what ``model(..., labels=...).loss`` reports)."""
    return codebook_cross_entropy(logits_BKTV, labels_BTK, pad_token_id)[0]
