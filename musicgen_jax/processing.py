"""``MusicgenMelodyProcessor``: the T5 tokenizer and the chroma feature extractor behind one call, as HF's."""

from __future__ import annotations

import os

import numpy as np

from musicgen_jax import hub
from musicgen_jax.batch_feature import BatchEncoding, BatchFeature
from musicgen_jax.chroma import MusicgenMelodyFeatureExtractor
from musicgen_jax.tokenizer import T5TextTokenizer

# Which keyword goes where (HF's ProcessorMixin routes them the same way; `padding` goes to both).
_TEXT_KWARGS = {"padding", "truncation", "max_length", "add_special_tokens"}
_AUDIO_KWARGS = {"sampling_rate", "padding", "pad_to_multiple_of", "return_attention_mask"}


class MusicgenMelodyProcessor:
    """``processor(text=[...], audio=..., sampling_rate=..., padding=True, return_tensors="np")`` gives the inputs
    of :meth:`MusicgenMelodyForConditionalGeneration.generate`: ``input_ids``/``attention_mask`` from the tokenizer
    and ``input_features`` ``(batch, frames, 12)`` from the feature extractor.

    ``return_tensors`` may be ``"np"``, ``"pt"`` or ``"jax"``: numpy arrays are returned in every case.
    ``max_length`` and ``truncation`` apply to the text (audio is truncated to the extractor's ``chunk_length``).
    """

    def __init__(self, feature_extractor: MusicgenMelodyFeatureExtractor, tokenizer: T5TextTokenizer):
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> MusicgenMelodyProcessor:
        """Reads ``preprocessor_config.json`` and the tokenizer files (``tokenizer.json`` or ``spiece.model``)."""
        path = hub.resolve(path)
        return cls(MusicgenMelodyFeatureExtractor.from_pretrained(path), T5TextTokenizer.from_pretrained(path))

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
