"""musicgen-jax: MusicGen Melody (HF transformers' ``musicgen_melody``) in JAX/Flax.

``from musicgen_jax import MusicgenMelodyForConditionalGeneration`` is the front door; it mirrors HF's class.
Importing this package never imports torch or transformers.
"""

from musicgen_jax.batch_feature import BatchEncoding, BatchFeature
from musicgen_jax.chroma import MusicgenMelodyFeatureExtractor
from musicgen_jax.config import (
    ConfigError,
    DecoderConfig,
    EncodecConfig,
    GenerationConfig,
    MusicgenMelodyConfig,
    T5Config,
)
from musicgen_jax.encodec import EncodecModel
from musicgen_jax.modeling import (
    AudioArray,
    GenerateOutput,
    MusicgenMelodyForConditionalGeneration,
    MusicgenMelodyOutput,
)
from musicgen_jax.processing import MusicgenMelodyProcessor
from musicgen_jax.tokenizer import T5TextTokenizer

# HF's generic names, so that HF example code runs with only its import line changed.
AutoProcessor = MusicgenMelodyProcessor
MusicgenForConditionalGeneration = MusicgenMelodyForConditionalGeneration

__version__ = "0.1.0"

__all__ = [
    "AutoProcessor",
    "MusicgenForConditionalGeneration",
    "AudioArray",
    "BatchEncoding",
    "BatchFeature",
    "ConfigError",
    "DecoderConfig",
    "EncodecConfig",
    "EncodecModel",
    "GenerateOutput",
    "GenerationConfig",
    "MusicgenMelodyConfig",
    "MusicgenMelodyFeatureExtractor",
    "MusicgenMelodyForConditionalGeneration",
    "MusicgenMelodyOutput",
    "MusicgenMelodyProcessor",
    "T5Config",
    "T5TextTokenizer",
]
