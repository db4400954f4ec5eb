"""Tiny random HF checkpoints for parity tests, built with transformers inside the test (no Hub access).

Every builder saves with ``save_pretrained`` into a directory and returns it; our loaders then read those files.
"""

from __future__ import annotations

import json
import os

import numpy as np

TINY_T5 = dict(
    vocab_size=96,  # >= the 80 pieces of save_tiny_tokenizer
    d_model=16,
    d_kv=4,
    d_ff=24,
    num_layers=2,
    num_heads=3,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
)
TINY_ENCODEC = dict(
    hidden_size=8,
    num_filters=4,
    codebook_size=16,
    codebook_dim=8,
    upsampling_ratios=[2, 2],
    num_lstm_layers=1,
    # HF: num_quantizers = 1000 * bandwidth // (frame_rate * log2(codebook_size)); 128 kbps at 8000 frames/s with
    # 16-entry codebooks gives 4, one per decoder codebook, like the 32 kHz model (2.2 kbps, 50 frames/s, 2048).
    target_bandwidths=[128.0],
    sampling_rate=32000,
    use_causal_conv=False,
    use_conv_shortcut=False,
    norm_type="weight_norm",
)
TINY_DECODER = dict(
    vocab_size=16, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, ffn_dim=20, num_codebooks=4
)


def hf_melody_config(text=None, audio=None, decoder=None, **top):
    """A transformers ``MusicgenMelodyConfig`` from tiny defaults, each part overridable by a dict."""
    from transformers import EncodecConfig, MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, T5Config

    dec = {**TINY_DECODER, **(decoder or {})}
    dec.setdefault("pad_token_id", dec["vocab_size"])
    dec.setdefault("bos_token_id", dec["vocab_size"])
    return MusicgenMelodyConfig(
        text_encoder=T5Config(**{**TINY_T5, **(text or {})}).to_dict(),
        audio_encoder=EncodecConfig(**{**TINY_ENCODEC, **(audio or {})}).to_dict(),
        decoder=MusicgenMelodyDecoderConfig(**dec).to_dict(),
        **top,
    )


def save_hf_melody(path, seed: int = 0, max_shard_size=None, safe_serialization: bool = True, **config_parts):
    """Builds a random HF ``MusicgenMelodyForConditionalGeneration``, saves it to ``path``; returns (path, model)."""
    import torch
    from transformers import MusicgenMelodyForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenMelodyForConditionalGeneration(hf_melody_config(**config_parts)).eval()
    # Random init leaves LayerNorm at (1, 0); perturb every parameter so a swapped or ignored tensor shows.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(os.fspath(path), safe_serialization=safe_serialization, **kwargs)
    return os.fspath(path), model


def report(name: str, ours, ref) -> float:
    """Prints and returns the max abs error between two arrays (relative to the reference's scale in the print)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != reference {ref.shape}"
    err = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    print(f"[parity] {name}: max abs err {err:.3e} (ref max abs {scale:.3e}, rel {err / max(scale, 1e-30):.3e})")
    return err


# A small music-caption corpus for training tiny sentencepiece models.
CORPUS = """a calm piano melody with soft strings
an upbeat electronic dance track with heavy bass
lofi hip hop beats to relax and study to
eighties pop song with synthesizers and drums
acoustic guitar ballad with warm vocals
epic orchestral score with brass and choir
jazz trio playing a slow blues in the night
reggae groove with offbeat guitar and organ
ambient drone with evolving textures
rock anthem with distorted guitars and big drums
classical string quartet in a minor key
funky bass line with tight drums and horns
happy ukulele tune for a summer day
dark techno with pounding kick drum
country song with fiddle and banjo
cinematic trailer music with rising tension
bossa nova with nylon guitar and brushes
a sad violin solo over a quiet piano
chiptune melody from an old video game
the quick brown fox jumps over the lazy dog""".split("\n")


def _train(folder, model_type="unigram", **extra):
    from musicgen_jax.demo import train_t5_spiece

    return train_t5_spiece(CORPUS * 3, os.fspath(folder), 80, model_type, **extra)


def _write_config(folder, **config):
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "T5Tokenizer", **config}, f)
    return folder


def save_tiny_tokenizer(folder):
    """A T5 sentencepiece tokenizer (vocab 80, T5's special ids) that ``transformers.AutoTokenizer`` loads."""
    return _write_config(_train(os.fspath(folder)), extra_ids=0)


def save_hf_melody_with_processor(path):
    """A tiny HF MusicGen Melody checkpoint (decoder width 20, 4 heads) with a tokenizer and a preprocessor config,
    as the CLI and the processor read them; returns its folder."""
    from musicgen_jax import MusicgenMelodyFeatureExtractor

    path, _ = save_hf_melody(path, decoder={"hidden_size": 20, "num_attention_heads": 4})
    save_tiny_tokenizer(path)
    MusicgenMelodyFeatureExtractor().save_pretrained(path)
    return path


def hf_generate(hf, **kwargs):
    """HF ``generate``'s audio and the codes it handed to EnCodec ``(B, K, frames)``, captured by wrapping
    ``hf.audio_encoder.decode`` (HF returns no codes). Stereo: left/right codebooks are interleaved back."""
    import torch

    captured = []
    original = hf.audio_encoder.decode

    def spy(codes, *args, **kw):
        captured.append(codes[0].clone().numpy())
        return original(codes, *args, **kw)

    hf.audio_encoder.decode = spy
    try:
        with torch.no_grad():
            audio = hf.generate(
                **{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
            )
    finally:
        hf.audio_encoder.decode = original
    if len(captured) == 2:  # stereo: HF decodes even (left) then odd (right) codebooks
        left, right = captured
        return audio.numpy(), np.stack([left, right], axis=2).reshape(left.shape[0], -1, left.shape[2])
    return audio.numpy(), captured[0]


def hf_musicgen_config(text=None, audio=None, decoder=None):
    """A transformers (plain) ``MusicgenConfig`` from the tiny defaults, each part overridable by a dict."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    dec = {**TINY_DECODER, **(decoder or {})}
    dec.setdefault("pad_token_id", dec["vocab_size"])
    dec.setdefault("bos_token_id", dec["vocab_size"])
    return MusicgenConfig(
        text_encoder=T5Config(**{**TINY_T5, **(text or {})}).to_dict(),
        audio_encoder=EncodecConfig(**{**TINY_ENCODEC, **(audio or {})}).to_dict(),
        decoder=MusicgenDecoderConfig(**dec).to_dict(),
    )


def save_hf_musicgen(path, seed: int = 0, **config_parts):
    """Builds a random HF (plain) ``MusicgenForConditionalGeneration``, saves it to ``path``; returns (path, model)."""
    import torch
    from transformers import MusicgenForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(hf_musicgen_config(**config_parts)).eval()
    with torch.no_grad():  # perturb every parameter so a swapped or ignored tensor shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(os.fspath(path))
    return os.fspath(path), model
