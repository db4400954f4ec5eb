"""Model sizes, the random checkpoints built from them, and the fixed inputs.

Two families, as in HF transformers. MusicGen Melody (``musicgen_melody``: the text and the chroma as a prefix in
front of the codes): "small" is musicgen-small's decoder with MusicGen's T5-base and 32 kHz EnCodec; "melody" is
musicgen-melody's 1.5B decoder (GPU-sized; only when asked); "tiny" is a smoke test with the same structure. Plain
MusicGen (``musicgen``: the text through cross-attention in every decoder layer, no melody): "musicgen-small" is
musicgen-small itself (the same decoder, T5-base and EnCodec), "musicgen-tiny" its smoke test. A spec's ``family``
says which (absent: melody, so the melody specs, and the checkpoints cached from them, are as before).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from benchmarks.bench import REPO

T5_BASE = dict(
    vocab_size=32128,
    d_model=768,
    d_kv=64,
    d_ff=3072,
    num_layers=12,
    num_heads=12,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="relu",
)
ENCODEC_32KHZ = dict(
    upsampling_ratios=[8, 5, 4, 4],
    hidden_size=128,
    num_filters=64,
    codebook_size=2048,
    codebook_dim=128,
    target_bandwidths=[2.2],
    sampling_rate=32000,
    compress=2,
    num_lstm_layers=2,
    use_causal_conv=False,
    use_conv_shortcut=False,
    norm_type="weight_norm",
    pad_mode="reflect",
    normalize=False,
)
CONFIGS = {
    "tiny": dict(
        text=dict(T5_BASE, vocab_size=512, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
        # The 32 kHz hop (640 samples, 50 frames/s) with narrow layers: 4 codebooks of 64 need 1.2 kbps.
        audio=dict(
            ENCODEC_32KHZ, hidden_size=16, num_filters=4, codebook_size=64, codebook_dim=16, target_bandwidths=[1.2]
        ),
        decoder=dict(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128),
        top=dict(chroma_length=32),
    ),
    "small": dict(
        text=T5_BASE,
        audio=ENCODEC_32KHZ,
        decoder=dict(vocab_size=2048, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096),
        top=dict(chroma_length=235),
    ),
    "melody": dict(
        text=T5_BASE,
        audio=ENCODEC_32KHZ,
        decoder=dict(vocab_size=2048, hidden_size=1536, num_hidden_layers=48, num_attention_heads=24, ffn_dim=6144),
        top=dict(chroma_length=235),
    ),
}
# Plain MusicGen: the same T5, EnCodec and decoder sizes (no chroma); each decoder layer gains a cross-attention.
CONFIGS["musicgen-tiny"] = dict(family="musicgen", **{k: v for k, v in CONFIGS["tiny"].items() if k != "top"})
CONFIGS["musicgen-small"] = dict(family="musicgen", **{k: v for k, v in CONFIGS["small"].items() if k != "top"})
FAMILIES = ("melody", "musicgen")
TOP_K = 250
GUIDANCE = 3.0
# Both frameworks' generate gets exactly these (plus the text, max_new_tokens and a seed).
GENERATE_KWARGS = dict(do_sample=True, guidance_scale=GUIDANCE, top_k=TOP_K, top_p=1.0, temperature=1.0)
# --check-greedy: both frameworks' codes of a greedy generate with the same guidance.
GREEDY_KWARGS = dict(do_sample=False, guidance_scale=GUIDANCE)


def family(spec: dict) -> str:
    """``"melody"`` (HF ``musicgen_melody``) or ``"musicgen"`` (plain MusicGen, HF ``musicgen``)."""
    return spec.get("family", "melody")


def hf_class(spec: dict):
    """The HF (transformers) model class of a spec's family."""
    import transformers

    if family(spec) == "musicgen":
        return transformers.MusicgenForConditionalGeneration
    return transformers.MusicgenMelodyForConditionalGeneration


def jax_class(spec: dict):
    """musicgen-jax's model class of a spec's family (public, from the package's front door)."""
    import musicgen_jax

    if family(spec) == "musicgen":
        return musicgen_jax.MusicgenForConditionalGeneration
    return musicgen_jax.MusicgenMelodyForConditionalGeneration


def hf_config(spec: dict):
    """The HF ``MusicgenMelodyConfig`` (or, plain family, ``MusicgenConfig``) of a spec: 4 codebooks, BOS = pad = the
    decoder's vocab size."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        T5Config,
    )

    dec = dict(spec["decoder"], num_codebooks=4, pad_token_id=spec["decoder"]["vocab_size"])
    dec["bos_token_id"] = dec["pad_token_id"]
    plain = family(spec) == "musicgen"
    return (MusicgenConfig if plain else MusicgenMelodyConfig)(
        text_encoder=T5Config(**spec["text"]).to_dict(),
        audio_encoder=EncodecConfig(**spec["audio"]).to_dict(),
        decoder=(MusicgenDecoderConfig if plain else MusicgenMelodyDecoderConfig)(**dec).to_dict(),
        **spec.get("top", {}),
    )


def build_checkpoint(name: str, cache_dir: str) -> tuple[str, float]:
    """Saves a random HF checkpoint of ``CONFIGS[name]`` (its family's ``...ForConditionalGeneration``) under
    ``cache_dir/name`` once (default init, seed 0; kept while its ``bench-spec.json`` matches); returns (path, seconds
    spent building)."""
    path = os.path.join(cache_dir, name)
    spec = CONFIGS[name]
    marker = os.path.join(path, "bench-spec.json")
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == spec:
                return path, 0.0
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = hf_class(spec)(hf_config(spec)).eval()
    partial = path + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    with open(os.path.join(partial, "bench-spec.json"), "w") as f:
        json.dump(spec, f)
    del model
    shutil.rmtree(path, ignore_errors=True)
    os.replace(partial, path)
    return path, time.perf_counter() - t0


def checkpoint(name: str, cache_dir: str) -> dict:
    """The checkpoint's path, built in a child process when missing (so that the random model's memory does not
    count in this process's RSS), and the seconds until it was ready."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "benchmarks.bench", "--build-only", "--config", name, "--cache-dir", cache_dir]
    subprocess.run(cmd, check=True, cwd=REPO)
    path, _ = build_checkpoint(name, cache_dir)  # cached now: returns at once
    return {"path": path, "ready_s": time.perf_counter() - t0}


def build_converted(name: str, cache_dir: str) -> tuple[str, float]:
    """Saves musicgen-jax's converted (orbax) format of the random checkpoint under ``cache_dir/name-converted``
    once (``from_pretrained`` of the HF checkpoint, float32, then ``save_pretrained``; kept while the marker beside it
    matches the spec); returns (path, seconds spent)."""
    import jax.numpy as jnp

    source, _ = build_checkpoint(name, cache_dir)
    path = os.path.join(cache_dir, name + "-converted")
    marker = path + ".bench-spec.json"
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == CONFIGS[name]:
                return path, 0.0
    t0 = time.perf_counter()
    model = jax_class(CONFIGS[name]).from_pretrained(source, dtype=jnp.float32)
    model.save_pretrained(path, overwrite=True)
    with open(marker, "w") as f:
        json.dump(CONFIGS[name], f)
    return path, time.perf_counter() - t0


def converted(name: str, cache_dir: str) -> dict:
    """The converted checkpoint's path, built in a child process on JAX's CPU backend when missing (so that the HF
    format loader's peak, ~3x the weights, never overlaps HF's resident weights), and the seconds until ready."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "benchmarks.bench", "--build-only", "--jax-weights", "converted", "--config", name]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # host work; leaves an accelerator to the parent
    subprocess.run([*cmd, "--cache-dir", cache_dir], check=True, cwd=REPO, env=env)
    path = os.path.join(cache_dir, name + "-converted")
    return {"path": path, "ready_s": time.perf_counter() - t0}


def text_inputs(batch: int, length: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed padded text batch: row ``i`` holds ``length - 3 * (i % 3)`` tokens, then pad id 0 (mask 0)."""
    ids = (np.arange(batch * length).reshape(batch, length) * 7919 + 3) % (min(vocab, 32000) - 3) + 3
    mask = np.ones((batch, length), np.int64)
    for i in range(batch):
        valid = max(1, length - 3 * (i % 3))
        ids[i, valid:] = 0
        mask[i, valid:] = 0
    return ids.astype(np.int64), mask
