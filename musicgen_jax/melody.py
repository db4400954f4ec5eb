"""The melody waveform ``generate`` takes (``melody=``): read as clips, mixed to mono, resampled to the model's rate,
and cut into the windows long-form generation conditions on (audiocraft ``MusicGen._generate_tokens``).

One-shot generation turns the whole clip into chroma features, as the processor does; long-form generation reads,
for each window, the samples from the window's start for one window's length, the clip tiled when it is shorter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from musicgen_jax.audio import Waveform
from musicgen_jax.resample import HF_LOWPASS_FILTER_WIDTH, HF_ROLLOFF, resample


def melody_items(melody: Any, batch: int, sampling_rate: int | None, model_rate: int) -> list[np.ndarray]:
    """``melody`` as ``batch`` float32 mono clips ``(A_i,)`` at ``model_rate``; a one-line ValueError otherwise.

    Accepted: ``(samples,)`` (one mono clip, used for every row), ``(batch, samples)`` (a batch of mono clips, HF's
    reading of 2-D arrays), ``(batch, channels, samples)``, a :class:`~musicgen_jax.audio.Waveform` ``(channels,
    samples)`` (one clip, as ``audio.load`` returns it), or a list of ``batch`` clips of any lengths. Channels are
    averaged (audiocraft ``convert_audio`` mixes to mono before its chroma), then each clip is resampled from
    ``sampling_rate`` (default ``model_rate``) with the feature extractor's resampler.
    """
    rate = model_rate if sampling_rate is None else sampling_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"melody_sampling_rate must be a positive integer (Hz), got {sampling_rate!r}")
    if isinstance(melody, (list, tuple)):
        clips = [_mono(np.asarray(x, np.float32), f"melody[{i}]") for i, x in enumerate(melody)]
    else:
        array = np.asarray(melody, np.float32)
        if array.ndim == 1 or (isinstance(melody, Waveform) and array.ndim == 2):
            clips = [_mono(array, "melody")]
        elif array.ndim in (2, 3):
            clips = [_mono(x, f"melody[{i}]") for i, x in enumerate(array)]
        else:
            raise ValueError(
                f"melody must be (samples,), (batch, samples) or (batch, channels, samples), got shape {array.shape}"
            )
    for i, clip in enumerate(clips):
        name = "melody" if len(clips) == 1 else f"melody[{i}]"
        if clip.size == 0:
            raise ValueError(f"{name} has no samples")
        if not np.all(np.isfinite(clip)):
            raise ValueError(f"{name} holds NaN or infinite samples")
    if len(clips) == 1 and batch > 1:
        clips = clips * batch  # one clip for every row
    if len(clips) != batch:
        raise ValueError(f"melody holds {len(clips)} clips but the inputs have batch {batch}")
    if rate != model_rate:
        clips = [
            resample(x, int(rate), model_rate, lowpass_filter_width=HF_LOWPASS_FILTER_WIDTH, rolloff=HF_ROLLOFF)
            for x in clips
        ]
    return [np.asarray(x, np.float32) for x in clips]


def _mono(clip: np.ndarray, name: str) -> np.ndarray:
    """A clip ``(samples,)`` or ``(channels, samples)`` -> ``(samples,)``, channels averaged."""
    if clip.ndim == 1:
        return clip
    if clip.ndim == 2 and clip.shape[0] <= 32:
        return clip.mean(axis=0) if clip.shape[0] > 1 else clip[0]
    raise ValueError(f"{name} must be (samples,) or (channels, samples) with at most 32 channels, got {clip.shape}")


def window_waves(clips: list[np.ndarray], start: int, length: int) -> np.ndarray:
    """Samples ``start .. start + length`` of each clip, read modulo its length (a short clip is tiled):
    float32 ``(B, length)``. audiocraft ``MusicGen._generate_tokens`` reads ``ref_wav[..., positions % wav_length]``."""
    positions = start + np.arange(length)
    return np.stack([clip[positions % clip.shape[0]] for clip in clips])


def as_batch(clips: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Clips as one ``(B, A)`` array when they are as long, else the list (what the processor returns as
    ``melody``)."""
    if len({clip.shape[0] for clip in clips}) == 1:
        return np.stack(clips)
    return list(clips)


def clip_count(melody: Any) -> int:
    """How many clips ``melody`` holds, read as :func:`melody_items` reads it."""
    if isinstance(melody, (list, tuple)):
        return len(melody)
    ndim = np.ndim(melody)
    return 1 if ndim == 1 or (isinstance(melody, Waveform) and ndim == 2) else int(np.shape(melody)[0])
