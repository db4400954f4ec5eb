"""musicgen-jax: MusicGen Melody (HF transformers' ``musicgen_melody``) in JAX/Flax.

``from musicgen_jax import MusicgenMelodyForConditionalGeneration`` is the front door; it mirrors HF's class.
Importing this package never imports torch or transformers.
"""

from musicgen_jax.config import (
    ConfigError,
    DecoderConfig,
    EncodecConfig,
    GenerationConfig,
    MusicgenMelodyConfig,
    T5Config,
)
from musicgen_jax.modeling import MusicgenMelodyForConditionalGeneration, MusicgenMelodyOutput

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DecoderConfig",
    "EncodecConfig",
    "GenerationConfig",
    "MusicgenMelodyConfig",
    "MusicgenMelodyForConditionalGeneration",
    "MusicgenMelodyOutput",
    "T5Config",
]
