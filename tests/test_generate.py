"""`generate` end to end against HF `MusicgenMelodyForConditionalGeneration.generate` (greedy, float32)."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax import MusicgenMelodyForConditionalGeneration, generation, sampling
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


@pytest.mark.parametrize(
    "case", ["batch 1, text, cfg 3", "padded batch 3, text, cfg 3", "batch 2, text + melody, cfg 3"]
)
def test_greedy_generate_in_cache_phases_matches_hf(mono, case, monkeypatch):
    """The KV cache's buffer in phases of 7 positions (6 phases over 40 steps, each sealed into read-only context
    before the next; ``sampling.phase_ends``): the codes and audio of HF's one growing cache still."""
    monkeypatch.setattr(sampling, "PHASE_LENGTH", 7)
    assert len(sampling.phase_ends(1, 41, sampling.PHASE_LENGTH)) == 6
    test_greedy_generate_matches_hf(mono, case)


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


# -- issue 14: messages for lengths, sampling values, seeds and durations ----------------------------------------------

POSITIONS, CHROMA = 2048, 235  # the tiny checkpoints' max_position_embeddings and chroma_length (HF defaults)


def _length_message(ours, **kwargs) -> str:
    with pytest.raises(ValueError) as caught:
        ours.generate(**{"do_sample": False, **kwargs})
    message = str(caught.value)
    assert "\n" not in message and "at most -" not in message
    return message


def test_a_prompt_too_long_says_so_and_by_how_many_tokens(mono):
    _, ours = mono
    assert (ours.config.decoder.max_position_embeddings, ours.config.chroma_length) == (POSITIONS, CHROMA)
    ids = np.full((1, 1900), 5)
    # 1900 text + 235 chroma + start + 53 steps = 2189 positions of 2048: 141 tokens too many
    message = _length_message(ours, input_ids=ids, max_new_tokens=53)
    assert message.startswith("text prompt too long: it is 1900 tokens and the decoder's position table")
    assert "(1900 text tokens + 235 chroma frames)" in message
    assert message.endswith("shorten the text prompt by 141 tokens")
    # one audio frame (4 steps) needs 92 tokens less, and 5000 steps never fit: shorten, and ask for fewer steps
    message = _length_message(ours, input_ids=ids, max_new_tokens=5000)
    assert message.endswith("shorten the text prompt by at least 92 tokens and ask for fewer steps")


def test_a_length_too_large_says_the_longest_that_fits_in_the_unit_asked(mono):
    _, ours = mono
    ids = np.full((1, 3), 5)
    room = POSITIONS - CHROMA - 3 - 1  # new tokens that fit after the prefix and the start token
    message = _length_message(ours, input_ids=ids, max_new_tokens=5000)
    assert message.startswith("max_new_tokens 5000 does not fit:") and f"ask for at most {room} new tokens" in message
    message = _length_message(ours, input_ids=ids, max_length=5000)
    assert f"ask for max_length at most {room + 1} ({room} new tokens)" in message
    # one window (window_duration >= duration) is one-shot: the duration itself does not fit
    message = _length_message(ours, input_ids=ids, duration=40.0, window_duration=40.0)
    assert message.startswith("duration 40.0 s does not fit:") and message.endswith(" s fits")
    seconds = float(message.split("at most ")[1].split(" s fits")[0])
    frame_rate = ours.config.audio_encoder.frame_rate
    # the longest duration shown fits: its frames + the delay pattern's 3 extra steps <= the room
    assert 0 < seconds and math.ceil(seconds * frame_rate - 1e-6) + 3 <= room
    assert math.ceil((seconds + 2 / frame_rate) * frame_rate) + 3 > room  # and it is not far below the limit
    # past one window, generation is long-form: then the window must fit, and the message says how long one may be
    message = _length_message(ours, input_ids=ids, duration=40.0)
    assert message.startswith("the default window_duration 30 s does not fit:") and message.endswith(" s fits")
    window = float(message.split("at most ")[1].split(" s fits")[0])
    assert round(window * frame_rate) + 4 + CHROMA + 3 <= POSITIONS  # that window, start token and delays fit


@pytest.mark.parametrize("duration", [float("nan"), float("inf"), -1.0, 0, "2"])
def test_bad_durations_name_duration(mono, duration):
    _, ours = mono
    with pytest.raises(ValueError, match=r"^duration must be a positive finite number of seconds, got "):
        ours.generate(np.full((1, 3), 5), duration=duration)


def test_a_duration_on_a_frame_boundary_gives_exactly_its_frames(mono):
    _, ours = mono
    # a 50 Hz codec (the real models' rate; the tiny one runs at 8000 Hz): 0.14 s * 50 is 7.000000000000001 in floats
    audio = dataclasses.replace(ours.config.audio_encoder, sampling_rate=200, target_bandwidths=(0.8,))
    at_50_hz = MusicgenMelodyForConditionalGeneration(
        dataclasses.replace(ours.config, audio_encoder=audio), ours.params, ours.generation_config
    )
    assert at_50_hz.config.audio_encoder.frame_rate == 50
    out = at_50_hz.generate(np.full((1, 3), 5), duration=0.14, do_sample=False, return_dict_in_generate=True)
    assert out.audio_codes.shape[-1] == 7


@pytest.mark.parametrize("seed", [2**64, 2**63, 2**32, -1, 1.5, True, "3"])
def test_bad_seeds_name_the_range(mono, seed):
    _, ours = mono
    with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 2\*\*32 - 1 = 4294967295\]"):
        ours.generate(np.full((1, 3), 5), seed=seed, max_new_tokens=4)


def test_the_largest_seed_runs(mono):
    _, ours = mono
    out = ours.generate(np.full((1, 3), 5), seed=2**32 - 1, do_sample=True, max_new_tokens=4)
    assert np.isfinite(out).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        # invalid in itself: refused whether or not sampling is on (the message says so when it is off)
        (dict(temperature=-1.0, do_sample=False), r"^temperature must be a finite number > 0, got -1.0 \(refused "),
        (dict(temperature=0.0, do_sample=False), r"^temperature must be .* do_sample=False too"),
        (dict(temperature=float("inf"), do_sample=True), r"^temperature must be a finite number > 0, got inf$"),
        (dict(temperature=float("nan"), do_sample=True), r"^temperature must be a finite number > 0, got nan$"),
        (dict(top_p=1.5, do_sample=False), r"^top_p must be a number in \(0, 1\] .* do_sample=False too"),
        (dict(top_p=float("nan"), do_sample=True), r"^top_p must be a number in \(0, 1\]"),
        (dict(top_k=-1, do_sample=False), r"^top_k must be an integer >= 0 .* do_sample=False too"),
        (dict(top_k=2.5, do_sample=True), r"^top_k must be an integer >= 0"),
        (dict(top_k=float("nan"), do_sample=True), r"^top_k must be an integer >= 0"),
        (dict(guidance_scale=float("nan"), do_sample=False), r"^guidance_scale must be a finite number .*, got nan$"),
        (dict(guidance_scale=float("inf"), do_sample=True), r"^guidance_scale must be a finite number .*, got inf$"),
    ],
)
def test_bad_sampling_values_are_refused_in_every_mode(mono, kwargs, match):
    _, ours = mono
    with pytest.raises(ValueError, match=match):
        ours.generate(np.full((1, 3), 5), max_new_tokens=4, **kwargs)


def test_unset_sampling_values_mean_off_as_in_hf():
    assert generation.check_sampling(True, None, None, None, None) == (0, 1.0, 1.0, None)
    assert generation.check_sampling(False, np.int64(5), np.float32(0.5), 2, 3) == (5, 0.5, 2.0, 3.0)


def test_length_messages_at_the_real_models_sizes():
    # facebook/musicgen-melody: 2048 positions, 235 chroma frames, 4 codebooks, 50 frames/s; a 12-token prompt
    message = generation.length_error(2048, 12, 235, 1, 1 + 2003, 4, ("duration", 40.0, False), 50)
    assert message.startswith("duration 40.0 s does not fit: ") and message.endswith("; at most 35.94 s fits")
    assert math.ceil(35.94 * 50 - 1e-6) + 3 + 12 + 235 + 1 == 2048  # 35.94 s is exactly the longest that fits
    message = generation.length_error(2048, 12, 235, 1, 1 + 1500, 4, ("max_length", 1500, True), 50)
    assert message.startswith("the generation config's max_length 1500 does not fit: ")
    assert message.endswith("; ask for at most 1800 new tokens (or a duration of at most 35.94 s)")
