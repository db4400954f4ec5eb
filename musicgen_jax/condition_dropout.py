"""Condition dropout as audiocraft trains MusicGen: host-side draws, a function of ``(seed, step, row)`` alone.

Three independent dropouts, each per row of the global batch (audiocraft's ``config/conditioner/*.yaml``):

- **joint** (``classifier_free_guidance.training_dropout``, audiocraft's ``ClassifierFreeGuidanceDropout``): every
  condition of the row is dropped; the loss then conditions it exactly as generation's unconditional row (zero T5
  states and mask, the null chroma; :func:`musicgen_jax.loss.drop_conditions`), which is the branch classifier-free
  guidance contrasts against.
- **melody** (``attribute_dropout.wav.self_wav``, melody models only): the row's chroma becomes the null chroma.
- **words** (``conditioners.description.t5.word_dropout``): each word of the caption is dropped independently
  before tokenization, as audiocraft's ``T5Conditioner.tokenize`` (``audiocraft/modules/conditioners.py``)::

      words = [word for word in entry.split(" ") if random.random() >= self.word_dropout]

  and, as there, a caption left empty gets a zero attention mask (audiocraft's ``mask[empty_idx, :] = 0``).

The draws of a row come from ``numpy.random.default_rng((seed, STREAM, step, row))``: the same on every process
and after a resume, whatever the process count (``row`` is the row's position in the global batch).
"""

from __future__ import annotations

import dataclasses

import numpy as np

_STREAM = 0xC0D1  # keeps these draws apart from the batch order's and the crops' (musicgen_jax/data.py)

# audiocraft's defaults (config/conditioner/chroma2music.yaml and text2music.yaml).
MELODY_DEFAULTS = {"cfg": 0.2, "melody": 0.5, "word": 0.2}
TEXT_DEFAULTS = {"cfg": 0.3, "melody": 0.0, "word": 0.3}


@dataclasses.dataclass(frozen=True)
class ConditionDropout:
    """Dropout probabilities in [0, 1]: ``cfg`` (all conditions of a row), ``melody`` (its chroma), ``word`` (each
    word of its caption). All zero: no dropout."""

    cfg: float = 0.0
    melody: float = 0.0
    word: float = 0.0

    def __post_init__(self):
        for name in ("cfg", "melody", "word"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} dropout must lie in [0, 1], got {value}")

    @classmethod
    def audiocraft_defaults(cls, melody_model: bool) -> ConditionDropout:
        """audiocraft's recipe: melody models 0.2 joint, 0.5 melody, 0.2 words; text-only models 0.3 joint, 0.3
        words."""
        return cls(**(MELODY_DEFAULTS if melody_model else TEXT_DEFAULTS))

    @property
    def active(self) -> bool:
        return self.cfg > 0 or self.melody > 0 or self.word > 0


@dataclasses.dataclass(frozen=True)
class Draws:
    """One batch's draws: ``uncond`` bool ``(B,)`` (joint dropout), ``no_melody`` bool ``(B,)`` (melody dropout)
    and the captions after word dropout (``""`` where every word was dropped)."""

    uncond: np.ndarray
    no_melody: np.ndarray
    captions: list[str]


def drop_words(caption: str, p: float, rng: np.random.Generator) -> str:
    """audiocraft's T5 word dropout: each word (split on single spaces) kept when a uniform draw is ``>= p``."""
    return " ".join(word for word in caption.split(" ") if rng.random() >= p)


def draw(dropout: ConditionDropout, seed: int, step: int, rows, captions) -> Draws:
    """The draws of global-batch rows ``rows`` (ints) at ``step`` for their ``captions``.

    Each row's generator gives, in this order, the joint draw, the melody draw, then one draw per word (only when
    ``dropout.word > 0``): the three dropouts are independent, and turning one off leaves the others' draws as
    they were.
    """
    uncond, no_melody, out = [], [], []
    for row, caption in zip(rows, captions, strict=True):
        rng = np.random.default_rng((seed, _STREAM, step, int(row)))
        joint, melody = rng.random(2)
        uncond.append(joint < dropout.cfg)
        no_melody.append(melody < dropout.melody)
        out.append(drop_words(caption, dropout.word, rng) if dropout.word > 0 else caption)
    return Draws(np.asarray(uncond, bool), np.asarray(no_melody, bool), out)


def null_chroma_frames(frames: int, num_chroma: int) -> np.ndarray:
    """HF's null melody with ``frames`` frames, as generation's unconditional row (one-hot at bin 0): ``(M, C)``.

    audiocraft's ``AttributeDropout`` nullifies the ``self_wav`` attribute (``nullify_wav``: a zero-length wave),
    whose ChromaStemConditioner embedding its length mask then zeroes; HF's port, and our generation, stand for an
    absent melody with this one-hot chroma instead, so melody dropout trains the input generation feeds."""
    null = np.zeros((frames, num_chroma), np.float32)
    null[:, 0] = 1
    return null
