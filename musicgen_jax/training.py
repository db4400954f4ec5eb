"""Fine-tuning: an optax optimizer, a jitted train step over HF's loss, orbax training checkpoints.

The loss itself is :mod:`musicgen_jax.loss` (below both the model and this trainer; its names are re-exported here).
Training keeps float32 master weights in a :class:`TrainState` and differentiates only the *trainable* top-level
parts of the parameter tree (by default the decoder and the two projections; the T5 text encoder on request; the
EnCodec codec never, it only turns audio into codes once before training).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from musicgen_jax import lora as lora_module
from musicgen_jax import parameters, sharding
from musicgen_jax.config import MusicgenConfig, MusicgenMelodyConfig
from musicgen_jax.lora import LoraConfig
from musicgen_jax.loss import (
    IGNORE_INDEX,
    check_labels,
    codebook_cross_entropy,
    delay_labels,
    loss_and_metrics,
    loss_fn,
    shift_tokens_right,
)

FROZEN_BY_DEFAULT = ("text_encoder", "audio_encoder")
_NO_DECAY = frozenset({"scale", "bias"})  # LayerNorm/RMSNorm weights and biases, as HF Trainer's default


def init_params(config: MusicgenMelodyConfig, seed: int = 0) -> dict:
    """Random float32 parameters (jax arrays) in the layout the converter writes, for training from scratch and
    tests: :func:`musicgen_jax.parameters.random` on the device; nothing is compiled."""
    return jax.tree_util.tree_map(jnp.asarray, parameters.random(config, seed))


def default_trainable(params_or_config: Mapping | MusicgenMelodyConfig, train_text_encoder: bool = False):
    """The top-level parts that train: everything but the T5 encoder (unless asked) and the EnCodec codec."""
    if isinstance(params_or_config, MusicgenMelodyConfig | MusicgenConfig):
        names = list(parameters.abstract(params_or_config))
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
    lora: LoraConfig | None = None,
    remat: bool = False,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The jitted ``train_step(state, batch) -> (state, metrics)`` (the state is donated).

    ``batch`` is as for :func:`loss_fn`. ``metrics``: ``loss`` (float32, before the update), ``grad_norm`` (global
    norm of the raw gradient), ``tokens`` (scored positions). ``dropout`` applies the config's dropout rates;
    ``compute_dtype`` (e.g. ``jnp.bfloat16``) is the mixed-precision compute type over float32 master weights.
    Sharded states and batches (see :mod:`musicgen_jax.sharding`) keep their shardings.

    ``lora``: the state's params hold adapters under ``lora.PART`` (:func:`musicgen_jax.lora.init`); the loss reads
    the decoder merged with them (:func:`musicgen_jax.lora.merge`). ``trainable`` then defaults to the adapters
    alone: only they get gradients, updates and optimizer state; the base weights stay frozen.

    ``remat``: gradient checkpointing, each decoder layer wrapped in ``jax.checkpoint`` inside the layer scan: its
    activations are recomputed in the backward pass instead of kept (the same gradients, less memory).
    """
    if trainable is None:
        trainable = (lora_module.PART,) if lora is not None else default_trainable(config)
    trainable = tuple(trainable)
    # the parts the loss differentiates: with LoRA the merged decoder (through the adapters), not the adapters' part
    loss_trainable = trainable if lora is None else (*(t for t in trainable if t != lora_module.PART), "decoder")

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng, step_rng = jax.random.split(state.rng)
        train, frozen = _split(state.params, trainable)

        def objective(train_params):
            params = {**frozen, **train_params}
            if lora is not None:
                params = lora_module.merge(params, lora)
            return loss_and_metrics(
                params,
                config,
                batch,
                rng=step_rng,
                deterministic=not dropout,
                trainable=loss_trainable,
                compute_dtype=compute_dtype,
                remat=remat,
            )

        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(train)
        updates, opt_state = optimizer.update(grads, state.opt_state, train)
        train = optax.apply_updates(train, updates)
        new_state = TrainState(state.step + 1, {**state.params, **train}, opt_state, rng)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), "tokens": aux["tokens"]}

    jitted = jax.jit(train_step, donate_argnums=(0,) if donate else ())

    @functools.wraps(train_step)
    def run(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        # on the state's own (Auto) mesh, even inside a caller's `with jax.set_mesh(explicit mesh)` block
        with sharding.context(state.params):
            return jitted(state, batch)

    run.jitted = jitted  # the jax.jit object itself: .lower(state, batch).compile().memory_analysis(), ...
    return run


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

    step = state.step
    step = int(np.asarray(step.addressable_shards[0].data if isinstance(step, jax.Array) else step))  # no collective
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
    without knowing the optimizer it was trained with: jax arrays on this process's first device."""
    return restore_run(directory, step)[0]


def restore_run(directory: str | os.PathLike, step: int | None = None) -> tuple[dict, dict | None, int]:
    """``(params, metadata, step)`` of a :func:`save_checkpoint` checkpoint in ``directory`` (default: the latest
    step): the parameters on this process's first device, whatever mesh (or process count) wrote them, and the
    JSON metadata saved with them (None when there is none)."""
    import orbax.checkpoint as ocp

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    manager = checkpoint_manager(directory, max_to_keep=None)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory}: no checkpoint to restore")
        # A target built from the stored shapes and dtypes: orbax cannot rebuild a sharding over devices this
        # process lacks.
        from etils import epath

        stored = ocp.PyTreeCheckpointHandler().metadata(epath.Path(os.fspath(manager.directory)) / str(step) / "state")
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=local), getattr(stored, "tree", stored)
        )
        items = {"state": ocp.args.StandardRestore(target)}
        if os.path.isdir(os.path.join(os.fspath(manager.directory), str(step), "metadata")):
            items["metadata"] = ocp.args.JsonRestore()
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    finally:
        manager.close()
    return restored["state"]["params"], (restored["metadata"] if "metadata" in items else None), int(step)


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
    "restore_checkpoint",
    "restore_params",
    "restore_run",
    "save_checkpoint",
    "shift_tokens_right",
]
