"""The random demo checkpoint: its parameters are filled on the host (no XLA compilation), shaped as the modules'
abstract tree, deterministic per seed, and a model built from them runs the whole pipeline to finite, audible noise."""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import numpy as np
import pytest

from musicgen_jax import MusicgenMelodyForConditionalGeneration, modeling
from musicgen_jax.demo import random_params, tiny_config


@contextlib.contextmanager
def count_compilations():
    """Counts XLA backend compilations inside the block (jax records ``/jax/core/compile/backend_compile_duration``
    for each, cache hits of the persistent cache included); yields a list holding one name per compilation."""
    compiled = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            compiled.append(kwargs.get("fun_name", event))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _leaves(tree) -> dict:
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def params():
    return random_params(tiny_config(), seed=0)


def test_random_params_compile_nothing():
    with count_compilations() as compiled:
        random_params(tiny_config(), seed=5)
    assert compiled == [], f"random_params compiled {len(compiled)} XLA programs, e.g. {compiled[:5]}"
    # The counter itself sees a compilation (guards against jax renaming the event).
    with count_compilations() as compiled:
        jax.jit(lambda x: x * 3 + 1)(np.float32(2))
    assert len(compiled) == 1, compiled


def test_random_params_match_the_abstract_tree(params):
    got, want = _leaves(params), _leaves(modeling.abstract_params(tiny_config()))
    assert got.keys() == want.keys()
    for path, leaf in got.items():
        assert isinstance(leaf, np.ndarray), path
        assert (leaf.shape, leaf.dtype) == (want[path].shape, want[path].dtype), path
        assert np.isfinite(leaf).all(), path


def test_random_params_are_deterministic_per_seed(params):
    same, other = _leaves(random_params(tiny_config(), seed=0)), _leaves(random_params(tiny_config(), seed=1))
    for path, leaf in _leaves(params).items():
        np.testing.assert_array_equal(same[path], leaf, err_msg=path)
        constant = np.all(leaf == leaf.flat[0])  # ones / zeros: the same for every seed
        assert constant or not np.array_equal(other[path], leaf), path
    # Each leaf has its own stream (seed, path): a bigger decoder leaves every other part's values unchanged.
    config = tiny_config()
    wider = dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, num_hidden_layers=3))
    wider_leaves = _leaves(random_params(wider, seed=0))
    for path, leaf in _leaves(params).items():
        if not path.startswith("['decoder']['layers']"):
            np.testing.assert_array_equal(wider_leaves[path], leaf, err_msg=path)


def test_random_model_runs_end_to_end(params):
    config = tiny_config()
    model = MusicgenMelodyForConditionalGeneration(config, modeling.cast_params(params, None))
    ids = np.random.default_rng(0).integers(3, config.text_encoder.vocab_size, (2, 5))

    text = np.asarray(model.encode_text(ids))
    assert np.isfinite(text).all() and text.std() > 0

    audio_in = np.random.default_rng(1).uniform(-0.5, 0.5, (1, 1, 3 * 640)).astype(np.float32)
    codes = model.audio_encoder.encode(audio_in)
    assert codes.shape == (1, config.decoder.num_codebooks, 3)
    decoded = np.asarray(model.audio_encoder.decode(codes))
    assert decoded.shape == (1, 1, 3 * 640) and np.isfinite(decoded).all() and np.abs(decoded).max() > 1e-4

    audio = model.generate(input_ids=ids, max_new_tokens=8, do_sample=True, guidance_scale=3.0, seed=0)
    frames = 8 - (config.decoder.num_codebooks - 1)  # the delay pattern's first K - 1 steps make no frame
    assert audio.shape == (2, 1, frames * 640)
    assert np.isfinite(audio).all()
    assert np.abs(audio).max(axis=(1, 2)).min() > 1e-4, "a row of the generated audio is silent"
