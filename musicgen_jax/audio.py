"""Audio file input and output: ``load`` any file soundfile/librosa can read, ``save_wav`` a waveform.

Arrays are float32 and channels-first, (channels, samples), as the feature extractor and EnCodec take them. Resampling
uses the feature extractor's resampler (:func:`musicgen_jax.resample.resample`, torchaudio's Hann-windowed sinc, with
HF's ``lowpass_filter_width=24, rolloff=0.945``), so ``fe(load(path, 32000)[0][None])`` and
``fe(load(path)[0][None], sampling_rate=rate)`` give the same features.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from musicgen_jax.errors import one_line
from musicgen_jax.files import atomic_write
from musicgen_jax.resample import HF_LOWPASS_FILTER_WIDTH, HF_ROLLOFF, resample


class AudioError(ValueError):
    """An audio file that cannot be read or written, or audio that is empty or not finite."""


class Waveform(np.ndarray):
    """ONE audio clip, float32, channels-first ``(channels, samples)`` (or ``(samples,)``): what :func:`load` returns.

    A plain numpy array: slices and arithmetic stay Waveforms, ``np.asarray`` gives the bare array. The only
    difference is how the feature extractor (and so the processor) reads it: a 2-D Waveform is one clip whose channels
    are averaged to mono, where a plain 2-D array is, as in HF, a batch of mono clips; a list of Waveforms is a batch
    of clips. ``Waveform(array)`` marks an array of your own as one clip.
    """

    def __new__(cls, data) -> Waveform:
        array = np.asarray(data, np.float32)
        if array.ndim not in (1, 2):
            raise ValueError(f"a Waveform is one clip, (samples,) or (channels, samples); got shape {array.shape}")
        return array.view(cls)


def _read(path: str) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the rate: soundfile, else librosa (audioread) for other formats."""
    import soundfile

    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(rate)
    except Exception as soundfile_error:  # libsndfile raises LibsndfileError / RuntimeError / TypeError by format
        try:
            import librosa

            # librosa retries soundfile, then audioread (ffmpeg etc.: m4a, aac, ...) with deprecation noise we mute.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, rate = librosa.load(path, sr=None, mono=False, dtype=np.float32)
        except Exception:
            raise AudioError(f"{path}: cannot read audio ({one_line(soundfile_error)})") from None
        return np.atleast_2d(np.asarray(data, np.float32)), int(rate)


def load(path: str | os.PathLike, sampling_rate: int | None = None) -> tuple[Waveform, int]:
    """Reads an audio file.

    Args:
        path: any format soundfile (libsndfile: wav, flac, ogg, mp3, ...) or librosa reads.
        sampling_rate: resample to this rate (Hz) when given and different from the file's.

    Returns:
        ``(audio, rate)``: a :class:`Waveform`, float32 (channels, samples) in [-1, 1] for integer formats (mono
        files give (1, samples)), and its rate in Hz. The processor reads it as one clip (stereo is averaged to
        mono): ``processor(text=[...], audio=audio, sampling_rate=rate)``; pass ``[audio] * n`` for n texts.

    Raises:
        AudioError: the file is missing or unreadable, holds no samples, or holds NaN or infinite samples.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    audio, rate = _read(path)
    if audio.size == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    if sampling_rate is not None and sampling_rate != rate:
        try:
            audio = resample(
                audio, rate, sampling_rate, lowpass_filter_width=HF_LOWPASS_FILTER_WIDTH, rolloff=HF_ROLLOFF
            )
        except ValueError as e:
            raise AudioError(f"{path}: cannot resample from {rate} Hz ({one_line(e)})") from None
        rate = int(sampling_rate)
    return Waveform(audio), rate


SOFTWARE_TAG = "musicgen-jax"  # the WAV's INFO/ISFT string: how a later run knows the file is ours to replace


def written_by_musicgen_jax(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a WAV file that :func:`save_wav` wrote (its software tag says so)."""
    import soundfile

    try:
        with soundfile.SoundFile(os.fspath(path)) as f:
            return (f.software or "").startswith(SOFTWARE_TAG)
    except Exception:  # not audio, unreadable, not a file: not ours
        return False


def save_wav(path: str | os.PathLike, audio: Any, sampling_rate: int, subtype: str = "FLOAT") -> None:
    """Writes a WAV file atomically: under a temporary name in the same folder, then renamed over ``path``, so an
    interrupted write never leaves a truncated file under ``path`` (it keeps the old file, if any, or none).

    Args:
        path: the file to write (its directory must exist).
        audio: float (samples,) mono or (channels, samples); numpy, JAX or anything with ``__array__``.
        sampling_rate: in Hz, a positive integer.
        subtype: a soundfile WAV subtype; the default "FLOAT" stores float32 exactly, "PCM_16" clips to [-1, 1].

    Raises:
        AudioError: empty or non-finite audio, a bad shape or rate, or a file that cannot be written.
    """
    import soundfile

    path = os.fspath(path)
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2:
        raise AudioError(f"{path}: audio must be (samples,) or (channels, samples), got shape {data.shape}")
    if data.shape[0] > 32:
        raise AudioError(
            f"{path}: audio of shape {data.shape} has {data.shape[0]} channels; expected "
            "(channels, samples) - transpose a (samples, channels) array"
        )
    if data.size == 0:
        raise AudioError(f"{path}: no audio samples to write (shape {data.shape})")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise AudioError(f"{path}: sampling_rate must be a positive integer, got {sampling_rate!r}")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory")
    try:
        with atomic_write(path, "r+b") as raw:
            with soundfile.SoundFile(
                raw, "w", samplerate=int(sampling_rate), channels=data.shape[0], subtype=subtype, format="WAV"
            ) as f:
                f.software = SOFTWARE_TAG
                f.write(data.T)
    except Exception as e:
        raise AudioError(f"{path}: cannot write WAV ({one_line(e)})") from None
