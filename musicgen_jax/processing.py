"""The processors: the T5 tokenizer and a feature extractor behind one call, as HF's.

``MusicgenMelodyProcessor`` (chroma features) for MusicGen Melody, ``MusicgenProcessor`` (EnCodec's
``input_values``) for plain MusicGen, and :func:`auto_processor`, which picks one for a checkpoint.
"""

from __future__ import annotations

import os

import numpy as np

from musicgen_jax import hub
from musicgen_jax.batch_feature import BatchEncoding, BatchFeature
from musicgen_jax.chroma import MusicgenMelodyFeatureExtractor
from musicgen_jax.config import ConfigError, read_json
from musicgen_jax.encodec_features import EncodecFeatureExtractor, is_array, load_feature_extractor_dict
from musicgen_jax.melody import as_batch
from musicgen_jax.tokenizer import T5TextTokenizer

# Which keyword goes where (HF's ProcessorMixin routes them the same way; `padding` goes to both).
_TEXT_KWARGS = {"padding", "truncation", "max_length", "add_special_tokens"}
_AUDIO_KWARGS = {"sampling_rate", "padding", "pad_to_multiple_of", "return_attention_mask"}


class ProcessorBase:
    """The T5 tokenizer and a feature extractor (the family's ``feature_extractor_class``) behind one object."""

    feature_extractor_class: type

    def __init__(self, feature_extractor, tokenizer: T5TextTokenizer):
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike):
        """Reads the feature extractor config (as the family's extractor finds it) and the tokenizer files
        (``tokenizer.json`` or ``spiece.model``) of a directory or Hub id."""
        path = hub.resolve(path)
        return cls(cls.feature_extractor_class.from_pretrained(path), T5TextTokenizer.from_pretrained(path))


class MusicgenMelodyProcessor(ProcessorBase):
    """``processor(text=[...], audio=..., sampling_rate=..., padding=True, return_tensors="np")`` gives the inputs
    of :meth:`MusicgenMelodyForConditionalGeneration.generate`: ``input_ids``/``attention_mask`` from the tokenizer
    and ``input_features`` ``(batch, frames, 12)`` from the feature extractor; with audio also ``melody``, the
    mono waveform at the extractor's rate (32 kHz), whole, from which long-form generation reads each window's chroma.

    ``return_tensors`` may be ``"np"``, ``"pt"`` or ``"jax"``: numpy arrays are returned in every case.
    ``max_length`` and ``truncation`` apply to the text (audio is truncated to the extractor's ``chunk_length``).
    """

    feature_extractor_class = MusicgenMelodyFeatureExtractor

    def __call__(self, audio=None, text=None, return_tensors: str | None = "np", **kwargs) -> BatchFeature:
        if audio is None and text is None:
            raise ValueError("pass text=, audio=, or both")
        unknown = set(kwargs) - _TEXT_KWARGS - _AUDIO_KWARGS
        if unknown:
            raise ValueError(f"MusicgenMelodyProcessor got unsupported argument(s): {', '.join(sorted(unknown))}")
        if return_tensors not in (None, "np", "pt", "jax"):
            raise ValueError(f"return_tensors must be 'np', 'pt' or 'jax', got {return_tensors!r}")
        # Arrays come back as numpy whatever was asked: "pt" is accepted so that HF code runs unchanged, and every
        # musicgen-jax entry point takes numpy.
        return_tensors = None if return_tensors is None else "np"
        out = BatchFeature()
        if text is not None:
            text_kwargs = {k: v for k, v in kwargs.items() if k in _TEXT_KWARGS}
            out.update(self.tokenizer(text, return_tensors=return_tensors, **text_kwargs))
        if audio is not None:
            audio_kwargs = {k: v for k, v in kwargs.items() if k in _AUDIO_KWARGS}
            features = self.feature_extractor(audio, return_tensors="np", **audio_kwargs)
            if text is not None:  # the text's attention mask is what generate needs
                features.pop("attention_mask", None)
            out.update(features)
            # the whole mono waveform at the extractor's rate, untruncated: long-form generation reads each window's
            # chroma from it (a (B, A) array, or a list when the clips differ in length)
            fe = self.feature_extractor
            out["melody"] = as_batch(fe.mono_clips(audio, audio_kwargs.get("sampling_rate")))
        return out

    def get_unconditional_inputs(self, num_samples: int = 1, return_tensors: str = "np") -> BatchEncoding:  # noqa: ARG002
        """HF's null inputs for unconditional generation: empty texts with an all-zero attention mask (int64 (B, W))."""
        inputs = self.tokenizer([""] * num_samples, return_tensors="np")
        inputs["attention_mask"] = np.zeros_like(inputs["attention_mask"])
        return inputs

    def batch_decode(self, audio_values, attention_mask=None) -> list[np.ndarray]:
        """Generated audio ``(batch, channels, samples)`` -> a list of arrays, padding removed where a mask says so
        (HF's ``_decode_audio``: the mask is extended with non-padding to the audio's length)."""
        audio = np.asarray(audio_values)
        if attention_mask is None:
            return list(audio)
        mask = np.asarray(attention_mask)
        pad_value = self.feature_extractor.padding_value
        mask = np.pad(mask, ((0, 0), (0, audio.shape[-1] - mask.shape[-1])), constant_values=1 - pad_value)
        return [a[:, m != pad_value] for a, m in zip(audio, mask, strict=True)]


# MusicgenProcessor's routing: HF's ProcessorMixin sends these to EncodecFeatureExtractor (it would also send
# pad_to_multiple_of and return_attention_mask, which that extractor's call does not take: HF fails with a TypeError).
_ENCODEC_AUDIO_KWARGS = {"sampling_rate", "padding", "truncation", "max_length"}


def _is_clip(x) -> bool:
    """HF's ``is_valid_audio``: an array, or a list (tuple) whose first item is a float."""
    return is_array(x) or (isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], float))


def _list_of_clips(audio) -> list:
    """The audio as a list of clips, as HF's ``ProcessorMixin`` hands it to the feature extractor (``fetch_audio`` then
    ``make_list_of_audio``): one clip becomes ``[clip]``, a list of lists of clips is flattened.

    Quirk (HF): so a single numpy clip reaches the extractor inside a list, and is cast to float32 (the extractor alone
    keeps an int16 clip's dtype)."""
    if isinstance(audio, str) or (isinstance(audio, (list, tuple)) and any(isinstance(x, str) for x in audio)):
        raise TypeError(
            "audio must be arrays, not strings: the first positional argument of the processor is audio (as in HF), "
            "so pass prompts as text=; load audio files with musicgen_jax.audio.load(path, sampling_rate=...)"
        )
    if isinstance(audio, (list, tuple)):
        if all(isinstance(x, (list, tuple)) for x in audio) and all(
            not x or all(_is_clip(y) for y in x) for x in audio
        ):
            return [y for x in audio for y in x]
        if audio and all(_is_clip(x) for x in audio):
            return list(audio)
    if _is_clip(audio):
        return [audio]
    raise TypeError(
        "audio must be one clip (an array, or a list of floats) or a list of clips, "
        f"got {type(audio).__name__}" + (f" of {type(audio[0]).__name__}" if isinstance(audio, (list, tuple)) else "")
    )


class MusicgenProcessor(ProcessorBase):
    """HF's ``MusicgenProcessor``: ``processor(text=[...], audio=..., sampling_rate=..., padding=True)`` gives the
    inputs of plain MusicGen's ``generate``: ``input_ids``/``attention_mask`` int64 (B, W) from the T5 tokenizer, and
    for an audio prompt ``padding_mask`` int32 (B, A) and ``input_values`` float32 (B, R, A) from
    :class:`EncodecFeatureExtractor`.

    As in HF, the first positional argument is audio (``processor(audio_array)``), the second text. ``padding``,
    ``truncation`` and ``max_length`` go to both the tokenizer and the feature extractor, ``sampling_rate`` to the
    feature extractor (which refuses audio at another rate; it does not resample), ``add_special_tokens`` to the
    tokenizer; any other argument is refused (HF ignores unknown ones with a warning).

    ``return_tensors`` may be ``"np"`` (the default), ``"pt"`` or ``"jax"``: numpy arrays are returned in every case.
    With None the tokenizer gives lists and ``input_values`` is a list of (R, A_i) arrays, as in HF.
    """

    feature_extractor_class = EncodecFeatureExtractor

    def __call__(self, audio=None, text=None, return_tensors: str | None = "np", **kwargs) -> BatchFeature:
        if audio is None and text is None:
            raise ValueError("pass text=, audio=, or both")
        unknown = set(kwargs) - _TEXT_KWARGS - _ENCODEC_AUDIO_KWARGS
        if unknown:
            raise ValueError(f"MusicgenProcessor got unsupported argument(s): {', '.join(sorted(unknown))}")
        return_tensors = getattr(return_tensors, "value", return_tensors)
        if return_tensors not in (None, "np", "pt", "jax"):
            raise ValueError(f"return_tensors must be 'np', 'pt' or 'jax', got {return_tensors!r}")
        return_tensors = None if return_tensors is None else "np"  # numpy whatever was asked (see the class doc)
        out = BatchFeature()
        if text is not None:
            text_kwargs = {k: v for k, v in kwargs.items() if k in _TEXT_KWARGS}
            out.update(self.tokenizer(text, return_tensors=return_tensors, **text_kwargs))
        if audio is not None:
            audio_kwargs = {k: v for k, v in kwargs.items() if k in _ENCODEC_AUDIO_KWARGS}
            out.update(self.feature_extractor(_list_of_clips(audio), return_tensors=return_tensors, **audio_kwargs))
        return out

    def batch_decode(self, audio_values=None, *, padding_mask=None, audio=None) -> list[np.ndarray]:
        """Generated audio ``(B, R, A)`` (or ``audio=``) -> a list of B (R, A_i) arrays, padding removed where
        ``padding_mask`` (B, A') says so (HF's ``_decode_audio``).

        As HF: the mask is extended to the audio's length with non-padding, and samples whose mask equals the feature
        extractor's ``padding_value`` are dropped. Unlike HF the arrays keep the audio's dtype (HF returns float64,
        through ``tolist``) and stereo audio works (HF's boolean index fails on more than one channel).
        """
        audio_values = audio if audio_values is None else audio_values
        if audio_values is None:
            raise ValueError(
                "batch_decode decodes generated audio (batch, channels, samples); musicgen-jax's tokenizer does not "
                "decode token ids"
            )
        values = np.asarray(audio_values)
        if values.ndim != 3:
            raise ValueError(f"audio_values must be (batch, channels, samples), got shape {values.shape}")
        if padding_mask is None:
            return list(values)
        mask = np.asarray(padding_mask)
        if mask.ndim != 2 or mask.shape[0] != values.shape[0] or mask.shape[1] > values.shape[-1]:
            raise ValueError(
                f"padding_mask must be (batch, samples) with at most the audio's {values.shape[-1]} samples and its "
                f"batch of {values.shape[0]}, got shape {mask.shape}"
            )
        # Quirk (HF): the mask is compared with the *audio* padding value, and extended with 1 - that value.
        pad_value = self.feature_extractor.padding_value
        mask = np.pad(mask, ((0, 0), (0, values.shape[-1] - mask.shape[-1])), constant_values=1 - pad_value)
        return [a[:, m != pad_value] for a, m in zip(values, mask, strict=True)]


# Which processor a checkpoint wants: its feature extractor's type, else the processor class saved with it, else the
# model type of its config.json.
_BY_FEATURE_EXTRACTOR = {
    "EncodecFeatureExtractor": (MusicgenProcessor, EncodecFeatureExtractor),
    "MusicgenMelodyFeatureExtractor": (MusicgenMelodyProcessor, MusicgenMelodyFeatureExtractor),
}
_BY_PROCESSOR_CLASS = {
    "MusicgenProcessor": "EncodecFeatureExtractor",
    "MusicgenMelodyProcessor": "MusicgenMelodyFeatureExtractor",
}
_BY_MODEL_TYPE = {"musicgen": "EncodecFeatureExtractor", "musicgen_melody": "MusicgenMelodyFeatureExtractor"}


def auto_processor(path: str | os.PathLike) -> MusicgenProcessor | MusicgenMelodyProcessor:
    """The processor of a checkpoint (directory or Hub id): :class:`MusicgenProcessor` for plain MusicGen,
    :class:`MusicgenMelodyProcessor` for MusicGen Melody.

    The feature extractor config is found as HF finds it (``processor_config.json``'s nested ``feature_extractor``,
    else ``preprocessor_config.json``) and its ``feature_extractor_type`` decides (HF writes ``EncodecFeatureExtractor``
    for MusicGen, ``MusicgenMelodyFeatureExtractor`` for Melody); without one, the saved ``processor_class``, then
    ``config.json``'s ``model_type``. Raises :class:`ConfigError` (one line) for any other type.
    """
    path = hub.resolve(path)
    data, file = load_feature_extractor_dict(path)
    kind = data.get("feature_extractor_type")
    if kind is None:
        processor_file = os.path.join(path, "processor_config.json")
        config_file = os.path.join(path, "config.json")
        processor_class = data.get("processor_class")
        if processor_class is None and os.path.isfile(processor_file):
            processor_class = read_json(processor_file).get("processor_class")
        kind = _BY_PROCESSOR_CLASS.get(processor_class)
        if kind is None and os.path.isfile(config_file):
            kind = _BY_MODEL_TYPE.get(read_json(config_file).get("model_type"))
        if kind is None:
            raise ConfigError(
                f"{file}: no feature_extractor_type, and neither a processor_class nor config.json's model_type says "
                "whether this is a MusicGen or a MusicGen Melody checkpoint"
            )
    if kind not in _BY_FEATURE_EXTRACTOR:
        raise ConfigError(
            f"{file}: feature_extractor_type is {kind!r}; musicgen-jax has processors for "
            f"{' and '.join(map(repr, _BY_FEATURE_EXTRACTOR))}"
        )
    processor_cls, extractor_cls = _BY_FEATURE_EXTRACTOR[kind]
    return processor_cls(extractor_cls.from_dict(data, where=file), T5TextTokenizer.from_pretrained(path))


class AutoProcessor:
    """HF's ``AutoProcessor``: ``AutoProcessor.from_pretrained(path)`` gives the checkpoint's processor,
    :class:`MusicgenProcessor` (plain MusicGen) or :class:`MusicgenMelodyProcessor` (see :func:`auto_processor`)."""

    @staticmethod
    def from_pretrained(path: str | os.PathLike) -> MusicgenProcessor | MusicgenMelodyProcessor:
        return auto_processor(path)
