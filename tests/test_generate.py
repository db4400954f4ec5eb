"""`generate` end to end against HF `MusicgenMelodyForConditionalGeneration.generate` (greedy, float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import MusicgenMelodyForConditionalGeneration, sampling
from tests.helpers import hf_generate, report, save_hf_melody


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    # decoder width 20 != T5 width 16 and != 12 chroma bins: both projections exist
    path, hf = save_hf_melody(tmp_path_factory.mktemp("gen"), decoder={"hidden_size": 20, "num_attention_heads": 4})
    return hf, MusicgenMelodyForConditionalGeneration.from_pretrained(path)


@pytest.fixture(scope="module")
def stereo(tmp_path_factory):
    path, hf = save_hf_melody(
        tmp_path_factory.mktemp("gen_stereo"), decoder={"audio_channels": 2, "num_codebooks": 8}, chroma_length=6
    )
    return hf, MusicgenMelodyForConditionalGeneration.from_pretrained(path)


def _text(batch=2, length=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 64, (batch, length))
    mask = np.ones((batch, length), np.int64)
    mask[-1, length - 2 :] = 0  # right padding in the last row
    return ids, mask


def _chroma(batch, frames, seed=1):
    return np.eye(12, dtype=np.float32)[np.random.default_rng(seed).integers(0, 12, (batch, frames))]


def _compare(name, ours, hf_audio, hf_codes):
    agreement = float((ours.audio_codes == hf_codes).mean()) if ours.audio_codes.shape == hf_codes.shape else 0.0
    print(f"[parity] {name}: greedy codes agreement {agreement:.4f} over {hf_codes.size} codes")
    assert ours.audio_codes.shape == hf_codes.shape
    assert agreement == 1.0
    err = report(f"{name} audio", ours.sequences, hf_audio)
    assert err <= 1e-4 * max(1.0, np.abs(hf_audio).max())


# (batch, guidance_scale, chroma frames or None, text?); 40 greedy steps each.
CASES = {
    "batch 1, text, cfg 3": (1, 3.0, None, True),
    "padded batch 3, text, cfg 3": (3, 3.0, None, True),
    "padded batch 3, text, no cfg": (3, 1.0, None, True),
    "batch 2, text + melody, cfg 3": (2, 3.0, 9, True),
    "batch 1, text + melody, no cfg": (1, 1.0, 6, True),
    "batch 2, text + long melody (truncated), cfg 2": (2, 2.0, 300, True),
    "batch 2, melody only, cfg 3": (2, 3.0, 5, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_generate_matches_hf(mono, case):
    hf, ours = mono
    batch, scale, frames, text = CASES[case]
    kwargs = dict(do_sample=False, max_new_tokens=40, guidance_scale=scale)
    if text:
        kwargs["input_ids"], kwargs["attention_mask"] = _text(batch)
    if frames:
        kwargs["input_features"] = _chroma(batch, frames)
    hf_audio, hf_codes = hf_generate(hf, **kwargs)
    ours = ours.generate(**kwargs, return_dict_in_generate=True)
    _compare(case, ours, hf_audio, hf_codes)


def test_unconditional_inputs_match_hf(mono):
    hf, ours = mono
    # what processor.get_unconditional_inputs gives: the tokenized empty text (just </s> = 1), mask all zero
    kwargs = dict(input_ids=np.ones((2, 1), np.int64), attention_mask=np.zeros((2, 1), np.int64))
    hf_audio, hf_codes = hf_generate(hf, do_sample=False, max_new_tokens=40, guidance_scale=3.0, **kwargs)
    _compare(
        "unconditional",
        ours.generate(**kwargs, do_sample=False, max_new_tokens=40, guidance_scale=3.0, return_dict_in_generate=True),
        hf_audio,
        hf_codes,
    )


def test_prompt_codes_continuation_matches_hf(mono):
    hf, ours = mono
    ids, mask = _text()
    prompt = np.random.default_rng(3).integers(0, 16, (2 * 4, 5))
    kwargs = dict(
        input_ids=ids,
        attention_mask=mask,
        decoder_input_ids=prompt,
        do_sample=False,
        max_new_tokens=40,
        guidance_scale=3.0,
    )
    hf_audio, hf_codes = hf_generate(hf, **kwargs)
    _compare("audio-code prompt", ours.generate(**kwargs, return_dict_in_generate=True), hf_audio, hf_codes)


def test_stereo_matches_hf(stereo):
    hf, ours = stereo
    ids, mask = _text()
    kwargs = dict(
        input_ids=ids,
        attention_mask=mask,
        input_features=_chroma(2, 4),
        do_sample=False,
        max_new_tokens=40,
        guidance_scale=3.0,
    )
    hf_audio, hf_codes = hf_generate(hf, **kwargs)
    ours_out = ours.generate(**kwargs, return_dict_in_generate=True)
    assert ours_out.sequences.shape[1] == 2
    _compare("stereo", ours_out, hf_audio, hf_codes)


def test_audio_prompt_equals_its_codes(mono):
    _, ours = mono
    ids, mask = _text()
    wave = np.random.default_rng(4).standard_normal((2, 1, 4 * 6)).astype(np.float32) * 0.1
    codes = np.asarray(ours.audio_encoder.encode(wave))  # (2, 4, 6)
    a = ours.generate(ids, mask, audio_prompt=wave, do_sample=False, max_new_tokens=8, return_dict_in_generate=True)
    b = ours.generate(
        ids,
        mask,
        decoder_input_ids=codes.reshape(8, -1),
        do_sample=False,
        max_new_tokens=8,
        return_dict_in_generate=True,
    )
    np.testing.assert_array_equal(a.audio_codes, b.audio_codes)
    np.testing.assert_array_equal(a.audio_codes[:, :, :6], codes)  # the prompt is kept at the front, as in HF


def test_sampling_seeds_and_lengths(mono):
    _, ours = mono
    ids, mask = _text()
    kw = dict(do_sample=True, top_k=5, top_p=0.9, temperature=1.2, guidance_scale=3.0, max_new_tokens=10)
    a = ours.generate(ids, mask, seed=7, **kw, return_dict_in_generate=True)
    b = ours.generate(ids, mask, seed=7, **kw, return_dict_in_generate=True)
    c = ours.generate(ids, mask, seed=8, **kw, return_dict_in_generate=True)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert (a.audio_codes != c.audio_codes).any()
    assert a.audio_codes.shape == (2, 4, 10 + 1 - 4)  # HF: max_length - num_codebooks frames
    assert a.sequences.shape == (2, 1, 7 * ours.config.audio_encoder.hop_length)
    frame_rate = ours.config.audio_encoder.frame_rate
    d = ours.generate(ids, mask, duration=5 / frame_rate, do_sample=False, return_dict_in_generate=True)
    assert d.audio_codes.shape[-1] == 5


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(top_p=1.5, do_sample=True), "top_p"),
        (dict(temperature=0.0, do_sample=True), "temperature"),
        (dict(max_new_tokens=2), "delay pattern"),
        (dict(num_beams=4), "num_beams"),
        (dict(input_features=np.zeros((2, 3, 7), np.float32)), "num_chroma=12"),
        (dict(decoder_input_ids=np.zeros((6, 2), np.int64)), "num_codebooks=4"),
    ],
)
def test_bad_generate_arguments_name_the_problem(mono, kwargs, match):
    _, ours = mono
    ids, mask = _text()
    with pytest.raises(ValueError, match=match):
        ours.generate(ids, mask, **{"max_new_tokens": 8, **kwargs})


def test_top_k_1_equals_greedy(mono):
    _, ours = mono
    ids, mask = _text()
    greedy = ours.generate(
        ids, mask, do_sample=False, max_new_tokens=12, guidance_scale=3.0, return_dict_in_generate=True
    )
    top1 = ours.generate(
        ids,
        mask,
        do_sample=True,
        top_k=1,
        temperature=0.7,
        max_new_tokens=12,
        guidance_scale=3.0,
        seed=3,
        return_dict_in_generate=True,
    )
    np.testing.assert_array_equal(top1.audio_codes, greedy.audio_codes)


@pytest.mark.parametrize("top_k", [1, 3, 7])
def test_top_k_never_draws_outside_the_k_best(top_k):
    logits = jnp.asarray(np.random.default_rng(top_k).standard_normal((64, 40)), jnp.float32)
    knobs = sampling.SamplingParams(jnp.float32(1.5), jnp.float32(1.0), jnp.float32(1.0))
    keys = jax.random.split(jax.random.PRNGKey(0), 200)
    draws = jax.vmap(lambda k: sampling.choose(logits, knobs, k, do_sample=True, top_k=top_k, use_top_p=False))(keys)
    best = np.argsort(-np.asarray(logits), axis=-1)[:, :top_k]  # (64, k)
    inside = (np.asarray(draws)[:, :, None] == best[None]).any(-1)
    assert inside.all()
    assert len(np.unique(np.asarray(draws))) > 1


def test_repeat_calls_do_not_recompile(mono):
    _, ours = mono
    ids, mask = _text()
    kw = dict(do_sample=True, top_k=5, guidance_scale=3.0, max_new_tokens=10, input_features=_chroma(2, 5))
    ours.generate(ids, mask, seed=1, **kw)
    compiled = sampling.decode._cache_size()
    other_ids = (ids + 1) % 64  # other prompt content, same shapes
    ours.generate(other_ids, mask, seed=2, **kw)
    ours.generate(ids, mask, seed=3, **{**kw, "top_p": 0.8, "temperature": 0.9, "guidance_scale": 4.0})
    assert sampling.decode._cache_size() == compiled
