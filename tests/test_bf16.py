"""bfloat16 inference at the musicgen-small decoder shape (1024 wide, 24 layers, 16 heads, 4096 ffn, 4 x 2048
codebooks): teacher-forced logits against float32 on the same inputs, and 512 free-running sampled steps.

XLA:CPU runs bf16 matmuls at about a quarter of the float32 speed (4 steps/s at this shape), so the default run
free-runs 512 steps with 4 of the 24 layers (the same layer shape, the same 512 positions of cache and position
table, where a NaN or an overflow would appear); ``-m big`` runs the 512 steps through all 24 layers.

bf16 weights run bf16 matmuls accumulated in float32, with float32 softmax, norms and logits (the precision policy,
``musicgen_jax/layers.py``; ``tests/test_lowering.py`` checks the lowered programs). The weights are random (there is
no Hub here), drawn once in float32 and cast, so both runs use the same numbers. T5 and EnCodec are tiny: the
decoder is what runs at scale. Reported: max and mean logit error relative to the float32 logits' scale, and
argmax agreement.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import MusicgenMelodyForConditionalGeneration, parameters
from musicgen_jax.config import DecoderConfig
from musicgen_jax.modeling import cast_params
from tests.test_sharding import tiny_config

STEPS = 512  # free-running decode steps (~10 s of audio at 50 frames/s)


def small_config():
    config = tiny_config()
    return dataclasses.replace(
        config,
        decoder=DecoderConfig(),  # HF's MusicgenMelodyDecoderConfig defaults: the musicgen-small shape
        # 2048-entry codebooks; 4 quantizers: 1000 * 352 kbps // (8000 frames/s * 11 bits)
        audio_encoder=dataclasses.replace(config.audio_encoder, codebook_size=2048, target_bandwidths=(352.0,)),
    )


def _models(layers: int | None = None):
    config = small_config()
    if layers is not None:
        config = dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, num_hidden_layers=layers))
    params = parameters.random(config, seed=0)
    f32 = MusicgenMelodyForConditionalGeneration(config, cast_params(params, np.float32))
    bf16 = MusicgenMelodyForConditionalGeneration(config, cast_params(params, jnp.bfloat16))
    del params
    return f32, bf16


@pytest.fixture(scope="module")
def models():
    return _models()


def _inputs(config, batch: int, frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    text = rng.integers(2, 90, (batch, 7))
    mask = np.ones_like(text)
    mask[1:, 5:] = 0
    chroma = np.eye(config.num_chroma, dtype=np.float32)[rng.integers(0, config.num_chroma, (batch, 4))]
    codes = rng.integers(0, config.decoder.vocab_size, (batch * config.decoder.num_codebooks, frames))
    codes[:, 0] = config.decoder.bos_token_id
    return text, mask, chroma, codes


def _compare(f32_logits, bf16_logits) -> dict:
    ref, ours = np.asarray(f32_logits, np.float64), np.asarray(bf16_logits, np.float64)
    err = np.abs(ours - ref)
    scale = float(np.max(np.abs(ref)))
    return {
        "max_rel": float(err.max()) / scale,
        "mean_rel": float(err.mean()) / scale,
        "argmax_agree": float(np.mean(ref.argmax(-1) == ours.argmax(-1))),
        "finite": bool(np.isfinite(ours).all()),
        "scale": scale,
    }


def test_bf16_teacher_forced_logits_match_float32(models):
    f32, bf16 = models
    text, mask, chroma, codes = _inputs(f32.config, batch=2, frames=96)
    kwargs = dict(input_ids=text, attention_mask=mask, input_features=chroma, decoder_input_ids=codes)
    found = _compare(f32(**kwargs).logits, bf16(**kwargs).logits)
    print(
        f"\n[bf16] small shape, teacher-forced (2 x {codes.shape[1]} frames + prefix): logits max err "
        f"{found['max_rel']:.2e}, mean err {found['mean_rel']:.2e} (relative to max |logit| {found['scale']:.2f}), "
        f"argmax agreement {100 * found['argmax_agree']:.1f}%"
    )
    assert found["finite"]
    # bf16 keeps 8 bits of mantissa (2**-8 = 3.9e-3 per rounding); through 24 layers the error stays at that order
    assert found["max_rel"] < 5e-2
    assert found["mean_rel"] < 5e-3
    # random weights give near-uniform logits (many near ties), so agreement is lower than a trained model's
    assert found["argmax_agree"] > 0.5


def test_bf16_free_running_generation_stays_finite():
    _free_running(*_models(layers=4))


@pytest.mark.big
def test_bf16_free_running_generation_stays_finite_all_layers(models):
    _free_running(*models)


def _free_running(f32, bf16):
    text, mask, chroma, _ = _inputs(f32.config, batch=1, frames=1)
    out = bf16.generate(
        text,
        mask,
        chroma,
        max_new_tokens=STEPS,
        do_sample=True,
        top_k=250,
        guidance_scale=3.0,
        seed=0,
        return_dict_in_generate=True,
    )
    codes = out.audio_codes
    assert codes.shape == (1, f32.config.decoder.num_codebooks, STEPS - f32.config.decoder.num_codebooks + 1)
    assert codes.min() >= 0 and codes.max() < f32.config.decoder.vocab_size
    assert np.isfinite(out.sequences).all()
    assert len(np.unique(codes)) > 100  # sampled from real distributions, not stuck on one id after a NaN

    # The whole generated piece teacher-forced through both models: every position's bf16 logits finite and close,
    # out to the last of the 512 positions.
    ids = np.concatenate(
        [np.full((codes.shape[1], 1), f32.config.decoder.bos_token_id), codes[0]], axis=1
    )  # (K, 1 + frames), no delay pattern needed for a numerical comparison
    kwargs = dict(input_ids=text, attention_mask=mask, input_features=chroma, decoder_input_ids=ids)
    ref, ours = np.asarray(f32(**kwargs).logits), np.asarray(bf16(**kwargs).logits)
    found, late = _compare(ref, ours), _compare(ref[:, -64:], ours[:, -64:])
    s = out.stats
    print(
        f"\n[bf16] {f32.config.decoder.num_hidden_layers} layers, {STEPS} free-running steps (CFG 3, top-k 250): "
        f"{s['decode_steps_per_second']:.1f} steps/s on "
        f"{jax.default_backend()}, no NaN/inf; teacher-forced over all {ids.shape[1]} positions: max err "
        f"{found['max_rel']:.2e}, mean {found['mean_rel']:.2e}, argmax {100 * found['argmax_agree']:.1f}%; last 64 "
        f"positions: max err {late['max_rel']:.2e}"
    )
    assert found["finite"] and late["finite"]
    assert found["max_rel"] < 5e-2 and late["max_rel"] < 5e-2
