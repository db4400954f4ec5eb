"""Chroma features for melody conditioning: HF's ``MusicgenMelodyFeatureExtractor`` without torch or torchaudio.

HF (``transformers/models/musicgen_melody/feature_extraction_musicgen_melody.py``) computes, and so do we:

    audio --[4-D Demucs output: take stem_indices, sum them, average channels]--> (B, A)
          --[sampling_rate != 32 kHz: torchaudio's windowed-sinc resampler]-->
          --[float32; (channels, samples) items averaged to mono]--> list of (A_i,)
          --[truncate to max_length (default chunk_length seconds), pad to the longest / max_length]--> (B, A)
          --[centred power STFT, periodic Hann, reflect padding, / window L2 norm]--> (B, Y, X)
          --[chroma filter bank]--> (B, M, C) --[/ max over C (eps 1e-6)]--> --[argmax -> one-hot]--> (B, M, C)

The host side (input handling, resampling set-up, padding) is numpy; the resampling convolution and the whole chroma
computation are jitted JAX functions (:func:`resample`, :func:`chroma_features`) so they run on an accelerator.
Where HF or torchaudio do something surprising we do it too, and say so in a comment marked "Quirk".

Einsum letters: the package legend (``musicgen_jax/__init__.py``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.audio import Waveform
from musicgen_jax.batch_feature import BatchFeature
from musicgen_jax.config import ConfigError
from musicgen_jax.feature_files import FEATURE_EXTRACTOR_NAME, FeatureExtractorFiles
from musicgen_jax.resample import HF_LOWPASS_FILTER_WIDTH, HF_ROLLOFF, resample

logger = logging.getLogger(__name__)

_TYPE_NAME = "MusicgenMelodyFeatureExtractor"
_HIGHEST = jax.lax.Precision.HIGHEST

# Quirk: HF's `_extract_stem_indices` assumes Demucs ran at 44000 Hz (not 44100) when no sampling_rate is given.
DEMUCS_DEFAULT_SAMPLING_RATE = 44000


# ----------------------------------------------------------------------------------------------------------------------
# Chroma: the jitted numeric core.
# ----------------------------------------------------------------------------------------------------------------------


def hann_window(n: int) -> np.ndarray:
    """``torch.hann_window(n)`` (periodic), float32 (n,).

    Quirk: torch evaluates it in float32 as ``cos(arange(n) * (2 pi / n)) * -0.5 + 0.5``; we follow that order so the
    window matches torch's to float32 rounding of the same operations, not just to the exact formula.
    """
    f32 = np.float32
    if n == 1:
        return np.ones(1, np.float32)
    return (np.cos(np.arange(n, dtype=f32) * f32(2.0 * math.pi / n)) * f32(-0.5) + f32(0.5)).astype(np.float32)


def chroma_filter_bank(sampling_rate: int, n_fft: int, num_chroma: int) -> np.ndarray:
    """HF's chroma filter bank, float32 (C, X).

    HF calls ``transformers.audio_utils.chroma_filter_bank(sampling_rate=sr, num_frequency_bins=n_fft, tuning=0,
    num_chroma=C)`` (a port of librosa's) and casts it to float32. ``librosa.filters.chroma`` with the same arguments
    returns the identical float64 matrix (tests/test_chroma.py proves it bit for bit), so we use librosa.
    """
    import librosa  # heavy; only needed when an extractor is built

    bank = librosa.filters.chroma(sr=sampling_rate, n_fft=n_fft, tuning=0.0, n_chroma=num_chroma, dtype=np.float64)
    return bank.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("n_fft", "hop_length"))
def chroma_features(
    waveform_BA: jax.Array,
    window_A: jax.Array,
    window_norm: jax.Array,
    filters_CX: jax.Array,
    *,
    n_fft: int,
    hop_length: int,
) -> jax.Array:
    """Per-frame max-normalised chroma before the argmax (HF ``_torch_extract_fbank_features`` up to its argmax).

    Args:
        waveform_BA: float32 (B, A) padded mono audio at the extractor's sampling rate.
        window_A: float32 (A,) analysis window (``hann_window(n_fft)``: A = n_fft samples).
        window_norm: float32 scalar, the window's L2 norm (torchaudio ``normalized=True`` divides by it).
        filters_CX: float32 (C, X) chroma filter bank (X = n_fft // 2 + 1).
        n_fft, hop_length: static STFT sizes.

    Returns:
        float32 (B, M, C), one frame per STFT frame: M = 1 + max(A, n_fft) // hop_length; each frame divided by
        max(its max, 1e-6).
    """
    with jax.named_scope("pad"):
        length = waveform_BA.shape[-1]
        if length < n_fft:
            # HF pads audio shorter than n_fft with zeros, the odd sample going to the right.
            pad = n_fft - length
            waveform_BA = jnp.pad(waveform_BA, ((0, 0), (pad // 2, pad // 2 + pad % 2)))
        # torch.stft(center=True, pad_mode="reflect"): n_fft // 2 reflected samples on each side.
        half = n_fft // 2
        padded_BA = jnp.pad(waveform_BA, ((0, 0), (half, half)), mode="reflect")
    with jax.named_scope("stft"):
        num_frames = 1 + (padded_BA.shape[-1] - n_fft) // hop_length
        index_YA = jnp.arange(num_frames)[:, None] * hop_length + jnp.arange(n_fft)[None, :]
        frames_BYA = padded_BA[:, index_YA] * window_A
        spec_BYX = jnp.fft.rfft(frames_BYA, axis=-1)
        # torchaudio: divide the complex STFT by the window norm, then |.| ** 2 (same order here).
        power_BYX = jnp.square(jnp.abs(spec_BYX / window_norm))
    with jax.named_scope("chroma"):
        raw_BYC = jnp.einsum("BYX,CX->BYC", power_BYX, filters_CX, precision=_HIGHEST)
        # torch.nn.functional.normalize(p=inf, eps=1e-6): x / max(max |x|, eps).
        norm_BY1 = jnp.maximum(jnp.max(jnp.abs(raw_BYC), axis=-1, keepdims=True), 1e-6)
        return raw_BYC / norm_BY1


@jax.jit
def one_hot_argmax(chroma_BMC: jax.Array) -> jax.Array:
    """float32 (B, M, C) one-hot of the per-frame argmax (the first maximum on ties, as torch.argmax)."""
    return jax.nn.one_hot(jnp.argmax(chroma_BMC, axis=-1), chroma_BMC.shape[-1], dtype=jnp.float32)


# ----------------------------------------------------------------------------------------------------------------------
# The feature extractor (HF's names and calling conventions).
# ----------------------------------------------------------------------------------------------------------------------

_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


def _is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, jax.Array)) or (hasattr(x, "__array__") and hasattr(x, "shape"))


def _round_up(n: int, multiple: int | None) -> int:
    if multiple and n % multiple:
        return (n // multiple + 1) * multiple
    return n


_PADDING = {
    True: "longest",
    False: "do_not_pad",
    "longest": "longest",
    "max_length": "max_length",
    "do_not_pad": "do_not_pad",
}
_RETURN_TENSORS = (None, "np", "pt", "jax")


def _hf_dtype(arrays: Sequence[np.ndarray]) -> np.dtype:
    """The dtype of HF's padded batch: each item's dtype, float64 made float32, then numpy's promotion."""
    dtypes = [np.dtype(np.float32) if x.dtype == np.float64 else x.dtype for x in arrays]
    return functools.reduce(np.promote_types, dtypes)


class MusicgenMelodyFeatureExtractor(FeatureExtractorFiles):
    """Chroma features of (melody) audio, matching HF's ``MusicgenMelodyFeatureExtractor`` frame for frame.

    The constructor takes HF's arguments with HF's defaults (``padding_side`` as HF's base class does); unlike HF it
    rejects anything else. Attributes ``chroma_filters`` (float32 (C, X)) and ``window`` (float32 (A,)) hold the
    numpy constants the JAX computation uses.
    """

    model_input_names = ["input_features"]

    def __init__(
        self,
        feature_size: int = 12,
        sampling_rate: int = 32000,
        hop_length: int = 4096,
        chunk_length: int = 30,
        n_fft: int = 16384,
        num_chroma: int = 12,
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        stem_indices: Sequence[int] = (3, 2),
        padding_side: str = "right",
    ):
        self.feature_size = feature_size
        self.sampling_rate = sampling_rate
        self.hop_length = hop_length
        self.chunk_length = chunk_length
        self.n_fft = n_fft
        self.num_chroma = num_chroma
        self.padding_value = padding_value
        self.return_attention_mask = return_attention_mask
        self.stem_indices = list(stem_indices) if isinstance(stem_indices, (list, tuple)) else stem_indices
        self.padding_side = padding_side
        self._validate(_TYPE_NAME)
        self.n_samples = chunk_length * sampling_rate
        self.chroma_filters = chroma_filter_bank(sampling_rate, n_fft, num_chroma)
        self.window = hann_window(n_fft)
        # torchaudio: `window.pow(2.).sum().sqrt()`; computed in float64 and rounded once.
        self.window_norm = np.float32(np.sqrt(np.sum(np.square(self.window, dtype=np.float64))))
        self._device_constants = None

    # -- configuration -------------------------------------------------------------------------------------------------

    def _validate(self, where: str) -> None:
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{where}: {name} must be a positive integer, got {value!r}")

        for name in ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft", "num_chroma"):
            positive_int(name)
        if self.padding_side not in ("left", "right"):
            raise ConfigError(f"{where}: padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if isinstance(self.padding_value, bool) or not isinstance(self.padding_value, (int, float)):
            raise ConfigError(f"{where}: padding_value must be a number, got {self.padding_value!r}")
        if not isinstance(self.return_attention_mask, bool):
            raise ConfigError(
                f"{where}: return_attention_mask must be true or false, got {self.return_attention_mask!r}"
            )
        stems = self.stem_indices
        if (
            not isinstance(stems, list)
            or not stems
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in stems)
        ):
            raise ConfigError(f"{where}: stem_indices must be a non-empty list of integers, got {stems!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = _TYPE_NAME) -> MusicgenMelodyFeatureExtractor:
        """An extractor from a ``preprocessor_config.json`` mapping; unknown keys raise :class:`ConfigError`."""
        names = {
            "feature_size",
            "sampling_rate",
            "hop_length",
            "chunk_length",
            "n_fft",
            "num_chroma",
            "padding_value",
            "return_attention_mask",
            "stem_indices",
            "padding_side",
        }
        kwargs = {}
        for key, value in data.items():
            if key in names:
                kwargs[key] = value
            elif key == "feature_extractor_type":
                if value != _TYPE_NAME:
                    raise ConfigError(f"{where}: feature_extractor_type is {value!r}, expected {_TYPE_NAME!r}")
            elif key in ("processor_class", "n_samples"):
                # HF drops processor_class, and recomputes n_samples = chunk_length * sampling_rate, ignoring the file.
                continue
            else:
                raise ConfigError(
                    f"{where}: unknown feature extractor field {key!r} (= {value!r}); "
                    "musicgen-jax does not implement it"
                )
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{where}: {str(e).split(': ', 1)[-1]}") from None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> MusicgenMelodyFeatureExtractor:
        """Reads ``path/preprocessor_config.json`` (``path`` a directory, a JSON file or a Hub id), strictly."""
        if not os.path.isfile(path):
            from musicgen_jax import hub

            path = hub.resolve(path)
        file = os.path.join(path, FEATURE_EXTRACTOR_NAME) if os.path.isdir(path) else os.fspath(path)
        return cls.from_json_file(file)

    def to_dict(self) -> dict[str, Any]:
        """The fields HF's ``to_dict`` writes, plus ``num_chroma``.

        Quirk: HF never stores ``num_chroma`` on the instance, so HF's own JSON omits it and a non-default value is
        lost on an HF save/load round trip. We write it (HF reads it back correctly as a constructor argument).
        """
        return {
            "chunk_length": self.chunk_length,
            "feature_extractor_type": _TYPE_NAME,
            "feature_size": self.feature_size,
            "hop_length": self.hop_length,
            "n_fft": self.n_fft,
            "n_samples": self.n_samples,
            "num_chroma": self.num_chroma,
            "padding_side": self.padding_side,
            "padding_value": self.padding_value,
            "return_attention_mask": self.return_attention_mask,
            "sampling_rate": self.sampling_rate,
            "stem_indices": list(self.stem_indices),
        }

    # -- features --------------------------------------------------------------------------------------------------

    def chroma(self, waveforms: Any) -> jax.Array:
        """Max-normalised chroma before the argmax: float32 (B, A) padded audio -> float32 (B, M, C) jax array."""
        if self._device_constants is None:
            self._device_constants = (
                jnp.asarray(self.window),
                jnp.asarray(self.window_norm),
                jnp.asarray(self.chroma_filters),
            )
        window, norm, filters = self._device_constants
        return chroma_features(
            jnp.asarray(waveforms, jnp.float32), window, norm, filters, n_fft=self.n_fft, hop_length=self.hop_length
        )

    def _extract_stems(self, audio: np.ndarray, sampling_rate: int | None) -> np.ndarray:
        """Demucs output (B, stems, channels, A) -> (B, A') mono at our rate (HF `_extract_stem_indices`)."""
        sampling_rate = DEMUCS_DEFAULT_SAMPLING_RATE if sampling_rate is None else sampling_rate
        if max(self.stem_indices) >= audio.shape[1] or min(self.stem_indices) < -audio.shape[1]:
            raise ValueError(f"stem_indices {self.stem_indices} do not fit Demucs output with {audio.shape[1]} stems")
        wav = audio[:, self.stem_indices].sum(axis=1).mean(axis=1)
        return self._resample(wav.astype(np.float32), sampling_rate)

    def _resample(self, audio: np.ndarray, sampling_rate: int) -> np.ndarray:
        if sampling_rate == self.sampling_rate:
            return audio
        return resample(
            audio, sampling_rate, self.sampling_rate, lowpass_filter_width=HF_LOWPASS_FILTER_WIDTH, rolloff=HF_ROLLOFF
        )

    def mono_clips(self, audio: Any, sampling_rate: int | None) -> list[np.ndarray]:
        """HF's input handling: a list of float32 mono (A_i,) arrays at ``self.sampling_rate``.

        One addition: a :class:`musicgen_jax.audio.Waveform` (what ``audio.load`` returns) is one clip, mono or
        stereo, alone or in a list; it is read as HF reads ``[clip]``, where a plain 2-D array is a batch of mono clips.
        """

        def clip(x: Waveform) -> np.ndarray:  # -> a plain float32 (channels, A) array; 1-D is one channel
            x = np.asarray(x, np.float32)
            if x.ndim == 1:
                return x[None]
            if x.ndim != 2 or x.shape[0] > 32:
                raise ValueError(
                    f"a Waveform is one clip, (samples,) or (channels, samples) with at most 32 channels; got shape "
                    f"{x.shape} (transpose a (samples, channels) array; pass a batch as a list of Waveforms)"
                )
            return x

        if isinstance(audio, Waveform) and audio.ndim <= 2:
            audio = [audio]
        if isinstance(audio, (list, tuple)) and any(isinstance(x, Waveform) for x in audio):
            audio = [clip(x) if isinstance(x, Waveform) else x for x in audio]
        if _is_array(audio) and np.ndim(audio) == 4:
            _warn_once("`audio` is a 4-dimensional array and has thus been recognized as the output of `Demucs`.")
            items = list(self._extract_stems(np.asarray(audio), sampling_rate))
        else:
            resample_to = sampling_rate is not None and sampling_rate != self.sampling_rate
            if _is_array(audio):
                # Quirk (HF): any array with more than one dimension is a batch; a single stereo clip must be given
                # as (1, channels, A) or [clip], since a (2, A) array is two mono clips.
                batched = np.ndim(audio) > 1
                audio = np.asarray(audio, np.float32)
                if resample_to:
                    audio = self._resample(audio, sampling_rate)
            elif isinstance(audio, (list, tuple)):
                if len(audio) == 0:
                    raise ValueError("no audio given (an empty list)")
                batched = _is_array(audio[0]) or isinstance(audio[0], (list, tuple))
                if batched:
                    audio = [np.asarray(x, np.float32) for x in audio]
                    if resample_to:
                        audio = [self._resample(x, sampling_rate) for x in audio]
                else:
                    audio = np.asarray(audio, np.float32)
                    if resample_to:
                        audio = self._resample(audio, sampling_rate)
            else:
                raise TypeError(f"audio must be an array or a list of arrays, got {type(audio).__name__}")
            items = list(audio) if batched else [audio]
        if items[0].ndim == 2:
            if any(x.ndim != 2 for x in items):
                raise ValueError("a batch mixes stereo (channels, samples) and mono items; give them all one shape")
            channels = sorted({x.shape[0] for x in items if x.shape[0] > 1})
            if channels:  # a (1, A) item is mono already: its mean is itself, bit for bit
                _warn_once(
                    f"melody `audio` with {' or '.join(map(str, channels))} channels was mixed to mono (channels "
                    "averaged, as HF does) before computing chroma"
                )
            items = [x.mean(axis=0) for x in items]
        for x in items:
            if x.ndim != 1:
                raise ValueError(f"each audio item must be (samples,) or (channels, samples), got shape {x.shape}")
        return items

    def _pad(self, items, padding, max_length, truncation, pad_to_multiple_of, return_attention_mask, masks=None):
        """HF ``SequenceFeatureExtractor.pad`` along the first axis of items (A_i, ...) -> (B, A, ...) and an int32
        (B, A) mask or None. ``masks``: the items' own (A_i,) masks, truncated and padded with 0 in place of ones.

        The batch is float32 for float64 (or float32) items, as HF's, so our calls keep float32 (B, A) audio.
        """
        try:
            strategy = _PADDING[getattr(padding, "value", padding)]
        except (KeyError, TypeError):
            raise ValueError(
                f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}"
            ) from None
        if truncation:
            limit = _round_up(max_length, pad_to_multiple_of)
            items = [x[:limit] for x in items]
            masks = None if masks is None else [m[:limit] for m in masks]
        lengths = [len(x) for x in items]
        if strategy == "do_not_pad":
            padded = lengths
        else:
            target = max(lengths) if strategy == "longest" else max_length
            target = _round_up(target, pad_to_multiple_of)
            padded = [max(n, target) for n in lengths]  # HF leaves an item longer than the target as it is
        if len(set(padded)) > 1:
            # HF cannot stack such a batch either (it fails converting the ragged list to a tensor).
            raise ValueError(
                f"audio of lengths {lengths} cannot be batched with padding={padding!r}, "
                f"truncation={truncation!r}; use padding=True or truncation=True"
            )
        if len({x.shape[1:] for x in items}) > 1:
            raise ValueError(f"items of shapes {sorted({x.shape for x in items})} differ beyond their length")
        batch = np.full((len(items), padded[0], *items[0].shape[1:]), self.padding_value, _hf_dtype(items))
        mask = np.zeros(batch.shape[:2], np.int32 if masks is None else _hf_dtype(masks))
        for i, x in enumerate(items):
            start = batch.shape[1] - len(x) if self.padding_side == "left" else 0
            batch[i, start : start + len(x)] = x
            mask[i, start : start + len(x)] = 1 if masks is None else masks[i]
        return batch, (mask if return_attention_mask else None)

    def pad(
        self,
        processed_features: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        padding: bool | str = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """HF's ``SequenceFeatureExtractor.pad``: pads a batch of raw audio (e.g. in a DataLoader's collate_fn).

        Args:
            processed_features: a list of mappings (one per example) or a mapping of lists or arrays, with the items
                under ``model_input_names[0]`` (``"input_features"``, as HF): (A_i,) or (A_i, features) arrays (HF's own
                call pads (A_i, 1); with this extractor's ``feature_size`` > 1 HF's pad fails on (A_i,) items that
                need padding, which we pad). An ``attention_mask`` (A_i,) per item is truncated and padded along (with
                0); any other key is stacked as it is.
            padding: True / "longest", "max_length" (needs ``max_length``) or False / "do_not_pad".
            max_length: the length to pad to with "max_length" and to truncate to.
            truncation: cut items to ``max_length`` (rounded up to ``pad_to_multiple_of``); needs ``max_length``.
            pad_to_multiple_of: round the padded length up to this multiple.
            return_attention_mask: add an int32 (B, A) mask; None means ``self.return_attention_mask``.
            return_tensors: None, "np", "pt" or "jax": numpy arrays in every case.

        Returns:
            :class:`BatchFeature` with ``input_features`` (B, A) or (B, A, features) (float32 for float items, else
            their dtype), ``attention_mask`` (B, A) when asked for or given, and the other keys stacked.
        """
        return_tensors = getattr(return_tensors, "value", return_tensors)
        if return_tensors not in _RETURN_TENSORS:
            raise ValueError(f"return_tensors must be one of {list(_RETURN_TENSORS)}, got {return_tensors!r}")
        name = self.model_input_names[0]
        if isinstance(processed_features, (list, tuple)) and processed_features:
            if not all(isinstance(example, Mapping) for example in processed_features):
                raise TypeError("pad takes a list of mappings (one per example) or a mapping of lists")
            keys = list(processed_features[0].keys())
            for i, example in enumerate(processed_features):
                if set(example.keys()) != set(keys):
                    raise ValueError(f"example {i} has the keys {sorted(example.keys())}, example 0 {sorted(keys)}")
            processed_features = {key: [example[key] for example in processed_features] for key in keys}
        if not isinstance(processed_features, Mapping):
            raise TypeError(
                f"pad takes a mapping of lists (or a list of mappings) holding {name!r}, "
                f"got {type(processed_features).__name__}"
            )
        if name not in processed_features:
            raise ValueError(f"pad needs the key {name!r} (the audio to pad); got the keys {list(processed_features)}")
        want_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        features = dict(processed_features)
        if len(features[name]) == 0:  # HF hands an empty batch back as it came
            return BatchFeature({**features, **({"attention_mask": []} if want_mask else {})})
        batch_size = len(features[name])
        if any(len(value) != batch_size for value in features.values()):
            sizes = {k: len(v) for k, v in features.items()}
            raise ValueError(f"the keys hold different batch sizes: {sizes}")
        strategy = _PADDING.get(getattr(padding, "value", padding)) if isinstance(padding, (bool, str)) else None
        if max_length is None and (strategy == "max_length" or truncation):
            raise ValueError("padding='max_length' and truncation=True need max_length")
        items = [np.asarray(x) for x in features.pop(name)]
        if any(x.ndim == 0 for x in items):
            raise ValueError(f"{name!r} must hold a batch: a list of (L_i,) arrays or a (B, L) array, not one clip")
        masks = features.pop("attention_mask", None)
        if masks is not None:
            masks = [np.asarray(m) for m in masks]
            if any(m.shape != x.shape[:1] for m, x in zip(masks, items, strict=True)):
                raise ValueError("each attention_mask must be (L_i,), as long as its item")
        padded, mask = self._pad(
            items, padding, max_length, truncation, pad_to_multiple_of, want_mask or masks is not None, masks
        )
        outputs = BatchFeature({name: padded})
        for key, value in features.items():
            try:
                stacked = np.asarray([np.asarray(v) for v in value])
            except ValueError:
                raise ValueError(f"{key!r} holds items of different shapes; only {name!r} is padded") from None
            outputs[key] = stacked.astype(np.float32) if stacked.dtype == np.float64 else stacked
        if mask is not None:
            outputs["attention_mask"] = mask
        return outputs

    def __call__(
        self,
        audio: Any,
        truncation: bool = True,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        padding: bool | str = True,
        max_length: int | None = None,
        sampling_rate: int | None = None,
    ) -> BatchFeature:
        """One-hot chroma features of one clip or a batch, as HF's ``MusicgenMelodyFeatureExtractor.__call__``.

        Args:
            audio: a mono clip (A,) or list of floats; a batch as a list of (A_i,) or (channels, A_i) arrays, a 2-D
                (B, A) array (rows are mono clips, as in HF) or a 3-D (B, channels, A) array (channels are averaged);
                or Demucs output (B, stems, channels, A), from which ``stem_indices`` are summed and channels averaged.
                Arrays may be numpy, JAX or anything with ``__array__`` (e.g. CPU torch tensors). A
                :class:`musicgen_jax.audio.Waveform` (from ``audio.load``) is one clip, (A,) or (channels, A), and a
                list of them a batch.
            truncation: cut clips longer than ``max_length`` (default ``chunk_length`` seconds).
            pad_to_multiple_of: round the padded (and truncation) length up to this multiple.
            return_tensors: None or "np" (numpy arrays) or "jax" (jax arrays). HF's None gives torch tensors; we give
                numpy.
            return_attention_mask: add "attention_mask"; None means ``self.return_attention_mask`` (see the quirk).
            padding: True / "longest", "max_length" or False / "do_not_pad".
            max_length: samples to truncate to / pad to with "max_length"; None or 0 means ``n_samples``.
            sampling_rate: rate of ``audio``; resampled to ``self.sampling_rate`` when different (for Demucs output
                it is Demucs's rate, 44000 when None, as in HF).

        Returns:
            :class:`BatchFeature` {"input_features": float32 (B, M, C) one-hot, M = 1 + max(A, n_fft) // hop_length}
            and, when asked for, "attention_mask": int32, (B, ceil(A / hop_length)) when ``return_attention_mask=True``
            is passed.
        """
        if sampling_rate is None:
            warnings.warn(
                f"It is strongly recommended to pass the `sampling_rate` argument to `{type(self).__name__}()`. "
                "Failing to do so can result in silent errors that might be hard to debug.",
                UserWarning,
                stacklevel=2,
            )
        return_tensors = getattr(return_tensors, "value", return_tensors)
        if return_tensors not in (None, "np", "jax"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported (None, 'np' or 'jax')")
        items = self.mono_clips(audio, sampling_rate)
        want_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        waveforms, mask = self._pad(
            items, padding, max_length if max_length else self.n_samples, truncation, pad_to_multiple_of, want_mask
        )
        features = one_hot_argmax(self.chroma(waveforms))
        outputs = {"input_features": features}
        if mask is not None:
            # Quirk (HF): the mask is brought to frame rate only when return_attention_mask=True is passed to the
            # call; when it comes from the instance default it stays at sample rate. And [::hop] gives
            # ceil(A / hop) entries while the STFT has 1 + A // hop frames.
            outputs["attention_mask"] = mask[:, :: self.hop_length] if return_attention_mask else mask
        if return_tensors == "jax":
            return BatchFeature({k: jnp.asarray(v) for k, v in outputs.items()})
        return BatchFeature({k: np.asarray(v) for k, v in outputs.items()})
