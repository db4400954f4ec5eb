"""The conditioning prefix: projected chroma frames followed by projected T5 text states, as HF builds it.

Einsum letters: B batch, S text length, C chroma bins, F chroma frames, E text model dim, D decoder model dim.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from musicgen_jax.config import MusicgenMelodyConfig


def abstract_params(config: MusicgenMelodyConfig) -> dict:
    """Shapes of the projections HF creates only when sizes differ (``enc_to_dec_proj``, ``audio_enc_to_dec_proj``)."""
    D = config.decoder.hidden_size
    tree = {}
    if config.has_text_projection:
        E = config.text_encoder.d_model
        tree["text_proj"] = {
            "kernel": jax.ShapeDtypeStruct((E, D), jnp.float32),
            "bias": jax.ShapeDtypeStruct((D,), jnp.float32),
        }
    if config.has_chroma_projection:
        C = config.num_chroma
        tree["chroma_proj"] = {
            "kernel": jax.ShapeDtypeStruct((C, D), jnp.float32),
            "bias": jax.ShapeDtypeStruct((D,), jnp.float32),
        }
    return tree


def null_chroma(config: MusicgenMelodyConfig, batch: int, dtype=jnp.float32) -> jax.Array:
    """HF's default melody when text is given without one: a single frame, one-hot at chroma bin 0. ``(B, 1, C)``."""
    return jnp.zeros((batch, 1, config.num_chroma), dtype).at[:, :, 0].set(1)


def project_text(params: dict, config: MusicgenMelodyConfig, text_BSE, attention_mask_BS=None):
    """T5 states -> decoder width (when sizes differ), then zeroed at padded positions, as HF's forward does."""
    if config.has_text_projection:
        p = params["text_proj"]
        text_BSE = jnp.einsum("BSE,ED->BSD", text_BSE, p["kernel"].astype(text_BSE.dtype)) + p["bias"].astype(
            text_BSE.dtype
        )
    if attention_mask_BS is not None:
        text_BSE = text_BSE * attention_mask_BS[..., None].astype(text_BSE.dtype)
    return text_BSE


def project_chroma(params: dict, config: MusicgenMelodyConfig, chroma_BFC):
    """Chroma frames -> decoder width, tiled up to ``chroma_length`` when shorter, truncated when longer."""
    x = chroma_BFC
    if config.has_chroma_projection:
        p = params["chroma_proj"]
        x = jnp.einsum("BFC,CD->BFD", x, p["kernel"].astype(x.dtype)) + p["bias"].astype(x.dtype)
    frames = x.shape[1]
    if frames < config.chroma_length:
        # HF repeats the whole sequence ceil(chroma_length / frames) times, then truncates.
        x = jnp.tile(x, (1, math.ceil(config.chroma_length / frames), 1))
    return x[:, : config.chroma_length]
