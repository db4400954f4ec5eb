"""What the decoder is conditioned on, as HF builds it: for MusicGen Melody a prefix of projected chroma frames
followed by projected T5 text states; for plain MusicGen the projected text states its layers cross-attend to.
:func:`forward_conditions` and :func:`generation_conditions` return a :class:`~musicgen_jax.decoder.Conditions` for
either family.

Einsum letters: the package legend (``musicgen_jax/__init__.py``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from musicgen_jax.config import MusicgenMelodyConfig
from musicgen_jax.decoder import Conditions
from musicgen_jax.layers import einsum


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


def project_text(params: dict, config: MusicgenMelodyConfig, text_BWE, attention_mask_BW=None):
    """T5 states -> decoder width (when sizes differ), then zeroed at padded positions, as HF's forward does."""
    if config.has_text_projection:
        p = params["text_proj"]
        text_BWE = einsum("BWE,ED->BWD", text_BWE, p["kernel"], matmul_precision=config.matmul_precision)
        text_BWE = text_BWE + p["bias"].astype(text_BWE.dtype)
    if attention_mask_BW is not None:
        text_BWE = text_BWE * attention_mask_BW[..., None].astype(text_BWE.dtype)
    return text_BWE


def project_chroma(params: dict, config: MusicgenMelodyConfig, chroma_BMC):
    """Chroma frames -> decoder width, tiled up to ``chroma_length`` when shorter, truncated when longer."""
    x = chroma_BMC
    if config.has_chroma_projection:
        p = params["chroma_proj"]
        x = einsum("BMC,CD->BMD", x, p["kernel"], matmul_precision=config.matmul_precision) + p["bias"].astype(x.dtype)
    frames = x.shape[1]
    if frames < config.chroma_length:
        # HF repeats the whole sequence ceil(chroma_length / frames) times, then truncates.
        x = jnp.tile(x, (1, math.ceil(config.chroma_length / frames), 1))
    return x[:, : config.chroma_length]


def forward_prefix(params: dict, config: MusicgenMelodyConfig, text_BWE, attention_mask_BW, chroma_BMC):
    """The prefix HF's ``forward`` builds from T5 states (or None) and chroma features (or None): ``(B, P, D)``.

    As ``MusicgenMelodyForConditionalGeneration.forward``: text is projected and zeroed at padded positions; with
    text but no chroma, the null chroma (one frame, one-hot at bin 0) is used; chroma frames go in front.
    """
    text = None if text_BWE is None else project_text(params, config, text_BWE, attention_mask_BW)
    if text is not None and chroma_BMC is None:
        chroma_BMC = null_chroma(config, text.shape[0], text.dtype)
    if chroma_BMC is None:
        return text
    chroma = project_chroma(params, config, chroma_BMC.astype(jnp.float32 if text is None else text.dtype))
    return chroma if text is None else jnp.concatenate([chroma, text], axis=1)


def generation_prefix(params: dict, config: MusicgenMelodyConfig, text_BWE, attention_mask_BW, chroma_BMC, use_cfg):
    """The prefix HF's ``generate`` builds (``_prepare_encoder_hidden_states_kwargs_for_generation``): ``(B', P, D)``.

    With classifier-free guidance (``use_cfg``) the batch is doubled to ``[cond; uncond]``: the unconditional text
    is zeros (the mask is zeroed too), the unconditional chroma is the null chroma with as many frames as the given
    chroma (one-hot at bin 0). Without chroma, the null chroma is used for the conditional half as well.
    """
    dtype = text_BWE.dtype
    text = project_text(params, config, text_BWE)
    mask = attention_mask_BW.astype(dtype)
    if use_cfg:
        text = jnp.concatenate([text, jnp.zeros_like(text)], axis=0)
        mask = jnp.concatenate([mask, jnp.zeros_like(mask)], axis=0)
    text = text * mask[..., None]
    B = text_BWE.shape[0]
    if chroma_BMC is None:
        chroma = null_chroma(config, B, dtype)
        null = chroma
    else:
        chroma = chroma_BMC.astype(dtype)
        null = jnp.zeros_like(chroma).at[:, :, 0].set(1)
    if use_cfg:
        chroma = jnp.concatenate([chroma, null], axis=0)
    return jnp.concatenate([project_chroma(params, config, chroma), text], axis=1)


def forward_conditions(params: dict, config, text_BWE, attention_mask_BW, chroma_BMC) -> Conditions:
    """The conditions of HF's ``forward``. Melody: :func:`forward_prefix`. Plain MusicGen
    (``MusicgenForConditionalGeneration.forward``): the T5 states projected (``enc_to_dec_proj``) and zeroed where
    the mask is 0; the mask is the cross-attention's (HF's ``encoder_attention_mask``)."""
    if not config.decoder.cross_attention:
        return Conditions(prefix_BPD=forward_prefix(params, config, text_BWE, attention_mask_BW, chroma_BMC))
    if chroma_BMC is not None:
        raise ValueError("plain MusicGen takes no melody (input_features); use a MusicGen Melody checkpoint")
    if text_BWE is None:
        raise ValueError("plain MusicGen's forward needs the text (input_ids or encoder_outputs)")
    cross = project_text(params, config, text_BWE, attention_mask_BW)
    return Conditions(cross_BWD=cross, cross_mask_BW=attention_mask_BW)


def generation_conditions(params: dict, config, text_BWE, attention_mask_BW, chroma_BMC, use_cfg) -> Conditions:
    """The conditions HF's ``generate`` builds (``B' = 2B`` rows ``[cond; uncond]`` under guidance). Melody:
    :func:`generation_prefix`. Plain MusicGen (``_prepare_text_encoder_kwargs_for_generation``, then ``forward``):
    zero T5 states and a zero mask for the unconditional half, then projected and zeroed by the mask."""
    if not config.decoder.cross_attention:
        prefix = generation_prefix(params, config, text_BWE, attention_mask_BW, chroma_BMC, use_cfg)
        return Conditions(prefix_BPD=prefix)
    if chroma_BMC is not None:
        raise ValueError("plain MusicGen takes no melody (input_features); use a MusicGen Melody checkpoint")
    mask = attention_mask_BW
    if use_cfg:
        text_BWE = jnp.concatenate([text_BWE, jnp.zeros_like(text_BWE)], axis=0)
        mask = jnp.concatenate([mask, jnp.zeros_like(mask)], axis=0)
    return Conditions(cross_BWD=project_text(params, config, text_BWE, mask), cross_mask_BW=mask)
