"""EnCodec's input preparation: HF's ``EncodecFeatureExtractor`` (``transformers/models/encodec/
feature_extraction_encodec.py``) in numpy, without torch. Plain MusicGen checkpoints use it for audio prompts.

There is no signal processing, only batching, and we do what HF does:

    raw_audio --[one clip or a list of clips; float32, as HF casts]--> list of (A_i,) mono or (2, A_i) stereo
              --[chunk_length_s + overlap set: a target length of whole chunk strides]-->
              --[truncate to max_length / pad to the longest or max_length, on padding_side]-->
              {"padding_mask": int32 (B, A), "input_values": (B, R, A)}

Where HF does something surprising we do it too, and say so in a comment marked "Quirk".

Shape letters: the package legend (``musicgen_jax/__init__.py``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from musicgen_jax.audio import Waveform
from musicgen_jax.batch_feature import BatchFeature
from musicgen_jax.config import ConfigError, read_json
from musicgen_jax.feature_files import FEATURE_EXTRACTOR_NAME, FeatureExtractorFiles

PROCESSOR_NAME = "processor_config.json"
_TYPE_NAME = "EncodecFeatureExtractor"
_FIELDS = ("feature_size", "sampling_rate", "padding_value", "padding_side", "return_attention_mask")
_CHUNK_FIELDS = ("chunk_length_s", "overlap")

_PADDING = {
    True: "longest",
    False: "do_not_pad",
    "longest": "longest",
    "max_length": "max_length",
    "do_not_pad": "do_not_pad",
}
_RETURN_TENSORS = (None, "np", "pt", "jax")


def load_feature_extractor_dict(directory: str | os.PathLike) -> tuple[dict, str]:
    """The feature extractor's fields in a checkpoint directory, found as HF finds them, and the file they came from.

    HF (``FeatureExtractionMixin.get_feature_extractor_dict``) prefers the ``feature_extractor`` (or
    ``audio_processor``) object nested in ``processor_config.json``, which transformers 5 ``processor.save_pretrained``
    writes, and else reads ``preprocessor_config.json``, which Hub checkpoints and ``feature_extractor.save_pretrained``
    write. Raises :class:`ConfigError` (one line, naming the directory) when neither holds one.
    """
    directory = os.fspath(directory)
    processor_file = os.path.join(directory, PROCESSOR_NAME)
    if os.path.isfile(processor_file):
        data = read_json(processor_file)
        nested = data.get("feature_extractor", data.get("audio_processor"))
        if nested is not None:
            if not isinstance(nested, dict):
                raise ConfigError(f"{processor_file}: 'feature_extractor' must be a JSON object")
            return nested, processor_file
    file = os.path.join(directory, FEATURE_EXTRACTOR_NAME)
    if not os.path.isfile(file):
        raise ConfigError(
            f"{directory}: no {FEATURE_EXTRACTOR_NAME} (nor a {PROCESSOR_NAME} holding a feature_extractor) found"
        )
    return read_json(file), file


def is_array(x: Any) -> bool:
    """numpy, JAX, torch (CPU) or any array with ``__array__``; not a numpy scalar."""
    return isinstance(x, np.ndarray) or (
        hasattr(x, "__array__") and hasattr(x, "shape") and not isinstance(x, np.generic)
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class EncodecFeatureExtractor(FeatureExtractorFiles):
    """Raw audio -> EnCodec's ``input_values`` and ``padding_mask``, as HF's ``EncodecFeatureExtractor``.

    The constructor takes HF's arguments with HF's defaults (``padding_side`` and ``return_attention_mask`` as HF's
    base class has them); unlike HF it rejects any other, and ``feature_size`` must be 1 (mono) or 2 (stereo), the
    channel counts EnCodec has. ``return_attention_mask`` is kept for the file round trip only: as in HF, the call
    returns a ``padding_mask`` whenever it pads, whatever its value.
    """

    model_input_names = ["input_values", "padding_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 24000,
        padding_value: float = 0.0,
        chunk_length_s: float | None = None,
        overlap: float | None = None,
        padding_side: str = "right",
        return_attention_mask: bool = True,
    ):
        self.feature_size = feature_size
        self.sampling_rate = sampling_rate
        self.padding_value = padding_value
        self.padding_side = padding_side
        self.return_attention_mask = return_attention_mask
        self.chunk_length_s = chunk_length_s
        self.overlap = overlap
        self._validate(_TYPE_NAME)

    # HF: properties, so that changing chunk_length_s or overlap on the instance takes effect.
    @property
    def chunk_length(self) -> int | None:
        """Samples per chunk, ``int(chunk_length_s * sampling_rate)``, or None."""
        return None if self.chunk_length_s is None else int(self.chunk_length_s * self.sampling_rate)

    @property
    def chunk_stride(self) -> int | None:
        """Samples between chunk starts, ``max(1, int((1 - overlap) * chunk_length))``, or None."""
        if self.chunk_length_s is None or self.overlap is None:
            return None
        return max(1, int((1.0 - self.overlap) * self.chunk_length))

    # -- configuration -------------------------------------------------------------------------------------------------

    def _validate(self, where: str) -> None:
        if self.feature_size not in (1, 2) or isinstance(self.feature_size, bool):
            raise ConfigError(f"{where}: feature_size must be 1 (mono) or 2 (stereo), got {self.feature_size!r}")
        rate = self.sampling_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ConfigError(f"{where}: sampling_rate must be a positive integer, got {rate!r}")
        if not _is_number(self.padding_value):
            raise ConfigError(f"{where}: padding_value must be a number, got {self.padding_value!r}")
        if self.padding_side not in ("left", "right"):
            raise ConfigError(f"{where}: padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if not isinstance(self.return_attention_mask, bool):
            raise ConfigError(
                f"{where}: return_attention_mask must be true or false, got {self.return_attention_mask!r}"
            )
        if self.chunk_length_s is not None and not (_is_number(self.chunk_length_s) and self.chunk_length_s > 0):
            raise ConfigError(f"{where}: chunk_length_s must be null or a positive number, got {self.chunk_length_s!r}")
        if self.overlap is not None and not (_is_number(self.overlap) and 0 <= self.overlap < 1):
            raise ConfigError(f"{where}: overlap must be null or a number in [0, 1), got {self.overlap!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = _TYPE_NAME) -> EncodecFeatureExtractor:
        """An extractor from a ``preprocessor_config.json`` mapping; unknown keys raise :class:`ConfigError`."""
        kwargs = {}
        for key, value in data.items():
            if key in _FIELDS or key in _CHUNK_FIELDS:
                kwargs[key] = value
            elif key == "feature_extractor_type":
                if value != _TYPE_NAME:
                    raise ConfigError(f"{where}: feature_extractor_type is {value!r}, expected {_TYPE_NAME!r}")
            elif key == "processor_class":  # HF drops it too
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
    def from_pretrained(cls, path: str | os.PathLike) -> EncodecFeatureExtractor:
        """Reads a checkpoint's feature extractor config strictly (``path`` a directory, a JSON file or a Hub id).

        In a directory the config is found as HF finds it (:func:`load_feature_extractor_dict`).
        """
        if os.path.isfile(path):
            return cls.from_json_file(path)
        from musicgen_jax import hub

        data, file = load_feature_extractor_dict(hub.resolve(path))
        return cls.from_dict(data, where=file)

    def to_dict(self) -> dict[str, Any]:
        """HF's ``to_dict``: exactly the fields HF writes, in HF's order."""
        return {
            "feature_size": self.feature_size,
            "sampling_rate": self.sampling_rate,
            "padding_value": self.padding_value,
            "padding_side": self.padding_side,
            "return_attention_mask": self.return_attention_mask,
            "chunk_length_s": self.chunk_length_s,
            "overlap": self.overlap,
            "feature_extractor_type": _TYPE_NAME,
        }

    # -- features --------------------------------------------------------------------------------------------------

    def _clips(self, raw_audio: Any) -> list[np.ndarray]:
        """HF's input reading and checks: a list of (A_i,) mono or (2, A_i) stereo arrays.

        One addition: a :class:`musicgen_jax.audio.Waveform` (what ``audio.load`` returns, (1, A) for a mono file) is
        one clip, alone or in a list, and a one-channel Waveform is a mono clip; HF refuses a (1, A) array for mono.
        """
        if isinstance(raw_audio, Waveform):
            raw_audio = [raw_audio]
        if isinstance(raw_audio, (list, tuple)) and len(raw_audio) == 0:
            raise ValueError("raw_audio is an empty list; pass a clip or a list of clips")
        # HF: a list (or tuple) of arrays or lists is a batch; anything else is one clip, even a 2-D array.
        batched = isinstance(raw_audio, (list, tuple)) and (
            is_array(raw_audio[0]) or isinstance(raw_audio[0], (list, tuple))
        )
        if batched:
            clips = []
            for x in raw_audio:
                one_channel_wave = isinstance(x, Waveform) and x.ndim == 2 and x.shape[0] == 1
                x = np.asarray(x, np.float32)
                clips.append(x[0] if one_channel_wave and self.feature_size == 1 else x)
        elif isinstance(raw_audio, np.ndarray):
            # Quirk (HF): one numpy clip keeps its dtype (int16, float16, ...) unless it is float64.
            clips = [raw_audio.astype(np.float32) if raw_audio.dtype == np.float64 else raw_audio]
        else:
            try:
                clips = [np.asarray(raw_audio, np.float32)]
            except (TypeError, ValueError):
                raise TypeError(
                    f"raw_audio must be an array, a list of numbers or a list of clips, got {type(raw_audio).__name__}"
                ) from None
        for i, x in enumerate(clips):
            which = f"raw_audio[{i}]" if batched else "raw_audio"
            if x.ndim == 0 or x.ndim > 2:
                raise ValueError(f"{which} has shape {x.shape}; a clip is (samples,) or (channels, samples)")
            if self.feature_size == 1 and x.ndim != 1:
                raise ValueError(
                    f"{which} has shape {x.shape}: this feature extractor is mono (feature_size=1) and takes "
                    "(samples,) clips (a batch is a list of them)"
                )
            if self.feature_size == 2 and (x.ndim != 2 or x.shape[0] != 2):
                raise ValueError(
                    f"{which} has shape {x.shape}: this feature extractor is stereo (feature_size=2) and takes "
                    "(2, samples) clips, channels first"
                )
        return clips

    def __call__(
        self,
        raw_audio: Any,
        padding: bool | str | None = None,
        truncation: bool | None = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        sampling_rate: int | None = None,
    ) -> BatchFeature:
        """EnCodec's inputs for one clip or a batch, as HF's ``EncodecFeatureExtractor.__call__``.

        Args:
            raw_audio: one clip or a list (tuple) of clips. A clip is (A,) for mono (``feature_size=1``) or (2, A)
                channels first for stereo, an array (numpy, JAX, CPU torch) or a list of numbers. As in HF, only a
                list is a batch: a 2-D array is one clip. A :class:`musicgen_jax.audio.Waveform` is one clip.
            padding: None (the default) is True; True / "longest" pads to the longest clip, "max_length" to
                ``max_length``, False / "do_not_pad" not at all. A clip longer than the target is left as it is.
            truncation: cut clips to ``max_length``; cannot be combined with ``padding`` other than None (HF's rule).
            max_length: the length for "max_length" padding and truncation (ignored by "longest" padding).
            return_tensors: None gives ``input_values`` as a list of (R, A_i) arrays, as HF; "np", "pt" and "jax" give
                one numpy (B, R, A) array (numpy in every case, as everywhere in musicgen-jax).
            sampling_rate: the rate of ``raw_audio``; it must equal ``self.sampling_rate`` (HF does not resample).

        With ``chunk_length_s`` and ``overlap`` set and no ``max_length``, HF's chunk alignment applies: padding goes
        to ``(ceil(longest / stride) - 1) * stride + chunk_length`` samples, truncation to
        ``(floor(shortest / stride) - 1) * stride + chunk_length``.

        Returns:
            :class:`BatchFeature` {"padding_mask": int32 (B, A), 1 on samples and 0 on padding (absent when
            ``padding=False``), "input_values": (B, R, A), float32 (a single numpy clip keeps its dtype unless it is
            float64, as in HF)}.
        """
        if sampling_rate is not None:
            if sampling_rate != self.sampling_rate:
                raise ValueError(
                    f"sampling_rate={sampling_rate!r}, but this feature extractor takes {self.sampling_rate} Hz audio; "
                    f"resample it first (musicgen_jax.audio.load(path, sampling_rate={self.sampling_rate}))"
                )
        else:
            warnings.warn(
                f"It is strongly recommended to pass the `sampling_rate` argument to `{type(self).__name__}()`. "
                "Failing to do so can result in silent errors that might be hard to debug.",
                UserWarning,
                stacklevel=2,
            )
        return_tensors = getattr(return_tensors, "value", return_tensors)  # HF's TensorType enum
        if return_tensors not in _RETURN_TENSORS:
            raise ValueError(f"return_tensors must be one of {list(_RETURN_TENSORS)}, got {return_tensors!r}")
        padding = getattr(padding, "value", padding)  # HF's PaddingStrategy enum
        if padding is not None and (not isinstance(padding, (bool, str)) or padding not in _PADDING):
            raise ValueError(
                f"padding must be None, True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}"
            )
        if truncation not in (None, True, False):
            raise ValueError(f"truncation must be True or False, got {truncation!r}")
        # Quirk (HF): "do_not_pad" is a truthy string, so it counts as padding here, and below it still asks for a
        # padding_mask (all ones).
        if padding and truncation:
            raise ValueError(
                f"padding={padding!r} and truncation=True cannot be combined (HF's rule); leave padding unset to pad "
                "the truncated clips to the longest, or pass padding=False"
            )
        if padding is None:
            padding = True
        clips = self._clips(raw_audio)
        lengths = [x.shape[-1] for x in clips]

        pad = True
        if self.chunk_stride is not None and self.chunk_length is not None and max_length is None:
            stride, chunk = self.chunk_stride, self.chunk_length
            if truncation:
                max_length = (math.floor(min(lengths) / stride) - 1) * stride + chunk
            elif padding:
                max_length = (math.ceil(max(lengths) / stride) - 1) * stride + chunk
                padding = "max_length"
            else:
                pad = False  # HF skips its pad() altogether
        strategy = _PADDING[padding]
        if pad:
            if strategy == "max_length" and max_length is None:
                raise ValueError("padding='max_length' needs max_length")
            if truncation:
                if max_length is None:
                    raise ValueError("truncation=True needs max_length")
                clips = [x[..., :max_length] for x in clips]
            if strategy != "do_not_pad":
                target = max(x.shape[-1] for x in clips) if strategy == "longest" else max_length
                clips = [self._pad(x, target) for x in clips]
        masks = None
        if pad and padding:  # HF: pad(return_attention_mask=padding); "do_not_pad" included
            masks = [self._mask(n, x.shape[-1]) for n, x in zip(lengths, clips, strict=True)]
        # (A,) mono -> (1, A): input_values are always channels first.
        values = [x[None] if x.ndim == 1 else x for x in clips]

        outputs = BatchFeature()
        if return_tensors is None:
            if masks is not None:
                outputs["padding_mask"] = np.stack(masks) if len({len(m) for m in masks}) == 1 else masks
            outputs["input_values"] = values
            return outputs
        lengths = [x.shape[-1] for x in values]
        if len(set(lengths)) > 1:
            raise ValueError(
                f"raw_audio clips of lengths {lengths} (after padding={padding!r}, truncation={truncation!r}, "
                f"max_length={max_length!r}) cannot be one array; pad them (padding=True) or pass return_tensors=None"
            )
        if masks is not None:
            outputs["padding_mask"] = np.stack(masks)
        outputs["input_values"] = np.stack(values)
        return outputs

    def _pad(self, x: np.ndarray, target: int) -> np.ndarray:
        """(A,) or (R, A) padded with ``padding_value`` on ``padding_side`` to ``target`` samples (never cut)."""
        extra = max(target - x.shape[-1], 0)
        if not extra:
            return x
        widths = [(0, 0)] * (x.ndim - 1) + [(extra, 0) if self.padding_side == "left" else (0, extra)]
        return np.pad(x, widths, constant_values=self.padding_value)

    def _mask(self, length: int, padded: int) -> np.ndarray:
        """int32 (padded,): 1 on the clip's ``min(length, padded)`` samples, 0 on the padding."""
        mask = np.zeros(padded, np.int32)
        kept = min(length, padded)
        if self.padding_side == "left":
            mask[padded - kept :] = 1
        else:
            mask[:kept] = 1
        return mask
