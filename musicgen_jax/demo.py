"""A small random-weight checkpoint for a first offline run: the whole pipeline works end to end, and the audio it
makes is noise (the weights are random). Written in the converted format, with a tokenizer and preprocessor config.
"""

from __future__ import annotations

import os
import tempfile

from musicgen_jax import checkpoint, parameters
from musicgen_jax.chroma import MusicgenMelodyFeatureExtractor
from musicgen_jax.config import (
    DecoderConfig,
    EncodecConfig,
    GenerationConfig,
    MusicgenConfig,
    MusicgenMelodyConfig,
    T5Config,
)

_CAPTIONS = """80s pop track with bassy drums and synth
90s rock song with loud guitars and heavy drums
a calm piano melody with soft strings
an upbeat electronic dance track with heavy bass
lofi hip hop beats to relax and study to
acoustic guitar ballad with warm vocals
epic orchestral score with brass and choir
jazz trio playing a slow blues in the night
ambient drone with evolving textures
funky bass line with tight drums and horns
happy ukulele tune for a summer day
dark techno with pounding kick drum""".split("\n")

TOKENIZER_VOCAB = 128


def tiny_config() -> MusicgenMelodyConfig:
    """The 32 kHz codec layout (hop 640, 50 frames/s, 4 codebooks of 2048) with small widths everywhere."""
    return MusicgenMelodyConfig(
        text_encoder=T5Config(vocab_size=TOKENIZER_VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
        audio_encoder=EncodecConfig(
            sampling_rate=32000,
            upsampling_ratios=(8, 5, 4, 4),
            target_bandwidths=(2.2,),
            codebook_size=2048,
            hidden_size=128,
            num_filters=8,
            num_lstm_layers=2,
            use_causal_conv=False,
            use_conv_shortcut=False,
        ),
        decoder=DecoderConfig(
            vocab_size=2048,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=128,
            num_codebooks=4,
            pad_token_id=2048,
            bos_token_id=2048,
        ),
    )


def train_t5_spiece(lines: list[str], folder: str, vocab_size: int, model_type: str = "unigram", **extra) -> str:
    """Trains a sentencepiece model in T5's id layout (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, no ``<s>``) on
    ``lines``; writes ``folder/spiece.model`` and returns ``folder``."""
    import sentencepiece

    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            f.write("\n".join(lines))
        sentencepiece.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=os.path.join(tmp, "spiece"),
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            pad_piece="<pad>",
            eos_piece="</s>",
            unk_piece="<unk>",
            minloglevel=2,
            **extra,
        )
        os.replace(os.path.join(tmp, "spiece.model"), os.path.join(folder, "spiece.model"))
    return folder


def write_tokenizer(dst: str) -> None:
    """A tiny T5 tokenizer trained on built-in captions, with HF's ``tokenizer_config.json``."""
    train_t5_spiece(_CAPTIONS * 4, dst, TOKENIZER_VOCAB, hard_vocab_limit=False)
    with open(os.path.join(dst, "tokenizer_config.json"), "w") as f:
        f.write('{"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512}')


def random_params(config: MusicgenMelodyConfig, seed: int = 0) -> dict:
    """Random float32 numpy parameters in the checkpoint layout: :func:`musicgen_jax.parameters.random`."""
    return parameters.random(config, seed)


def tiny_plain_config() -> MusicgenConfig:
    """:func:`tiny_config`'s sizes for plain MusicGen (text through cross-attention, no chroma)."""
    melody = tiny_config()
    return MusicgenConfig(text_encoder=melody.text_encoder, audio_encoder=melody.audio_encoder, decoder=melody.decoder)


def write_random_checkpoint(
    dst: str | os.PathLike, seed: int = 0, overwrite: bool = False, family: str = "musicgen_melody"
) -> str:
    """Writes a random-weight MusicGen Melody (``family="musicgen_melody"``) or plain MusicGen (``"musicgen"``) in
    the converted format to ``dst``; it generates noise, for smoke tests.

    ``dst`` is written as :func:`musicgen_jax.checkpoint.save` writes (atomically; ``overwrite`` as there)."""
    if family not in ("musicgen_melody", "musicgen"):
        raise ValueError(f"family must be 'musicgen_melody' or 'musicgen', got {family!r}")
    config = tiny_config() if family == "musicgen_melody" else tiny_plain_config()
    generation = GenerationConfig(
        do_sample=True,
        guidance_scale=3.0,
        top_k=250,
        max_length=256,
        pad_token_id=2048,
        bos_token_id=2048,
        decoder_start_token_id=2048,
    )
    checkpoint.check_destination(dst, overwrite)  # before any work
    with tempfile.TemporaryDirectory() as side_files:  # the tokenizer and preprocessor files travel into the version
        write_tokenizer(side_files)
        if family == "musicgen_melody":
            MusicgenMelodyFeatureExtractor().save_pretrained(side_files)
        else:
            from musicgen_jax.encodec_features import EncodecFeatureExtractor

            EncodecFeatureExtractor(sampling_rate=config.sampling_rate).save_pretrained(side_files)
        weights = random_params(config, seed)
        return checkpoint.save(
            dst, weights, config.to_hf(), generation.to_hf(), copy_from=side_files, overwrite=overwrite
        )
