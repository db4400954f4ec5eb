"""`generate` end to end against HF `MusicgenMelodyForConditionalGeneration.generate` (greedy, float32)."""

import numpy as np
import pytest

from musicgen_jax import MusicgenMelodyForConditionalGeneration
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


CASES = {
    "text, cfg 3": dict(text=True, guidance_scale=3.0),
    "text + melody, cfg 3": dict(text=True, frames=9, guidance_scale=3.0),
    "text + long melody (truncated), cfg 2": dict(text=True, frames=300, guidance_scale=2.0),
    "text, no cfg": dict(text=True, guidance_scale=1.0),
    "melody only, cfg 3": dict(frames=5, guidance_scale=3.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_generate_matches_hf(mono, case):
    hf, ours = mono
    spec = CASES[case]
    kwargs = dict(do_sample=False, max_new_tokens=12, guidance_scale=spec["guidance_scale"])
    if spec.get("text"):
        kwargs["input_ids"], kwargs["attention_mask"] = _text()
    if spec.get("frames"):
        kwargs["input_features"] = _chroma(2, spec["frames"])
    hf_audio, hf_codes = hf_generate(hf, **kwargs)
    ours = ours.generate(**kwargs, return_dict_in_generate=True)
    _compare(case, ours, hf_audio, hf_codes)


def test_unconditional_inputs_match_hf(mono):
    hf, ours = mono
    # what processor.get_unconditional_inputs gives: the tokenized empty text (just </s> = 1), mask all zero
    kwargs = dict(input_ids=np.ones((2, 1), np.int64), attention_mask=np.zeros((2, 1), np.int64))
    hf_audio, hf_codes = hf_generate(hf, do_sample=False, max_new_tokens=10, guidance_scale=3.0, **kwargs)
    _compare(
        "unconditional",
        ours.generate(**kwargs, do_sample=False, max_new_tokens=10, guidance_scale=3.0, return_dict_in_generate=True),
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
        max_new_tokens=9,
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
        max_new_tokens=11,
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
