"""musicgen-jax: MusicGen Melody (HF transformers' ``musicgen_melody``) in JAX/Flax.

``from musicgen_jax import MusicgenMelodyForConditionalGeneration`` is the front door; it mirrors HF's class.
Importing this package never imports torch or transformers.

Shape letters, one meaning each in the whole package: every einsum string and every shape-suffixed name (``x_BTD``
is a (batch, target length, model dim) array) uses this legend, and each module's docstring points here.

    B  batch                                    P  conditioning prefix positions
    T  target length (decoder positions)        W  text tokens (T5 positions)
    S  key/source length (attention keys)       M  chroma (melody) frames
    N  heads                                    Q  prompt frames (the code positions a prompt fixes)
    H  head dim                                 E  T5 width (``d_model``)
    D  model dim (``hidden_size``; in ``encodec.py`` the codec's: its embedding and codeword width)
    F  ffn dim                                  C  chroma bins
    K  codebooks (EnCodec's quantizers)         U  T5 relative-position buckets
    V  vocab (EnCodec's codebook size)          G  projections fused in one matmul: q/k/v (3), LSTM gates (4)
    L  layers (transformer or LSTM)             I  input channels of an EnCodec layer (convolution, LSTM, block)
    Z  convolution kernel width (taps)          O  output channels of an EnCodec layer
    A  audio samples (also the n_fft samples of one STFT window)
    R  audio channels (1 mono, 2 stereo)
    Y  frames along time: the STFT's, EnCodec's (at any of its strides), the resampler's strided steps
    X  FFT frequency bins (``n_fft // 2 + 1``)
    J  resampling phases

A digit is a literal size (``bos_BK1``; ``2B``: the [cond; uncond] rows of classifier-free guidance). A reshape that
merges axes (B*T rows, N*H heads side by side) has no letter: such an array goes unsuffixed, its shape in a comment.
"""

from musicgen_jax import cpu_devices  # first: before anything starts JAX's backends

cpu_devices.configure()  # MUSICGEN_JAX_CPU_DEVICES: one JAX CPU device per core (musicgen_jax/cpu_devices.py)

# isort: split
from musicgen_jax.batch_feature import BatchEncoding, BatchFeature
from musicgen_jax.chroma import MusicgenMelodyFeatureExtractor
from musicgen_jax.config import (
    ConfigError,
    DecoderConfig,
    EncodecConfig,
    GenerationConfig,
    MusicgenConfig,
    MusicgenMelodyConfig,
    T5Config,
)
from musicgen_jax.encodec import EncodecModel
from musicgen_jax.encodec_features import EncodecFeatureExtractor
from musicgen_jax.modeling import (
    AudioArray,
    GenerateOutput,
    MusicgenForConditionalGeneration,
    MusicgenMelodyForConditionalGeneration,
    MusicgenMelodyOutput,
)
from musicgen_jax.processing import AutoProcessor, MusicgenMelodyProcessor, MusicgenProcessor
from musicgen_jax.tokenizer import T5TextTokenizer

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
    "EncodecFeatureExtractor",
    "EncodecModel",
    "GenerateOutput",
    "GenerationConfig",
    "MusicgenConfig",
    "MusicgenMelodyConfig",
    "MusicgenMelodyFeatureExtractor",
    "MusicgenMelodyForConditionalGeneration",
    "MusicgenMelodyOutput",
    "MusicgenMelodyProcessor",
    "MusicgenProcessor",
    "T5Config",
    "T5TextTokenizer",
]
