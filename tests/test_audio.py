"""Audio file IO: files written with soundfile read back exactly; resampling on load is the extractor's resampler;
unreadable, empty and non-finite audio give a one-line ``AudioError`` naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from musicgen_jax.audio import AudioError, load, save_wav
from musicgen_jax.chroma import MusicgenMelodyFeatureExtractor
from musicgen_jax.resample import resample

RNG = np.random.default_rng(0)


def noise(channels: int, samples: int) -> np.ndarray:
    return (0.5 * RNG.uniform(-1, 1, size=(channels, samples))).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 2])
def test_load_float_wav_is_exact(tmp_path, channels):
    audio = noise(channels, 12345)
    path = tmp_path / "clip.wav"
    soundfile.write(path, audio.T, 44100, subtype="FLOAT")
    loaded, rate = load(path)
    assert rate == 44100 and loaded.dtype == np.float32 and loaded.shape == (channels, 12345)
    np.testing.assert_array_equal(loaded, audio)


def test_load_pcm16_and_flac(tmp_path):
    audio = noise(2, 8000)
    soundfile.write(tmp_path / "a.wav", audio.T, 16000, subtype="PCM_16")
    soundfile.write(tmp_path / "a.flac", audio.T, 16000)
    for name in ("a.wav", "a.flac"):
        loaded, rate = load(tmp_path / name)
        err = float(np.max(np.abs(loaded - audio)))
        print(f"[io] {name}: 16-bit round trip max abs err {err:.1e}")
        assert rate == 16000 and loaded.shape == (2, 8000) and err <= 1 / 32768 + 1e-7


def test_load_resamples_like_the_feature_extractor(tmp_path):
    audio = noise(2, 44100)
    soundfile.write(tmp_path / "a.wav", audio.T, 44100, subtype="FLOAT")
    loaded, rate = load(tmp_path / "a.wav", sampling_rate=32000)
    assert rate == 32000 and loaded.shape == (2, 32000)
    np.testing.assert_array_equal(loaded, resample(audio, 44100, 32000, lowpass_filter_width=24, rolloff=0.945))
    fe = MusicgenMelodyFeatureExtractor()
    raw, raw_rate = load(tmp_path / "a.wav")
    np.testing.assert_array_equal(
        fe(loaded[None], sampling_rate=32000)["input_features"], fe(raw[None], sampling_rate=raw_rate)["input_features"]
    )


@pytest.mark.parametrize("shape", [(5000,), (1, 5000), (2, 5000)])
def test_save_wav_round_trip(tmp_path, shape):
    audio = noise(1, int(np.prod(shape))).reshape(shape)
    path = tmp_path / "out.wav"
    save_wav(path, audio, 32000)
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    assert rate == 32000 and soundfile.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(data.T, audio.reshape(-1, shape[-1]))
    loaded, _ = load(path)
    np.testing.assert_array_equal(loaded, audio.reshape(-1, shape[-1]))


def _assert_one_line(error: pytest.ExceptionInfo, path) -> str:
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


def test_load_errors(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="no such file") as e:
        load(missing)
    _assert_one_line(e, missing)

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="cannot read audio") as e:
        load(empty)
    _assert_one_line(e, empty)

    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 100)
    with pytest.raises(AudioError, match="cannot read audio") as e:
        load(text)
    _assert_one_line(e, text)

    no_frames = tmp_path / "no_frames.wav"
    soundfile.write(no_frames, np.zeros((0, 1), np.float32), 32000)
    with pytest.raises(AudioError, match="no audio samples") as e:
        load(no_frames)
    _assert_one_line(e, no_frames)

    nan = tmp_path / "nan.wav"
    audio = noise(1, 1000)
    audio[0, 500] = np.nan
    soundfile.write(nan, audio.T, 32000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite") as e:
        load(nan)
    _assert_one_line(e, nan)

    with pytest.raises(AudioError, match="is a directory"):
        load(tmp_path)
    assert issubclass(AudioError, ValueError)


def test_save_wav_errors(tmp_path):
    path = tmp_path / "out.wav"
    bad = noise(1, 100)
    bad[0, 3] = np.inf
    cases = [
        (bad, 32000, "NaN or infinite"),
        (np.zeros((1, 0), np.float32), 32000, "no audio samples"),
        (np.zeros((2, 3, 4), np.float32), 32000, r"\(samples,\) or \(channels, samples\)"),
        (np.zeros((1000, 2), np.float32), 32000, "transpose"),
        (noise(1, 100), 0, "sampling_rate"),
    ]
    for audio, rate, match in cases:
        with pytest.raises(AudioError, match=match) as e:
            save_wav(path, audio, rate)
        _assert_one_line(e, path)
    assert not path.exists()
    missing_dir = tmp_path / "no" / "such" / "dir.wav"
    with pytest.raises(AudioError, match="cannot write WAV") as e:
        save_wav(missing_dir, noise(1, 100), 32000)
    _assert_one_line(e, missing_dir)


def test_a_loaded_file_is_one_clip_for_the_feature_extractor(tmp_path):
    from musicgen_jax.audio import Waveform

    fe = MusicgenMelodyFeatureExtractor()
    stereo, mono = noise(2, 20000), noise(1, 20000)
    soundfile.write(tmp_path / "stereo.wav", stereo.T, 32000, subtype="FLOAT")
    soundfile.write(tmp_path / "mono.wav", mono.T, 32000, subtype="FLOAT")
    for name, rate in (("stereo.wav", None), ("stereo.wav", 16000), ("mono.wav", None)):
        loaded, got_rate = load(tmp_path / name, sampling_rate=rate)
        assert isinstance(loaded, Waveform) and loaded.dtype == np.float32 and loaded.ndim == 2
        features = fe(loaded, sampling_rate=got_rate)["input_features"]
        # one clip: its channels averaged (a mono file's one row is itself), as HF reads [clip]
        assert features.shape[0] == 1
        mixed = fe(np.asarray(loaded).mean(axis=0), sampling_rate=got_rate)["input_features"]
        np.testing.assert_array_equal(features, mixed)
    # a plain 2-D array keeps HF's reading: a batch of mono clips
    assert type(np.asarray(loaded)) is np.ndarray
    assert fe(np.asarray(load(tmp_path / "stereo.wav")[0]), sampling_rate=32000)["input_features"].shape[0] == 2


def test_waveform_is_only_one_clip(tmp_path):
    from musicgen_jax.audio import Waveform

    with pytest.raises(ValueError, match=r"one clip, \(samples,\) or \(channels, samples\); got shape \(2, 3, 4\)"):
        Waveform(np.zeros((2, 3, 4)))
    transposed = Waveform(noise(2, 5000)).T  # (samples, channels): a Waveform still, but not (channels, samples)
    with pytest.raises(ValueError, match="at most 32 channels; got shape .*transpose"):
        MusicgenMelodyFeatureExtractor()(transposed, sampling_rate=32000)
