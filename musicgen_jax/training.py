"""Fine-tuning: HF's language-modelling loss, an optax optimizer, a jitted train step, orbax checkpoints.

Einsum letters: B batch, S text length, F chroma frames, C chroma bins, P conditioning prefix length, T target
(code) length, K codebooks, V vocab (logits), D decoder model dim.

The loss is HF's ``MusicgenMelodyForConditionalGeneration.forward(..., labels=...)``: labels ``(B, T, K)`` int
(HF's layout, already in the delay pattern), decoder inputs ``shift_tokens_right(labels)`` (BOS first, -100 -> pad),
logits over prefix + T positions of which the last T are scored, labels equal to ``pad_token_id`` ignored like -100,
and the mean cross-entropy of each codebook averaged over codebooks.

Training keeps float32 master weights in a :class:`TrainState` and differentiates only the *trainable* top-level
parts of the parameter tree (by default the decoder and the two projections; the T5 text encoder on request; the
EnCodec codec never, it only turns audio into codes once before training).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from musicgen_jax import conditioning, decoder, encodec, sampling, t5
from musicgen_jax.config import MusicgenMelodyConfig
from musicgen_jax.decoder import Decoder, is_scanned
from musicgen_jax.t5 import T5Encoder

if TYPE_CHECKING:
    from musicgen_jax.modeling import MusicgenMelodyForConditionalGeneration, MusicgenMelodyOutput

IGNORE_INDEX = -100  # torch CrossEntropyLoss's default ignore_index, which HF relies on
FROZEN_BY_DEFAULT = ("text_encoder", "audio_encoder")
_NO_DECAY = frozenset({"scale", "bias"})  # LayerNorm/RMSNorm weights and biases, as HF Trainer's default

# ---------------------------------------------------------------------------------------------------------------
# The loss.


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


def loss_and_metrics(
    params: dict,
    config: MusicgenMelodyConfig,
    batch: Mapping[str, Any],
    *,
    rng: jax.Array | None = None,
    deterministic: bool = True,
    trainable: tuple[str, ...] | None = None,
    compute_dtype: Any = None,
) -> tuple[jax.Array, dict]:
    """:func:`loss_fn` and its metrics ``{"per_codebook": (K,), "tokens": scalar}`` (for ``has_aux``)."""
    if trainable is not None:
        params = {k: v if k in trainable else jax.lax.stop_gradient(v) for k, v in params.items()}
    if compute_dtype is not None:
        params = _cast_floating(params, compute_dtype)  # bf16 compute; the gradient flows back to the f32 masters
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
        text = T5Encoder(config.text_encoder, deterministic=text_deterministic).apply(
            {"params": params["text_encoder"]},
            batch["input_ids"],
            mask,
            rngs={} if text_deterministic else {"dropout": text_rng},
        )
    features = batch.get("input_features")
    features = None if features is None else features.astype(dtype)
    prefix_BPD = conditioning.forward_prefix(params, config, text, mask, features)

    labels_BTK = batch["labels"]
    ids_BKT = batch.get("decoder_input_ids")
    if ids_BKT is None:
        ids_BKT = shift_tokens_right(labels_BTK, dec.pad_token_id, dec.bos_token_id)
    logits_BKTV, _ = Decoder(dec, deterministic, scan_layers=is_scanned(params["decoder"])).apply(
        {"params": params["decoder"]},
        ids_BKT,
        prefix_BPD,
        attention_mask_BT=batch.get("decoder_attention_mask"),
        rngs={} if deterministic else {"dropout": decoder_rng},
    )
    loss, per_codebook, tokens = codebook_cross_entropy(logits_BKTV, labels_BTK, dec.pad_token_id)
    return loss, {"per_codebook": per_codebook, "tokens": jnp.sum(tokens)}


def loss_fn(
    params: dict,
    config: MusicgenMelodyConfig,
    batch: Mapping[str, Any],
    *,
    rng: jax.Array | None = None,
    deterministic: bool = True,
    trainable: tuple[str, ...] | None = None,
    compute_dtype: Any = None,
) -> jax.Array:
    """HF's training loss, a pure differentiable function: float32 scalar.

    Args:
      params: the full parameter tree (``text_encoder``, ``decoder``, projections; ``audio_encoder`` is unused).
      config: the model config (static under jit).
      batch: ``labels`` int ``(B, T, K)`` in HF's layout (delay pattern applied; -100 or ``pad_token_id`` where
        nothing is scored); optional ``input_ids``/``attention_mask`` int ``(B, S)`` (text), ``input_features`` float
        ``(B, F, C)`` (chroma), ``decoder_attention_mask`` ``(B, T)``, and ``decoder_input_ids`` int ``(B, K, T)``
        (default: ``shift_tokens_right(labels)``, as HF).
      rng: PRNG key for dropout (needed when ``deterministic`` is False).
      deterministic: False applies the config's dropout rates (the decoder's; T5's only when it is trainable).
      trainable: top-level parts that receive gradients; the others pass through ``stop_gradient``. None: all.
      compute_dtype: e.g. ``jnp.bfloat16``: the parameters are cast inside the loss (mixed precision); the logits
        are cast back to float32 for the cross-entropy.
    """
    return loss_and_metrics(
        params,
        config,
        batch,
        rng=rng,
        deterministic=deterministic,
        trainable=trainable,
        compute_dtype=compute_dtype,
    )[0]


@functools.partial(jax.jit, static_argnames=("pad_token_id",))
def _loss_from_logits(logits_BKTV, labels_BTK, pad_token_id: int):
    return codebook_cross_entropy(logits_BKTV, labels_BTK, pad_token_id)[0]


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


def model_loss(
    model: MusicgenMelodyForConditionalGeneration,
    *,
    labels,
    input_ids=None,
    attention_mask=None,
    input_features=None,
    decoder_input_ids=None,
    decoder_attention_mask=None,
    encoder_hidden_states=None,
) -> MusicgenMelodyOutput:
    """``model(..., labels=labels)`` as HF: the forward pass's output with ``.loss`` filled.

    ``labels`` is int ``(batch, seq_len, num_codebooks)`` (HF's layout). Without ``decoder_input_ids`` the decoder
    reads ``shift_tokens_right(labels)``; the other arguments are those of ``model.__call__``.
    """
    dec = model.config.decoder
    labels_BTK = check_labels(labels, dec.num_codebooks, dec.vocab_size)
    if decoder_input_ids is None:
        ids_BKT = shift_tokens_right(labels_BTK, dec.pad_token_id, dec.bos_token_id)
        decoder_input_ids = ids_BKT.reshape(-1, ids_BKT.shape[2])
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        input_features=input_features,
        decoder_input_ids=decoder_input_ids,
        decoder_attention_mask=decoder_attention_mask,
        encoder_hidden_states=encoder_hidden_states,
    )
    logits = out.logits
    batch = logits.shape[0] // dec.num_codebooks
    if batch != labels_BTK.shape[0] or np.shape(decoder_input_ids)[1] != labels_BTK.shape[1]:
        raise ValueError(
            f"labels {labels_BTK.shape} do not match decoder_input_ids (batch {batch}, length "
            f"{np.shape(decoder_input_ids)[1]})"
        )
    logits_BKTV = logits.reshape(batch, dec.num_codebooks, *logits.shape[1:])
    loss = _loss_from_logits(logits_BKTV, jnp.asarray(labels_BTK), dec.pad_token_id)
    return dataclasses.replace(out, loss=loss)


def delay_labels(codes_BKF: np.ndarray, pad_token_id: int, audio_channels: int = 1) -> np.ndarray:
    """Codec codes ``(B, K, F)`` -> training labels ``(B, F + K' - 1, K)`` in HF's layout (``K'`` codebooks per
    channel).

    The labels are the code buffer that ``generate`` fills, without its BOS column: codebook k (stereo: pair k) is
    delayed by k and ``pad_token_id`` fills the triangles (ignored by the loss). Negative codes (e.g. -100 for
    frames past the end of a clip) stay in place and are ignored too.
    """
    B, K, F = codes_BKF.shape
    per_channel = K // audio_channels
    length = F + per_channel  # BOS + F frames + the delays
    if length < 2 * per_channel - 1:
        raise ValueError(f"{F} frames are too few for the delay pattern of {per_channel} codebooks")
    bos = np.full((B, K, 1), pad_token_id, np.int64)
    ids = np.concatenate([bos, codes_BKF.astype(np.int64)], axis=2)
    _, pattern_BKT = sampling.build_delay_pattern(ids, pad_token_id, length, audio_channels)
    return np.swapaxes(pattern_BKT[:, :, 1:], 1, 2)


# ---------------------------------------------------------------------------------------------------------------
# Parameters, optimizer and the train step.


def init_params(config: MusicgenMelodyConfig, seed: int = 0) -> dict:
    """Random float32 parameters in the layout the converter writes (training from scratch, tests).

    As the modules' initializers: norm scales 1, biases 0, every other weight N(0, 0.02) (the codec's weight-norm
    gains 1). Filled on the host from the modules' abstract shapes, so nothing is compiled.
    """
    abstract = {
        "text_encoder": t5.abstract_params(config.text_encoder),
        "audio_encoder": encodec.abstract_params(config.audio_encoder),
        "decoder": decoder.abstract_params(config.decoder),
        **conditioning.abstract_params(config),
    }
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = _key(path[-1])
        if name in ("scale", "g"):
            value = np.ones(leaf.shape, np.float32)
        elif name in ("bias", "b_in", "b_rec"):
            value = np.zeros(leaf.shape, np.float32)
        else:
            value = 0.02 * rng.standard_normal(leaf.shape, np.float32)
        return jnp.asarray(value)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def default_trainable(params_or_config: Mapping | MusicgenMelodyConfig, train_text_encoder: bool = False):
    """The top-level parts that train: everything but the T5 encoder (unless asked) and the EnCodec codec."""
    if isinstance(params_or_config, MusicgenMelodyConfig):
        names = ["text_encoder", "audio_encoder", "decoder", *conditioning.abstract_params(params_or_config)]
    else:
        names = list(params_or_config)
    frozen = set(FROZEN_BY_DEFAULT) - ({"text_encoder"} if train_text_encoder else set())
    return tuple(sorted(n for n in names if n not in frozen))


def make_schedule(
    learning_rate: float, *, warmup_steps: int = 0, total_steps: int | None = None, final_ratio: float = 0.0
) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then cosine decay to
    ``final_ratio * learning_rate`` at ``total_steps`` (constant after warmup when ``total_steps`` is None)."""
    if total_steps is None:
        if warmup_steps <= 0:
            return optax.constant_schedule(learning_rate)
        return optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps, max(total_steps, warmup_steps + 1), learning_rate * final_ratio
    )


def _decay_mask(params):
    """AdamW decays matrices and embeddings, not norm scales or biases."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _key(path[-1]) not in _NO_DECAY, params)


def make_optimizer(
    learning_rate: float | optax.Schedule = 1e-5,
    *,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    weight_decay: float = 0.01,
    clip_norm: float | None = 1.0,
    accumulation_steps: int = 1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """AdamW behind a global-norm clip, with a warmup-cosine schedule and optional gradient accumulation.

    ``learning_rate``: a float (scheduled by :func:`make_schedule` with ``warmup_steps``/``total_steps``, counted in
    optimizer updates) or an optax schedule. ``accumulation_steps > 1`` wraps everything in ``optax.MultiSteps``:
    the update is applied every ``accumulation_steps`` calls with the mean gradient, and is zero in between.
    """
    if accumulation_steps < 1:
        raise ValueError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
    schedule = (
        learning_rate
        if callable(learning_rate)
        else make_schedule(learning_rate, warmup_steps=warmup_steps, total_steps=total_steps)
    )
    parts = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=_decay_mask))
    tx = optax.chain(*parts)
    if accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulation_steps).gradient_transformation()
    return tx


class TrainState(NamedTuple):
    """Everything training carries from step to step (a pytree; orbax saves it as is).

    step: int32 scalar, train steps taken (micro-steps under accumulation).
    params: the full float32 parameter tree (frozen parts included, unchanged).
    opt_state: the optimizer's state over the trainable parts only.
    rng: a raw uint32 PRNG key, split at each step for dropout.
    """

    step: jax.Array
    params: dict
    opt_state: Any
    rng: jax.Array


def _split(params: Mapping, trainable: tuple[str, ...]) -> tuple[dict, dict]:
    missing = set(trainable) - set(params)
    if missing:
        raise ValueError(f"trainable parts {sorted(missing)} are not in the parameter tree ({sorted(params)})")
    return {k: v for k, v in params.items() if k in trainable}, {k: v for k, v in params.items() if k not in trainable}


def init_train_state(
    params: dict, optimizer: optax.GradientTransformation, trainable: tuple[str, ...], seed: int | jax.Array = 0
) -> TrainState:
    """A fresh :class:`TrainState` (step 0); the optimizer state covers ``trainable`` parts only."""
    train, _ = _split(params, trainable)
    rng = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(train), rng)


def make_train_step(
    config: MusicgenMelodyConfig,
    optimizer: optax.GradientTransformation,
    *,
    trainable: tuple[str, ...] | None = None,
    compute_dtype: Any = None,
    dropout: bool = True,
    donate: bool = True,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The jitted ``train_step(state, batch) -> (state, metrics)`` (the state is donated).

    ``batch`` is as for :func:`loss_fn`. ``metrics``: ``loss`` (float32, before the update), ``grad_norm`` (global
    norm of the raw gradient), ``tokens`` (scored positions). ``dropout`` applies the config's dropout rates;
    ``compute_dtype`` (e.g. ``jnp.bfloat16``) is the mixed-precision compute type over float32 master weights.
    Sharded states and batches (see :mod:`musicgen_jax.sharding`) keep their shardings.
    """
    trainable = default_trainable(config) if trainable is None else tuple(trainable)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng, step_rng = jax.random.split(state.rng)
        train, frozen = _split(state.params, trainable)

        def objective(train_params):
            return loss_and_metrics(
                {**frozen, **train_params},
                config,
                batch,
                rng=step_rng,
                deterministic=not dropout,
                trainable=trainable,
                compute_dtype=compute_dtype,
            )

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(train)
        updates, opt_state = optimizer.update(grads, state.opt_state, train)
        train = optax.apply_updates(train, updates)
        new_state = TrainState(state.step + 1, {**state.params, **train}, opt_state, rng)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "tokens": aux["tokens"]}

    return jax.jit(train_step, donate_argnums=(0,) if donate else ())


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints.


def checkpoint_manager(directory: str | os.PathLike, *, max_to_keep: int | None = 3):
    """An orbax ``CheckpointManager`` over ``directory`` (created when missing) for :func:`save_checkpoint`."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def save_checkpoint(manager, state: TrainState, metadata: Mapping[str, Any] | None = None, *, wait: bool = True):
    """Saves ``state`` (params, opt_state, step, rng) at ``state.step``, plus an optional JSON ``metadata`` dict."""
    import orbax.checkpoint as ocp

    step = int(jax.device_get(state.step))
    items = {"state": ocp.args.StandardSave(state._asdict())}
    if metadata is not None:
        items["metadata"] = ocp.args.JsonSave(dict(metadata))
    manager.save(step, args=ocp.args.Composite(**items), force=True)
    if wait:
        manager.wait_until_finished()
    return step


def abstract_state(state: TrainState, shardings: Any = None) -> TrainState:
    """``state`` as ``jax.ShapeDtypeStruct`` leaves to restore into: with ``shardings`` (a matching tree of
    ``jax.sharding.Sharding``, e.g. from :func:`musicgen_jax.sharding.shardings_for`) or each leaf's own sharding."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    if shardings is None:
        shardings = [getattr(x, "sharding", None) for x in leaves]
    else:
        shardings = treedef.flatten_up_to(shardings)
    abstract = [jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s) for x, s in zip(leaves, shardings, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, abstract)


def restore_checkpoint(manager, target: TrainState, step: int | None = None) -> tuple[TrainState, dict | None]:
    """Restores ``(state, metadata)`` at ``step`` (default: the latest) into the structure, dtypes and shardings of
    ``target`` (arrays or ``jax.ShapeDtypeStruct`` from :func:`abstract_state`)."""
    import orbax.checkpoint as ocp

    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{manager.directory}: no checkpoint to restore")
    target = abstract_state(target)
    items = {"state": ocp.args.StandardRestore(target._asdict())}
    if os.path.isdir(os.path.join(os.fspath(manager.directory), str(step), "metadata")):
        items["metadata"] = ocp.args.JsonRestore()
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    metadata = restored["metadata"] if "metadata" in items else None
    return TrainState(**restored["state"]), metadata


def restore_params(directory: str | os.PathLike, step: int | None = None) -> dict:
    """Only the parameter tree of a :func:`save_checkpoint` checkpoint in ``directory`` (default: the latest step),
    without knowing the optimizer it was trained with: jax arrays on the default device."""
    import orbax.checkpoint as ocp

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    manager = checkpoint_manager(directory, max_to_keep=None)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory}: no checkpoint to restore")
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    finally:
        manager.close()
    return restored["state"]["params"]


def _key(entry) -> str:
    """A path entry of ``tree_flatten_with_path`` as a string (dict key, attribute or index)."""
    for name in ("key", "name", "idx"):
        if hasattr(entry, name):
            return str(getattr(entry, name))
    return str(entry)


__all__ = [
    "IGNORE_INDEX",
    "TrainState",
    "abstract_state",
    "check_labels",
    "checkpoint_manager",
    "codebook_cross_entropy",
    "default_trainable",
    "delay_labels",
    "init_params",
    "init_train_state",
    "loss_and_metrics",
    "loss_fn",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "model_loss",
    "restore_checkpoint",
    "restore_params",
    "save_checkpoint",
    "shift_tokens_right",
]
