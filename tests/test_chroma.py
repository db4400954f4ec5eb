"""Parity of ``musicgen_jax.chroma`` with HF's ``MusicgenMelodyFeatureExtractor``, frame for frame.

The reference is HF's own class: its real ``__call__`` runs (input handling, Demucs stems, stereo averaging,
``SequenceFeatureExtractor.pad`` with truncation / padding side / attention mask) and its real
``_torch_extract_fbank_features`` (short-audio padding, filter bank einsum, inf-norm, argmax). HF calls torchaudio
twice, and torchaudio is not installed (it has no CPU build here), so those two calls are served by a STAND-IN written
below in torch from torchaudio's public source and patched into HF's module namespace:

* ``torchaudio.transforms.Spectrogram`` (src/torchaudio/transforms/_transforms.py) + ``functional.spectrogram``
  (src/torchaudio/functional/functional.py): ``torch.stft`` with ``torch.hann_window``, ``center=True``,
  ``pad_mode="reflect"``, then ``/ window.pow(2).sum().sqrt()`` for ``normalized=True``, then ``.abs().pow(power)``.
* ``torchaudio.functional.resample`` (same file: ``_get_sinc_resample_kernel`` + ``_apply_sinc_resample_kernel``,
  method "sinc_interp_hann"), including its float32 ``torch.as_tensor`` in the output length.

No musicgen_jax code produces an expected value. The pre-argmax chroma of HF is captured by spying on the
``torch.nn.functional.normalize`` call inside HF's method; ours by spying on ``MusicgenMelodyFeatureExtractor.chroma``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from musicgen_jax.chroma import MusicgenMelodyFeatureExtractor, chroma_filter_bank, hann_window
from musicgen_jax.config import ConfigError
from musicgen_jax.resample import resample, sinc_resample_kernel

CHROMA_TOL = 1e-5
RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------------------------------
# The torchaudio stand-in (torch, from torchaudio's source; see the module docstring).
# ---------------------------------------------------------------------------------------------------------------------


class TorchaudioSpectrogram(torch.nn.Module):
    """torchaudio.transforms.Spectrogram with torchaudio.functional.spectrogram as its forward."""

    def __init__(
        self,
        n_fft=400,
        win_length=None,
        hop_length=None,
        pad=0,
        window_fn=torch.hann_window,
        power=2.0,
        normalized=False,
        wkwargs=None,
        center=True,
        pad_mode="reflect",
        onesided=True,
    ):
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length if win_length is not None else n_fft
        self.hop_length = hop_length if hop_length is not None else self.win_length // 2
        window = window_fn(self.win_length) if wkwargs is None else window_fn(self.win_length, **wkwargs)
        self.register_buffer("window", window)
        self.pad, self.power, self.normalized = pad, power, normalized
        self.center, self.pad_mode, self.onesided = center, pad_mode, onesided

    def forward(self, waveform):
        if self.pad > 0:
            waveform = torch.nn.functional.pad(waveform, (self.pad, self.pad), "constant")
        # _get_spec_norms: True or "window" -> divide by the window's L2 norm; "frame_length" -> torch.stft normalizes.
        frame_length_norm = self.normalized == "frame_length"
        window_norm = self.normalized is True or self.normalized == "window"
        shape = waveform.size()
        waveform = waveform.reshape(-1, shape[-1])
        spec = torch.stft(
            waveform,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=self.center,
            pad_mode=self.pad_mode,
            normalized=frame_length_norm,
            onesided=self.onesided,
            return_complex=True,
        )
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        if window_norm:
            spec /= self.window.pow(2.0).sum().sqrt()
        if self.power is None:
            return spec
        if self.power == 1.0:
            return spec.abs()
        return spec.abs().pow(self.power)


def torchaudio_resample(
    waveform, orig_freq, new_freq, lowpass_filter_width=6, rolloff=0.99, resampling_method="sinc_interp_hann", beta=None
):
    """torchaudio.functional.resample, "sinc_interp_hann" only, kernel built in the waveform's dtype as torchaudio."""
    assert resampling_method == "sinc_interp_hann" and beta is None
    if orig_freq <= 0.0 or new_freq <= 0.0:
        raise ValueError("Original frequency and desired frequecy should be positive")
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    dtype = waveform.dtype
    base_freq = min(orig, new)
    base_freq *= rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t *= base_freq
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    scale = base_freq / orig
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * scale
    shape = waveform.size()
    waveform = waveform.reshape(-1, shape[-1])
    num_wavs, length = waveform.shape
    waveform = torch.nn.functional.pad(waveform, (width, width + orig))
    resampled = torch.nn.functional.conv1d(waveform[:, None], kernels, stride=orig)
    resampled = resampled.transpose(1, 2).reshape(num_wavs, -1)
    target_length = torch.ceil(torch.as_tensor(new * length / orig)).long()
    resampled = resampled[..., :target_length]
    return resampled.reshape(shape[:-1] + resampled.shape[-1:])


@pytest.fixture(scope="module")
def hf_module():
    import transformers.models.musicgen_melody.feature_extraction_musicgen_melody as module

    stand_in = SimpleNamespace(
        transforms=SimpleNamespace(Spectrogram=TorchaudioSpectrogram),
        functional=SimpleNamespace(resample=torchaudio_resample),
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "torchaudio", stand_in, raising=False)
        yield module


def make_pair(hf_module, **kwargs):
    return MusicgenMelodyFeatureExtractor(**kwargs), hf_module.MusicgenMelodyFeatureExtractor(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Signals and the comparison.
# ---------------------------------------------------------------------------------------------------------------------


def melody(num_samples: int, sampling_rate: int = 32000, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """float32 (L,): a random note every ~0.3 s with three harmonics, plus white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sampling_rate
    note_len = int(0.3 * sampling_rate)
    pitches = 48 + rng.integers(0, 36, size=num_samples // note_len + 1)
    freq = 440.0 * 2.0 ** ((pitches[np.arange(num_samples) // note_len] - 69) / 12)
    phase = 2 * np.pi * np.cumsum(freq) / sampling_rate
    x = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * (0.4 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
    return (x + noise * rng.standard_normal(num_samples)).astype(np.float32)


def _pitch_class(freq):
    """Pitch class (C = 0) of the nearest equal-tempered note, A4 = 440 Hz, elementwise."""
    return np.round(12 * np.log2(np.asarray(freq) / 440.0) + 9).astype(int) % 12


def chords(num_samples: int, sampling_rate: int = 32000, seed: int = 0, noise: float = 0.02):
    """A random major or minor triad every 0.5 s, notes in random octaves (inversions) at random loudness, each a sine
    with three harmonics, plus white noise. Returns float32 (L,) and the chord's pitch classes per sample (L, 3)."""
    rng = np.random.default_rng(seed)
    chord_len = sampling_rate // 2
    chord = np.arange(num_samples) // chord_len
    num_chords = chord[-1] + 1
    roots = 45 + rng.integers(0, 24, num_chords)  # A2 .. G#4
    intervals = np.stack([np.zeros(num_chords, int), rng.choice([3, 4], num_chords), np.full(num_chords, 7)], 1)
    pitches = roots[:, None] + intervals + 12 * rng.integers(0, 2, (num_chords, 3))
    loudness = rng.uniform(0.4, 1.0, (num_chords, 3))
    x = np.zeros(num_samples)
    for note in range(3):
        freq = 440.0 * 2.0 ** ((pitches[chord, note] - 69) / 12)
        phase = 2 * np.pi * np.cumsum(freq) / sampling_rate
        x += loudness[chord, note] * sum(np.sin(k * phase) / k for k in (1, 2, 3))
    audio = 0.2 * x + noise * rng.standard_normal(num_samples)
    return audio.astype(np.float32), (pitches % 12)[chord]


def log_sweep(num_samples: int, sampling_rate: int = 32000, low: float = 55.0, high: float = 3520.0):
    """An exponential sine sweep from ``low`` to ``high`` Hz (A1 to A7 by default). Returns float32 (L,) and the
    instantaneous frequency per sample (L,)."""
    duration = num_samples / sampling_rate
    rate = math.log(high / low) / duration
    t = np.arange(num_samples) / sampling_rate
    phase = 2 * np.pi * low / rate * np.expm1(rate * t)
    return (0.5 * np.sin(phase)).astype(np.float32), low * np.exp(rate * t)


def compare(name, ours_fe, hf_fe, audio, hf_audio=None, **kwargs):
    """Runs HF's and our extractor on the same input; asserts identical one-hots and masks, pre-argmax within tol."""
    hf_chroma = {}
    normalize = torch.nn.functional.normalize

    def spy_normalize(*args, **kw):
        out = normalize(*args, **kw)
        hf_chroma["x"] = out.detach().clone().transpose(1, 2).numpy()  # HF: (B, C, T) here
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "normalize", spy_normalize)
        hf = hf_fe(audio if hf_audio is None else hf_audio, return_tensors="np", **kwargs)

    ours_chroma = {}
    chroma = ours_fe.chroma

    def spy_chroma(waveforms):
        out = chroma(waveforms)
        ours_chroma["x"] = np.asarray(out)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ours_fe, "chroma", spy_chroma)
        ours = ours_fe(audio, return_tensors="np", **kwargs)

    assert set(ours) == set(hf.keys()), f"{name}: keys {sorted(ours)} != HF {sorted(hf.keys())}"
    a, b = ours["input_features"], np.asarray(hf["input_features"])
    assert a.dtype == np.float32 and a.shape == b.shape, f"{name}: {a.dtype} {a.shape} != HF {b.dtype} {b.shape}"
    differing = int(np.sum(np.any(a != b, axis=-1)))
    err = float(np.max(np.abs(ours_chroma["x"] - hf_chroma["x"])))
    print(
        f"[parity] {name}: features {a.shape}, {differing} of {a.shape[0] * a.shape[1]} frames differ, "
        f"pre-argmax chroma max abs err {err:.2e}"
    )
    assert differing == 0, f"{name}: {differing} frames differ from HF"
    assert err < CHROMA_TOL, f"{name}: pre-argmax chroma error {err}"
    np.testing.assert_array_equal(a.sum(-1), 1.0)
    if "attention_mask" in ours:
        np.testing.assert_array_equal(ours["attention_mask"], np.asarray(hf["attention_mask"]))
        assert ours["attention_mask"].dtype == np.asarray(hf["attention_mask"]).dtype
    return ours, hf


# ---------------------------------------------------------------------------------------------------------------------
# Constants: filter bank, window, resampling kernel.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sr,n_fft,num_chroma", [(32000, 16384, 12), (16000, 2048, 12), (44100, 4096, 24)])
def test_librosa_chroma_equals_hf_chroma_filter_bank(sr, n_fft, num_chroma):
    import librosa
    from transformers.audio_utils import chroma_filter_bank as hf_bank

    ref = hf_bank(num_frequency_bins=n_fft, num_chroma=num_chroma, sampling_rate=sr, tuning=0)
    lib = librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0, n_chroma=num_chroma, dtype=np.float64)
    diff = float(np.max(np.abs(lib - ref)))
    print(f"[parity] chroma filter bank sr={sr} n_fft={n_fft} C={num_chroma}: max abs diff {diff:.1e}")
    np.testing.assert_array_equal(lib, ref)  # bit for bit: librosa can stand in for HF's port
    np.testing.assert_array_equal(chroma_filter_bank(sr, n_fft, num_chroma), torch.from_numpy(ref).float().numpy())


def test_window_and_norm_match_torch(hf_module):
    ours, hf = make_pair(hf_module)
    ref = hf.spectrogram.window.numpy()
    err = float(np.max(np.abs(hann_window(16384) - ref)))
    norm_ref = float(hf.spectrogram.window.pow(2.0).sum().sqrt())
    print(f"[parity] hann window vs torch.hann_window: max abs err {err:.1e}; L2 norm {ours.window_norm} vs {norm_ref}")
    assert err <= 1e-7
    assert abs(float(ours.window_norm) - norm_ref) <= 1e-5
    np.testing.assert_array_equal(ours.chroma_filters, hf.chroma_filters.numpy())


@pytest.mark.parametrize(
    "orig,new,width,rolloff",
    [(44100, 32000, 24, 0.945), (16000, 32000, 24, 0.945), (48000, 32000, 6, 0.99), (32000, 22050, 6, 0.99)],
)
def test_resampler_matches_torchaudio(orig, new, width, rolloff):
    # 92333 samples at 44.1 kHz: 320 * 92333 / 441 = 66999.0023, which float32 rounds to 66999.0, so torchaudio's
    # `torch.ceil(torch.as_tensor(...))` yields 66999 samples rather than 67000; exercised by the first case.
    x = np.stack([melody(92333, orig, seed=1), RNG.standard_normal(92333).astype(np.float32)])
    ref = torchaudio_resample(torch.from_numpy(x), orig, new, lowpass_filter_width=width, rolloff=rolloff).numpy()
    ours = resample(x, orig, new, lowpass_filter_width=width, rolloff=rolloff)
    assert ours.shape == ref.shape, f"{ours.shape} != torchaudio {ref.shape}"
    err = float(np.max(np.abs(ours - ref)))
    print(
        f"[parity] resample {orig}->{new} (width {width}, rolloff {rolloff}): {ours.shape[-1]} samples, "
        f"max abs err {err:.2e} (signal max {np.abs(ref).max():.2f})"
    )
    assert err < 1e-5
    if (orig, new) == (44100, 32000):
        assert ours.shape[-1] == 66999 == math.ceil(320 * 92333 / 441) - 1
    kernel, kernel_width = sinc_resample_kernel(orig, new, width, rolloff)
    assert kernel.shape == (new // math.gcd(orig, new), 2 * kernel_width + orig // math.gcd(orig, new))


def test_resampler_sanity_against_soxr():
    """An independent resampler (librosa's soxr_vhq) agrees on a band-limited signal away from the edges."""
    import librosa

    sr = 44100
    t = np.arange(2 * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100.5 * t + 1)).astype(np.float32)
    ours = resample(x, sr, 32000, lowpass_filter_width=24, rolloff=0.945)
    ref = librosa.resample(x.astype(np.float64), orig_sr=sr, target_sr=32000, res_type="soxr_vhq")
    assert ours.shape == ref.shape == (64000,)
    err = float(np.max(np.abs(ours - ref)[2000:-2000]))
    print(f"[parity] resample 44100->32000 vs soxr_vhq (interior): max abs err {err:.2e}")
    assert err < 1e-3
    np.testing.assert_array_equal(resample(x, sr, sr), x)
    with pytest.raises(ValueError, match="integer"):
        resample(x, 44100.5, 32000)


# ---------------------------------------------------------------------------------------------------------------------
# Features against HF's real __call__.
# ---------------------------------------------------------------------------------------------------------------------


def test_mono_clip(hf_module):
    ours, hf = make_pair(hf_module)
    out, _ = compare("mono 3.3 s", ours, hf, melody(105600 + 123), sampling_rate=32000)
    assert out["input_features"].shape == (1, 1 + (105600 + 123) // 4096, 12)


# 5 s and an odd sample count; both signals share it (one compile of our extractor).
LONG_ODD = 5 * 32000 + 321


def _centre_labels(labels, hop_length, num_frames):
    """The per-sample ``labels`` at each STFT frame's centre (sample ``t * hop_length``, torch's center=True)."""
    return labels[np.minimum(np.arange(num_frames) * hop_length, len(labels) - 1)]


def test_chords(hf_module):
    ours, hf = make_pair(hf_module)
    audio, chord_classes = chords(LONG_ODD, seed=21)
    out, _ = compare("triads every 0.5 s, 5 s + 321 samples", ours, hf, audio, sampling_rate=32000)
    # Independent of HF (a check on the signal, not the parity): the frames mostly name a note of the sounding chord;
    # a 0.5 s window straddles chord changes, so not all of them.
    found = out["input_features"][0].argmax(-1)
    expected = _centre_labels(chord_classes, ours.hop_length, len(found))
    in_chord = float(np.mean(np.any(found[:, None] == expected, axis=-1)))
    print(f"[signal] chords: {in_chord:.2f} of frames name a note of the chord at the frame centre")
    assert in_chord >= 0.9


def test_log_sine_sweep(hf_module):
    ours, hf = make_pair(hf_module)
    audio, freq = log_sweep(LONG_ODD)
    out, _ = compare("log sine sweep 55-3520 Hz (6 octaves), 5 s + 321 samples", ours, hf, audio, sampling_rate=32000)
    # Independent of HF: the sweep walks through the pitch classes in order; each frame names the pitch class at its
    # centre, give or take one semitone (the window spans about a third of an octave of the sweep); not checked in the
    # frames whose window reaches into the reflect padding (n_fft // 2 = 2 hops at each end), which reflects the sweep.
    found = out["input_features"][0].argmax(-1)
    expected = _pitch_class(_centre_labels(freq, ours.hop_length, len(found)))
    off = np.abs((found - expected + 6) % 12 - 6)
    print(f"[signal] sweep: frames off by 0, 1, ... semitones: {np.bincount(off)}; edge frames {off[:2]} {off[-2:]}")
    assert np.all(off[2:-2] <= 1)
    assert len(set(found)) == 12


def test_white_noise_and_float64_list(hf_module):
    ours, hf = make_pair(hf_module)
    clip = RNG.standard_normal(50000)  # float64, given as a Python list of floats
    compare("white noise, list of floats", ours, hf, clip.tolist(), sampling_rate=32000)


def test_stereo_batch_array(hf_module):
    ours, hf = make_pair(hf_module)
    stereo = np.stack([np.stack([melody(70000, seed=s), melody(70000, seed=s + 10)]) for s in (2, 3)])  # (2, 2, L)
    compare("stereo (B=2, C=2, L) array", ours, hf, stereo, sampling_rate=32000)


def test_stereo_list_of_different_lengths(hf_module):
    ours, hf = make_pair(hf_module)
    clips = [np.stack([melody(n, seed=n), melody(n, seed=n + 1)]) for n in (60000, 41000)]
    compare("stereo list, lengths 60000/41000", ours, hf, clips, sampling_rate=32000)


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_padding_and_attention_mask(hf_module, side):
    ours, hf = make_pair(hf_module, padding_side=side)
    clips = [melody(40000, seed=4), melody(70001, seed=5).astype(np.float64), melody(12345, seed=6)]
    out, _ = compare(f"list of 3, padding {side}", ours, hf, clips, sampling_rate=32000, return_attention_mask=True)
    assert out["attention_mask"].shape == (3, math.ceil(70001 / 4096))
    compare(
        f"list of 3, padding {side}, pad_to_multiple_of", ours, hf, clips, sampling_rate=32000, pad_to_multiple_of=5000
    )
    compare(
        f"2-D array, padding {side}",
        ours,
        hf,
        np.stack([melody(30000, seed=7), melody(30000, seed=8)]),
        sampling_rate=32000,
    )


def test_default_attention_mask_stays_at_sample_rate(hf_module):
    # HF quirk kept: with return_attention_mask=True set on the instance, the call's default (None) returns the mask
    # at sample rate, not frame rate.
    ours, hf = make_pair(hf_module, return_attention_mask=True, padding_side="left")
    out, _ = compare(
        "instance-default mask", ours, hf, [melody(20000, seed=9), melody(33000, seed=10)], sampling_rate=32000
    )
    assert out["attention_mask"].shape == (2, 33000)


def test_truncation(hf_module):
    ours, hf = make_pair(hf_module)
    long_clip = melody(31 * 32000 + 77, seed=11)
    out, _ = compare("31 s clip, default truncation to 30 s", ours, hf, long_clip, sampling_rate=32000)
    assert out["input_features"].shape == (1, 1 + 960000 // 4096, 12)
    clips = [melody(90000, seed=12), melody(20000, seed=13)]
    compare(
        "max_length=50000 padding='max_length'",
        ours,
        hf,
        clips,
        sampling_rate=32000,
        padding="max_length",
        max_length=50000,
        return_attention_mask=True,
    )
    compare(
        "max_length=50000 pad_to_multiple_of=4096",
        ours,
        hf,
        clips,
        sampling_rate=32000,
        max_length=50000,
        pad_to_multiple_of=4096,
    )
    compare("truncation=False", ours, hf, clips, sampling_rate=32000, truncation=False, max_length=50000)


@pytest.mark.parametrize("length", [5000, 6001])
def test_audio_shorter_than_n_fft(hf_module, length):
    ours, hf = make_pair(hf_module)
    out, _ = compare(f"short clip L={length}", ours, hf, melody(length, seed=length), sampling_rate=32000)
    assert out["input_features"].shape == (1, 1 + 16384 // 4096, 12)


@pytest.mark.parametrize("rate", [44100, 16000])
def test_resampled_input(hf_module, rate):
    ours, hf = make_pair(hf_module)
    clips = np.stack([melody(int(2.5 * rate), rate, seed=14), melody(int(2.5 * rate), rate, seed=15)])
    # torchaudio (and so HF) resamples only torch tensors; we take any array.
    compare(f"resampled {rate}->32000", ours, hf, clips, hf_audio=torch.from_numpy(clips), sampling_rate=rate)


def test_demucs_output(hf_module):
    ours, hf = make_pair(hf_module, stem_indices=[3, 2])
    demucs = np.stack(
        [
            np.stack([np.stack([melody(66150, 44100, seed=16 + 4 * b + s + c) for c in range(2)]) for s in range(4)])
            for b in range(2)
        ]
    )  # (B=2, stems=4, C=2, L)
    compare("Demucs 44100", ours, hf, demucs, hf_audio=torch.from_numpy(demucs), sampling_rate=44100)
    with pytest.warns(UserWarning, match="sampling_rate"):
        compare("Demucs, default rate (44000)", ours, hf, demucs, hf_audio=torch.from_numpy(demucs))


def test_pure_tones_give_their_pitch_class():
    """Independent of HF: a sine at a note's frequency lights that pitch class (C = 0) in every frame."""
    fe = MusicgenMelodyFeatureExtractor()
    notes = {"C4": 261.63, "E4": 329.63, "G3": 196.0, "A4": 440.0, "F#5": 739.99, "B2": 123.47}
    clips = [np.sin(2 * np.pi * f * np.arange(64000) / 32000).astype(np.float32) for f in notes.values()]
    features = fe(clips, sampling_rate=32000)["input_features"]
    expected = [round(12 * math.log2(f / 261.63)) % 12 for f in notes.values()]
    assert expected == [0, 4, 7, 9, 6, 11]
    np.testing.assert_array_equal(features.argmax(-1), np.repeat(np.array(expected)[:, None], features.shape[1], 1))


# ---------------------------------------------------------------------------------------------------------------------
# Config files, errors, output types.
# ---------------------------------------------------------------------------------------------------------------------


def test_preprocessor_config_round_trip(hf_module, tmp_path):
    kwargs = dict(
        padding_side="left",
        return_attention_mask=True,
        stem_indices=[1, 0],
        hop_length=2048,
        chunk_length=20,
        padding_value=0.5,
    )
    hf = hf_module.MusicgenMelodyFeatureExtractor(**kwargs)
    hf.save_pretrained(tmp_path / "hf")
    ours = MusicgenMelodyFeatureExtractor.from_pretrained(tmp_path / "hf")
    expected = {**hf.to_dict(), "num_chroma": 12}
    assert ours.to_dict() == expected
    ours.save_pretrained(tmp_path / "ours")
    back = hf_module.MusicgenMelodyFeatureExtractor.from_pretrained(tmp_path / "ours")
    assert back.to_dict() == hf.to_dict()
    hf_text = (tmp_path / "hf" / "preprocessor_config.json").read_text()
    ours_text = (tmp_path / "ours" / "preprocessor_config.json").read_text()
    assert ours_text.replace('  "num_chroma": 12,\n', "") == hf_text
    assert MusicgenMelodyFeatureExtractor.from_pretrained(tmp_path / "ours" / "preprocessor_config.json").to_dict() == (
        expected
    )


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("do_normalize", True, "unknown feature extractor field 'do_normalize'"),
        ("feature_extractor_type", "WhisperFeatureExtractor", "feature_extractor_type"),
        ("padding_side", "middle", "padding_side"),
        ("n_fft", 0, "n_fft"),
        ("stem_indices", [], "stem_indices"),
    ],
)
def test_strict_config(tmp_path, field, value, match):
    import json

    data = {**MusicgenMelodyFeatureExtractor().to_dict(), field: value, "processor_class": "MusicgenMelodyProcessor"}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=match) as info:
        MusicgenMelodyFeatureExtractor.from_pretrained(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path)), message


def test_input_errors_and_jax_output():
    import jax

    fe = MusicgenMelodyFeatureExtractor()
    clips = [melody(20000), melody(30000)]
    with pytest.raises(ValueError, match="padding=True"):
        fe(clips, sampling_rate=32000, padding=False)
    with pytest.raises(ValueError, match="return_tensors"):
        fe(clips, sampling_rate=32000, return_tensors="pt")
    with pytest.raises(ValueError, match="mixes stereo"):
        fe([np.stack([clips[0], clips[0]]), clips[1]], sampling_rate=32000)
    with pytest.raises(ValueError, match="empty"):
        fe([], sampling_rate=32000)
    out = fe(clips, sampling_rate=32000, return_tensors="jax", return_attention_mask=True)
    assert isinstance(out["input_features"], jax.Array) and isinstance(out["attention_mask"], jax.Array)
    np.testing.assert_array_equal(np.asarray(out["input_features"]), fe(clips, sampling_rate=32000)["input_features"])


def test_import_pulls_neither_torch_nor_transformers():
    code = (
        "import sys, musicgen_jax.chroma, musicgen_jax.audio\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'torchaudio')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------------------------------------------------------------
# HF's output type, pad and JSON files.
# ---------------------------------------------------------------------------------------------------------------------


def test_call_returns_a_batch_feature():
    import pickle

    import jax

    from musicgen_jax import BatchFeature

    fe = MusicgenMelodyFeatureExtractor()
    clips = [melody(20000, seed=20), melody(30000, seed=21)]
    out = fe(clips, sampling_rate=32000, return_attention_mask=True)
    assert isinstance(out, BatchFeature) and isinstance(out, dict)
    assert list(out.keys()) == ["input_features", "attention_mask"]
    assert out.input_features is out["input_features"] and out.attention_mask is out["attention_mask"]
    assert isinstance(out.input_features, np.ndarray) and out.input_features.dtype == np.float32
    assert out.data is out
    with pytest.raises(AttributeError, match="'input_ids'"):
        out.input_ids  # noqa: B018
    for target in ("cpu", "cuda", torch.device("cpu"), torch.float16, jax.devices()[0]):
        assert out.to(target) is out
    assert out.to(device="cpu", non_blocking=True) is out

    def generate(input_features, attention_mask):  # takes these keywords, as model.generate does
        return input_features, attention_mask

    features, mask = generate(**out)
    assert features is out["input_features"] and mask is out["attention_mask"]
    back = pickle.loads(pickle.dumps(out))
    assert type(back) is BatchFeature and back.keys() == out.keys()
    for key in out:
        np.testing.assert_array_equal(back[key], out[key])
    as_jax = fe(clips, sampling_rate=32000, return_tensors="jax")
    assert isinstance(as_jax, BatchFeature) and isinstance(as_jax.input_features, jax.Array)


def _pad_both(ours, hf, make, **kwargs):
    """Our pad and HF's on fresh copies of the same input (HF's pad rewrites the mapping it is given)."""
    got, ref = ours.pad(make(), **kwargs), hf.pad(make(), **kwargs)
    assert set(got) == set(ref), (set(got), set(ref))
    for key in ref:
        expected = np.asarray(ref[key])
        assert got[key].dtype == expected.dtype and got[key].shape == expected.shape, (key, kwargs)
        np.testing.assert_array_equal(got[key], expected)
    return got


PAD_CALLS = [
    {},
    {"return_attention_mask": True},
    {"padding": "longest", "return_attention_mask": True, "return_tensors": "np"},
    {"padding": "max_length", "max_length": 1500, "return_attention_mask": True},
    {"padding": "max_length", "max_length": 1000, "truncation": True},
    {"truncation": True, "max_length": 800, "return_attention_mask": True},
    {"pad_to_multiple_of": 512, "return_attention_mask": True},
    {"truncation": True, "max_length": 800, "pad_to_multiple_of": 300},
    {"padding": False, "truncation": True, "max_length": 600, "return_attention_mask": True},
]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kwargs", PAD_CALLS, ids=[str(c) for c in PAD_CALLS])
def test_pad_matches_hf(hf_module, side, kwargs):
    # HF's own call pads (L_i, 1) items under "input_features" (its model_input_names[0]); so do collate functions.
    ours, hf = make_pair(hf_module, padding_side=side, padding_value=0.25)
    clips = [melody(n, seed=n)[:, None] for n in (700, 1234, 999)]
    clips[1] = clips[1].astype(np.float64)
    got = _pad_both(ours, hf, lambda: [{"input_features": c} for c in clips], **kwargs)
    _pad_both(ours, hf, lambda: {"input_features": list(clips)}, **kwargs)
    assert type(got).__name__ == "BatchFeature" and got.input_features.dtype == np.float32


def test_pad_matches_hf_on_masks_other_keys_and_dtypes(hf_module):
    ours, hf = make_pair(hf_module, padding_side="left")
    clips = [melody(n, seed=n)[:, None].astype(np.float64) for n in (7, 12, 9)]
    masks = [np.array([1] * (n - 2) + [0, 0]) for n in (7, 12, 9)]  # a given mask is padded, not rebuilt
    _pad_both(ours, hf, lambda: {"input_features": clips, "attention_mask": masks}, return_attention_mask=True)
    _pad_both(
        ours,
        hf,
        lambda: {"input_features": clips, "attention_mask": masks},
        return_attention_mask=True,
        truncation=True,
        max_length=8,
    )
    _pad_both(ours, hf, lambda: [{"input_features": c.tolist(), "labels": i} for i, c in enumerate(clips)])
    _pad_both(ours, hf, lambda: [{"input_features": c, "labels": np.full(3, i / 2)} for i, c in enumerate(clips)])
    _pad_both(ours, hf, lambda: {"input_features": np.ones((2, 6, 1))}, padding="max_length", max_length=8)
    _pad_both(
        ours, hf, lambda: {"input_features": [np.ones((9, 1)), np.ones((9, 1))]}, padding="max_length", max_length=8
    )
    _pad_both(ours, hf, lambda: {"input_features": [np.ones((9, 1), np.int16), np.ones((3, 1), np.int16)]})
    _pad_both(ours, hf, lambda: {"input_features": [torch.ones(9, 1), torch.ones(3, 1)]}, return_tensors="np")
    _pad_both(ours, hf, lambda: {"input_features": [np.ones(6), np.ones(6)]}, padding=False)
    # the instance default decides the mask, as in HF
    ours, hf = make_pair(hf_module, return_attention_mask=True)
    _pad_both(ours, hf, lambda: {"input_features": clips})
    # in a DataLoader, as HF's docstring suggests
    data = [{"input_features": c} for c in clips]
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=3, collate_fn=ours.pad)))
    np.testing.assert_array_equal(batch.input_features, hf.pad(list(data), return_tensors="np")["input_features"])


def test_pad_refuses_what_hf_refuses(hf_module):
    ours, hf = make_pair(hf_module)
    clips = [np.ones((5, 1)), np.ones((3, 1))]
    for kwargs, make, match in [
        ({"padding": "max_length"}, lambda: {"input_features": clips}, "max_length"),
        ({"truncation": True}, lambda: {"input_features": clips}, "max_length"),
        ({"padding": "middle"}, lambda: {"input_features": clips}, "padding"),
        ({}, lambda: {"input_values": clips}, "input_features"),
        ({}, lambda: {"input_features": clips, "labels": [1, 2, 3]}, "batch size"),
    ]:
        with pytest.raises(ValueError):
            hf.pad(make(), **kwargs)
        with pytest.raises(ValueError, match=match):
            ours.pad(make(), **kwargs)
    with pytest.raises(ValueError, match="return_tensors"):
        ours.pad({"input_features": clips}, return_tensors="tf")


def test_pad_one_dimensional_items():
    # HF's pad fails here (feature_size 12 > 1 makes it pad (L_i,) items as 2-D); the expected values are numpy's.
    fe = MusicgenMelodyFeatureExtractor(padding_value=-1.0, padding_side="left")
    clips = [np.arange(1, 6, dtype=np.float32), np.arange(1, 4, dtype=np.float32)]
    out = fe.pad({"input_features": clips}, return_attention_mask=True, pad_to_multiple_of=4)
    expected = np.stack([np.pad(c, (8 - len(c), 0), constant_values=-1.0) for c in clips])
    np.testing.assert_array_equal(out.input_features, expected)
    np.testing.assert_array_equal(out.attention_mask, (expected != -1.0).astype(np.int32))
    assert out.input_features.dtype == np.float32 and out.attention_mask.dtype == np.int32


def test_json_file_round_trip_with_hf(hf_module, tmp_path):
    import os
    import stat

    kwargs = dict(
        padding_side="left", return_attention_mask=True, stem_indices=[1, 0], hop_length=2048, chunk_length=20
    )
    ours, hf = MusicgenMelodyFeatureExtractor(**kwargs), hf_module.MusicgenMelodyFeatureExtractor(**kwargs)
    ours.to_json_file(tmp_path / "ours.json")
    assert (tmp_path / "ours.json").read_text() == ours.to_json_string()
    assert hf_module.MusicgenMelodyFeatureExtractor.from_json_file(tmp_path / "ours.json").to_dict() == hf.to_dict()
    hf.to_json_file(tmp_path / "hf.json")
    back = MusicgenMelodyFeatureExtractor.from_json_file(tmp_path / "hf.json")
    assert back.to_dict() == {**hf.to_dict(), "num_chroma": 12} == ours.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf.json", "ours.json"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "ours.json").stat().st_mode) == 0o666 & ~umask  # as open() would create it
    (tmp_path / "bad.json").write_text('{"do_normalize": true}')
    with pytest.raises(ConfigError, match="bad.json: unknown feature extractor field 'do_normalize'"):
        MusicgenMelodyFeatureExtractor.from_json_file(tmp_path / "bad.json")


def test_to_json_file_and_save_pretrained_are_atomic(tmp_path, monkeypatch):
    import os

    fe = MusicgenMelodyFeatureExtractor(hop_length=2048)
    target = tmp_path / "preprocessor_config.json"
    target.write_text("old")

    def replace_fails(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(OSError, match="disk full"):
        fe.to_json_file(target)
    with pytest.raises(OSError, match="disk full"):
        fe.save_pretrained(tmp_path)
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [target.name]
    assert fe.save_pretrained(tmp_path) == [str(target)]
    assert MusicgenMelodyFeatureExtractor.from_json_file(target).to_dict() == fe.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
