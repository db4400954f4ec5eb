"""Gradient checkpointing (``remat``): the same gradients as without it, and a smaller compiled train step."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import decoder, training
from musicgen_jax.config import MusicgenConfig
from tests.test_sharding import tiny_batch, tiny_config


def _grads(params, config, batch, remat, dropout):
    def loss(train):
        return training.loss_fn(
            {**params, **train},
            config,
            batch,
            rng=jax.random.PRNGKey(3) if dropout else None,
            deterministic=not dropout,
            trainable=("decoder",),
            remat=remat,
        )

    return jax.jit(jax.value_and_grad(loss))({"decoder": params["decoder"]})


def _relative_error(a, b) -> float:
    errors = jax.tree_util.tree_map(
        lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / max(np.max(np.abs(np.asarray(y))), 1e-30)),
        a,
        b,
    )
    return max(jax.tree_util.tree_leaves(errors))


@pytest.mark.parametrize(
    "family,scan_layers,dropout", [("melody", True, True), ("melody", False, False), ("plain", True, False)]
)
def test_remat_gives_the_same_gradients(family, scan_layers, dropout):
    config = tiny_config()
    if family == "plain":
        config = MusicgenConfig(config.text_encoder, config.audio_encoder, config.decoder)
    params = training.init_params(config, seed=0)
    if not scan_layers:
        params = {**params, "decoder": decoder.unstack_layers(params["decoder"])}
    batch = jax.tree_util.tree_map(jnp.asarray, tiny_batch(config, 2))
    if family == "plain":
        del batch["input_features"]
    loss, plain = _grads(params, config, batch, remat=False, dropout=dropout)
    loss_remat, remat = _grads(params, config, batch, remat=True, dropout=dropout)
    err = _relative_error(remat, plain)
    print(
        f"[remat] {family} scan_layers={scan_layers} dropout={dropout}: loss {float(loss):.6f} vs "
        f"{float(loss_remat):.6f}, gradients max rel err {err:.1e}"
    )
    assert abs(float(loss) - float(loss_remat)) <= 1e-6 * abs(float(loss)) and err <= 1e-5


def _temp_bytes(config, params, batch, remat):
    optimizer = training.make_optimizer(1e-3)
    trainable = training.default_trainable(config)
    state = training.init_train_state(params, optimizer, trainable)
    step = training.make_train_step(config, optimizer, trainable=trainable, remat=remat)
    return step.jitted.lower(state, batch).compile().memory_analysis().temp_size_in_bytes


def test_remat_shrinks_the_compiled_train_step():
    """8 layers over 256 positions: the kept activations (attention probabilities, MLP hidden states of every
    layer) dominate the temporaries without remat; with it only each layer's input is kept."""
    config = tiny_config()
    config = dataclasses.replace(
        config,
        decoder=dataclasses.replace(config.decoder, num_hidden_layers=8, hidden_size=32, ffn_dim=128),
    )
    params = training.init_params(config, seed=0)
    batch = tiny_batch(config, 2)
    rng = np.random.default_rng(0)
    batch["labels"] = rng.integers(0, config.decoder.vocab_size, (2, 256, config.decoder.num_codebooks)).astype(
        np.int32
    )
    batch = jax.tree_util.tree_map(jnp.asarray, batch)
    full = _temp_bytes(config, params, batch, remat=False)
    remat = _temp_bytes(config, params, batch, remat=True)
    print(f"[remat] train step temp memory: {full / 2**20:.2f} MiB -> {remat / 2**20:.2f} MiB with remat")
    assert remat < 0.6 * full
