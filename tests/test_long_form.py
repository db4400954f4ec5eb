"""Long-form generation (issue 18) against HF, window by window.

The reference for a piece is built from HF alone: window 0 is HF's ``generate`` from the conditions, and every later
window is HF's ``generate`` continuing ``decoder_input_ids`` = the last ``W - S`` frames HF produced in the window
before, with that window's chroma computed by HF's feature extractor from the melody samples audiocraft reads
(``MusicGen._generate_tokens``). The windows themselves follow audiocraft's loop, transcribed below in whole frames.

The tiny checkpoints' codec runs at 8000 frames/s (hop 4 at 32 kHz), so windows are milliseconds long.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from musicgen_jax import (
    MusicgenForConditionalGeneration,
    MusicgenMelodyFeatureExtractor,
    MusicgenMelodyForConditionalGeneration,
    MusicgenMelodyProcessor,
    long_form,
)
from tests.helpers import hf_generate, save_hf_melody, save_hf_musicgen, save_tiny_tokenizer
from tests.test_chroma import hf_module  # noqa: F401, F811  (a fixture)
from tests.test_generate import _text

FRAME_RATE, HOP, SR = 8000, 4, 32000
FE = dict(n_fft=64, hop_length=16)  # chroma frames every 16 samples: each 160-sample window reads its own chroma
WINDOW, STRIDE = 0.005, 0.003  # 40 and 24 frames
GREEDY = dict(do_sample=False, guidance_scale=3.0)


def _small_codec_chunks(model):
    model.audio_chunk_seconds, model.audio_overlap_seconds = 0.004, 0.002  # 32 + 2 x 16 frames per codec call
    return model


@pytest.fixture(scope="module")
def melody(tmp_path_factory):
    path, hf = save_hf_melody(
        tmp_path_factory.mktemp("long_melody"), decoder={"hidden_size": 20, "num_attention_heads": 4}
    )
    MusicgenMelodyFeatureExtractor(**FE).save_pretrained(path)
    save_tiny_tokenizer(path)
    return hf, _small_codec_chunks(MusicgenMelodyForConditionalGeneration.from_pretrained(path)), path


@pytest.fixture(scope="module")
def stereo(tmp_path_factory):
    path, hf = save_hf_melody(
        tmp_path_factory.mktemp("long_stereo"), decoder={"audio_channels": 2, "num_codebooks": 8}, chroma_length=6
    )
    MusicgenMelodyFeatureExtractor(**FE).save_pretrained(path)
    return hf, _small_codec_chunks(MusicgenMelodyForConditionalGeneration.from_pretrained(path))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path, hf = save_hf_musicgen(tmp_path_factory.mktemp("long_plain"))
    return hf, _small_codec_chunks(MusicgenForConditionalGeneration.from_pretrained(path))


@pytest.fixture(scope="module")
def hf_fe(hf_module):  # noqa: F811
    """HF's MusicgenMelodyFeatureExtractor (its torchaudio calls served by tests/test_chroma.py's stand-ins)."""
    return hf_module.MusicgenMelodyFeatureExtractor(**FE)


def audiocraft_windows(total, window, stride, prompt=0):
    """audiocraft ``MusicGen._generate_tokens``'s loop, in frames: [(offset, frames, prompt frames)]."""
    if total <= window:
        return [(0, total, prompt)]
    windows, offset, prompt_length = [], 0, prompt
    while offset + prompt_length < total:
        max_gen_len = min(total - offset, window)
        windows.append((offset, max_gen_len, prompt_length))
        prompt_length = max_gen_len - stride  # prompt_tokens = gen_tokens[:, :, stride_tokens:]
        offset += stride
    return windows


def hf_chain(hf, total, base, *, batch, codebooks, channel_codebooks, prompt=None, features_for=None):
    """The piece from HF's generate, window by window (module doc). ``features_for(offset) -> chroma``."""
    window, stride = round(WINDOW * FRAME_RATE), round(STRIDE * FRAME_RATE)
    codes = np.zeros((batch, codebooks, 0), np.int64) if prompt is None else prompt
    p = codes.shape[2]
    for offset, frames, continued in audiocraft_windows(total, window, stride, p):
        kwargs = dict(base, max_new_tokens=frames - continued + channel_codebooks - 1)
        if continued:
            kwargs["decoder_input_ids"] = codes[:, :, offset : offset + continued].reshape(batch * codebooks, -1)
        if features_for is not None:
            kwargs["input_features"] = features_for(offset)
        _, out = hf_generate(hf, **kwargs)
        assert out.shape[2] == frames
        codes = np.concatenate([codes, out[:, :, continued:]], axis=2)
    assert codes.shape[2] == total
    return codes


def hf_features(hf_fe, wave_BA):
    """HF's chroma of the window audiocraft reads at each offset: samples [offset * hop, + window), tiled."""

    def features_for(offset):
        positions = offset * HOP + np.arange(round(WINDOW * SR))
        segment = np.stack([clip[positions % clip.shape[0]] for clip in wave_BA])
        return hf_fe(segment, sampling_rate=SR, return_tensors="pt")["input_features"].numpy()

    return features_for


def _agree(name, ours, ref):
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    agreement = float((ours == ref).mean())
    print(f"[parity] {name}: greedy codes agreement {agreement:.4f} over {ref.size} codes")
    assert agreement == 1.0


def _snr(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ours - ref) ** 2), 1e-300)))


# -- the window rule ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total, window, stride, prompt",
    [(100, 40, 24, 0), (88, 40, 24, 0), (41, 40, 24, 0), (1000, 300, 100, 0), (100, 40, 24, 10), (7500, 1500, 900, 0)],
)
def test_windows_follow_audiocraft(total, window, stride, prompt):
    plan = long_form.plan_windows(total, window, stride, prompt)
    assert [(w.offset, w.frames, w.prompt) for w in plan.windows] == audiocraft_windows(total, window, stride, prompt)
    assert prompt + sum(w.new_frames for w in plan.windows) == total


def test_defaults_are_audiocrafts():
    plan = long_form.plan(300.0, None, None, 0, 50)  # 5 minutes at 50 frames/s
    assert (plan.window, plan.stride, plan.total) == (1500, 900, 15000)
    assert long_form.plan(30.0, None, None, 0, 50) is None  # one window: one-shot
    assert long_form.plan(20.0, 10.0, None, 0, 50).stride == 300  # another window: the same 0.6 of it


# -- parity with HF, window by window ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration, case",
    [(0.0105, "whole windows"), (0.0125, "a partial last window")],  # 84 = 40 + 2 x 24 frames; 100 frames
)
def test_melody_long_form_equals_hf_window_by_window(melody, hf_fe, duration, case):
    hf, ours, _ = melody
    ids, mask = _text()
    wave = np.random.default_rng(5).standard_normal((2, 300)).astype(np.float32)  # 75 frames long: tiled
    total = round(duration * FRAME_RATE)
    features_for = hf_features(hf_fe, wave)
    assert not np.array_equal(features_for(0), features_for(24)), "the windows must read different chroma"
    ref = hf_chain(
        hf, total, dict(input_ids=ids, attention_mask=mask, **GREEDY), batch=2, codebooks=4, channel_codebooks=4,
        features_for=features_for,
    )  # fmt: skip
    out = ours.generate(
        ids, mask, melody=wave, duration=duration, window_duration=WINDOW, extend_stride=STRIDE,
        return_dict_in_generate=True, **GREEDY,
    )  # fmt: skip
    _agree(f"melody long-form, {case}", out.audio_codes, ref)
    assert out.stats["windows"] == len(audiocraft_windows(total, 40, 24))
    # the audio: the codec run in overlapping chunks, against HF's one-pass decode of the same codes
    import torch

    with torch.no_grad():
        hf_audio = hf.audio_encoder.decode(torch.from_numpy(ref)[None], [None]).audio_values.numpy()
    snr = _snr(out.sequences, hf_audio)
    print(f"[parity] melody long-form audio ({case}) vs HF one-pass decode: SNR {snr:.1f} dB")
    assert snr >= 60


@pytest.mark.parametrize("family", ["melody", "plain"])
def test_text_only_long_form_equals_hf(request, family):
    hf, ours = request.getfixturevalue(family)[:2]
    ids, mask = _text(seed=2)
    ref = hf_chain(
        hf, 100, dict(input_ids=ids, attention_mask=mask, **GREEDY), batch=2, codebooks=4, channel_codebooks=4
    )
    out = ours.generate(
        ids, mask, duration=0.0125, window_duration=WINDOW, extend_stride=STRIDE, return_dict_in_generate=True, **GREEDY
    )
    _agree(f"{family} family, text only, long-form", out.audio_codes, ref)


def test_continuation_prompt_counts_inside_window_0(melody):
    hf, ours, _ = melody
    ids, mask = _text(seed=4)
    prompt = np.random.default_rng(6).integers(0, 16, (2, 4, 10))
    # 10 prompt frames + 90 new: window 0 holds the prompt and 30 new frames
    ref = hf_chain(
        hf, 100, dict(input_ids=ids, attention_mask=mask, do_sample=False), batch=2, codebooks=4, channel_codebooks=4,
        prompt=prompt,
    )  # fmt: skip
    out = ours.generate(
        ids, mask, decoder_input_ids=prompt.reshape(8, -1), duration=0.01125, window_duration=WINDOW,
        extend_stride=STRIDE, do_sample=False, return_dict_in_generate=True,
    )  # fmt: skip
    _agree("continuation prompt, long-form", out.audio_codes, ref)


def test_stereo_long_form_equals_hf(stereo, hf_fe):
    hf, ours = stereo
    ids, mask = _text(seed=7)
    wave = np.random.default_rng(8).standard_normal((2, 500)).astype(np.float32)
    ref = hf_chain(
        hf, 100, dict(input_ids=ids, attention_mask=mask, **GREEDY), batch=2, codebooks=8, channel_codebooks=4,
        features_for=hf_features(hf_fe, wave),
    )  # fmt: skip
    out = ours.generate(
        ids, mask, melody=wave, duration=0.0125, window_duration=WINDOW, extend_stride=STRIDE,
        return_dict_in_generate=True, **GREEDY,
    )  # fmt: skip
    _agree("stereo melody long-form", out.audio_codes, ref)
    assert out.sequences.shape == (2, 2, 100 * HOP)


def test_one_window_is_hf_one_shot(melody, hf_fe):
    hf, ours, _ = melody
    ids, mask = _text(seed=9)
    wave = np.random.default_rng(10).standard_normal((2, 160)).astype(np.float32)
    feats = hf_fe(list(wave), sampling_rate=SR, return_tensors="pt")["input_features"].numpy()
    _, ref = hf_generate(hf, input_ids=ids, attention_mask=mask, input_features=feats, max_new_tokens=43, **GREEDY)
    for kwargs in (dict(input_features=feats), dict(melody=wave)):  # the processor's features, or the waveform
        out = ours.generate(
            ids, mask, duration=WINDOW, window_duration=WINDOW, return_dict_in_generate=True, **kwargs, **GREEDY
        )
        assert out.stats["windows"] == 1
        _agree(f"one window ({', '.join(kwargs)})", out.audio_codes, ref)


# -- sampling, callbacks, inputs ---------------------------------------------------------------------------------------


def test_same_seed_same_audio(melody):
    _, ours, _ = melody
    ids, mask = _text(seed=11)
    wave = np.random.default_rng(12).standard_normal(400).astype(np.float32)  # one clip for both rows
    kw = dict(melody=wave, duration=0.0125, window_duration=WINDOW, extend_stride=STRIDE, do_sample=True, top_k=5)
    kw.update(guidance_scale=3.0, return_dict_in_generate=True)
    a, b, c = (ours.generate(ids, mask, seed=s, **kw) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.audio_codes, b.audio_codes)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert (a.audio_codes != c.audio_codes).any()


def test_audio_arrives_window_by_window_and_adds_up(melody):
    _, ours, _ = melody
    ids, mask = _text(seed=13)
    pieces, progress = [], []
    out = ours.generate(
        ids, mask, duration=0.025, window_duration=WINDOW, extend_stride=STRIDE, on_audio=pieces.append,
        progress=lambda done, total: progress.append((done, total)), return_dict_in_generate=True, **GREEDY,
    )  # fmt: skip
    assert len(pieces) > 2
    np.testing.assert_array_equal(np.concatenate(pieces, axis=-1), out.sequences)
    assert out.sequences.shape == (2, 1, 200 * HOP)
    done = [d for d, _ in progress]
    assert done == sorted(done) and progress[-1] == (out.stats["decode_steps"], out.stats["decode_steps"])
    one_pass = ours._decode_codes(out.audio_codes)
    snr = _snr(out.sequences, one_pass)
    print(f"[parity] chunked codec decode of 200 frames vs one pass: SNR {snr:.1f} dB")
    assert snr >= 60


def test_melody_forms_are_read_alike(melody):
    _, ours, _ = melody
    ids, mask = _text(seed=14)
    rng = np.random.default_rng(15)
    stereo_wave = rng.standard_normal((2, 2, 300)).astype(np.float32)
    kw = dict(duration=0.0125, window_duration=WINDOW, extend_stride=STRIDE, return_dict_in_generate=True, **GREEDY)
    ref = ours.generate(ids, mask, melody=stereo_wave.mean(axis=1), **kw).audio_codes
    for name, wave in (("(batch, channels, samples)", stereo_wave), ("a list of clips", list(stereo_wave))):
        _agree(f"melody as {name}", ours.generate(ids, mask, melody=wave, **kw).audio_codes, ref)
    # a melody at another rate is resampled first: the same as resampling it yourself
    from musicgen_jax.resample import HF_LOWPASS_FILTER_WIDTH, HF_ROLLOFF, resample

    slow = rng.standard_normal((2, 150)).astype(np.float32)
    at_model_rate = resample(slow, 16000, SR, lowpass_filter_width=HF_LOWPASS_FILTER_WIDTH, rolloff=HF_ROLLOFF)
    a = ours.generate(ids, mask, melody=slow, melody_sampling_rate=16000, **kw).audio_codes
    _agree("melody at 16 kHz", a, ours.generate(ids, mask, melody=at_model_rate, **kw).audio_codes)


def test_processor_output_runs_long_form(melody):
    _, ours, path = melody
    processor = MusicgenMelodyProcessor.from_pretrained(path)
    rng = np.random.default_rng(16)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (300, 500)]  # different lengths: a list
    inputs = processor(text=["a calm piano melody", "dark techno"], audio=clips, sampling_rate=SR, padding=True)
    assert isinstance(inputs["melody"], list) and [len(x) for x in inputs["melody"]] == [300, 500]
    kw = dict(duration=0.0125, window_duration=WINDOW, extend_stride=STRIDE, return_dict_in_generate=True, **GREEDY)
    out = ours.generate(**inputs, **kw)
    text = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    _agree("generate(**processor(...))", out.audio_codes, ours.generate(**text, melody=clips, **kw).audio_codes)
    ours(**inputs, decoder_input_ids=np.zeros((8, 3), np.int64))  # the forward pass takes the same inputs


def test_unconditional_long_form(plain):
    _, ours = plain
    out = ours.generate(
        **ours.get_unconditional_inputs(2), duration=0.0125, window_duration=WINDOW, extend_stride=STRIDE,
        do_sample=False, return_dict_in_generate=True,
    )  # fmt: skip
    assert out.audio_codes.shape == (2, 4, 100) and out.stats["windows"] == 4


# -- compiled once -----------------------------------------------------------------------------------------------------


def test_any_duration_runs_the_same_compiled_programs(melody):
    _, ours, _ = melody
    ids, mask = _text(seed=17)
    wave = np.random.default_rng(18).standard_normal((2, 700)).astype(np.float32)
    kw = dict(melody=wave, window_duration=WINDOW, extend_stride=STRIDE, **GREEDY)
    compiles = []

    def listen(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    ours.generate(ids, mask, duration=0.0125, **kw)  # windows 0, steady and a partial last: every program
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        for duration in (0.0150, 0.02175, 0.0305):  # 120, 174 and 244 frames: 5, 7 and 10 windows, last ones partial
            out = ours.generate(ids, mask, duration=duration, return_dict_in_generate=True, **kw)
            assert out.audio_codes.shape[2] == round(duration * FRAME_RATE)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    print(f"[long-form] compilations over three more durations: {len(compiles)}")
    assert compiles == []


# -- bad input ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(duration=0.01, window_duration=WINDOW, extend_stride=0), r"^extend_stride must be a positive"),
        (dict(duration=0.01, window_duration=WINDOW, extend_stride=-1.0), r"^extend_stride must be a positive"),
        (dict(duration=0.01, window_duration=WINDOW, extend_stride=WINDOW), r"^extend_stride 0\.005 s must be shorter"),
        (
            dict(duration=0.5, window_duration=0.3),
            r"^window_duration 0\.3 s does not fit: .* at most 0\.2[0-9]* s fits",
        ),
        (dict(duration=3601.0), r"^duration 3601 s is past the cap of 3600 s"),
        (dict(max_new_tokens=10, window_duration=WINDOW), r"^window_duration and extend_stride apply to duration="),
        (dict(duration=0.01, window_duration=WINDOW, melody=np.zeros(0, np.float32)), r"^melody has no samples$"),
        (dict(duration=0.01, window_duration=WINDOW, melody=np.zeros((3, 50), np.float32)), r"holds 3 clips .* 2"),
        (
            dict(
                duration=0.01,
                window_duration=WINDOW,
                input_features=np.eye(12, dtype=np.float32)[None, :3].repeat(2, 0),
            ),
            r"^long-form generation with a melody reads it again",
        ),  # fmt: skip
        (dict(duration=0.01, window_duration=WINDOW, melody_sampling_rate=16000), r"^melody_sampling_rate is given"),
        (
            dict(duration=0.01, window_duration=WINDOW, decoder_input_ids=np.zeros((8, 40), np.int64)),
            r"^the audio prompt .* must be shorter than window_duration",
        ),  # fmt: skip
    ],
)
def test_bad_long_form_arguments_are_one_line(melody, kwargs, match):
    _, ours, _ = melody
    ids, mask = _text()
    with pytest.raises(ValueError, match=match) as caught:
        ours.generate(ids, mask, do_sample=False, **kwargs)
    assert "\n" not in str(caught.value)


def test_plain_musicgen_refuses_a_melody(plain):
    _, ours = plain
    ids, mask = _text()
    with pytest.raises(ValueError, match="^plain MusicGen takes no melody"):
        ours.generate(ids, mask, melody=np.ones(100, np.float32), duration=0.01)


def test_window_error_names_the_largest_window_in_seconds():
    from musicgen_jax.demo import tiny_config

    config = tiny_config()  # 50 frames/s, 2048 positions
    message = long_form.window_error(config, 250, 2000, 40.0)
    assert message.startswith("window_duration 40 s does not fit") and "at most 35.88 s fits" in message
    assert long_form.window_error(config, 250, 1500, 30.0) is None
