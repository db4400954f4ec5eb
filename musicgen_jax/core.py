"""The functional core: the model's forward pass as pure functions of an explicit parameter tree.

Everything that runs the network goes through here: the front door's ``__call__`` and ``encode_text``, the loss
(:mod:`musicgen_jax.loss`) and, for its conditioning prefix, generation. Data flow: text ids -> T5 states -> with
chroma, the conditioning prefix -> decoder logits over prefix + target positions.
"""

from __future__ import annotations

import jax

from musicgen_jax import conditioning
from musicgen_jax.decoder import Conditions, Decoder, is_scanned
from musicgen_jax.t5 import T5Encoder


def encode_text(
    params: dict,
    config,
    input_ids_BW,
    attention_mask_BW=None,
    *,
    deterministic: bool = True,
    rng: jax.Array | None = None,
) -> jax.Array:
    """T5 ``last_hidden_state`` ``(B, W, E)`` of token ids ``(B, W)`` (not projected). ``rng``: dropout, when not
    ``deterministic``."""
    scanned = is_scanned(params["text_encoder"])  # the stored layout, or one subtree per layer (see t5.py)
    return T5Encoder(config.text_encoder, deterministic=deterministic, scan_layers=scanned).apply(
        {"params": params["text_encoder"]},
        input_ids_BW,
        attention_mask_BW,
        rngs={} if deterministic else {"dropout": rng},
    )


def forward(
    params: dict,
    config,
    input_ids_BKT,
    *,
    text_BWE=None,
    text_mask_BW=None,
    chroma_BMC=None,
    prefix_BPD=None,
    target_mask_BT=None,
    deterministic: bool = True,
    rng: jax.Array | None = None,
    remat: bool = False,
) -> tuple[jax.Array, Conditions]:
    """HF's forward pass, either family: decoder logits ``(B, K, P + T, V)`` and the :class:`Conditions` used.

    MusicGen Melody: the prefix is ``prefix_BPD`` when given, else built as HF's forward builds it from the T5 states
    ``text_BWE`` (zeroed where ``text_mask_BW`` is 0) and the chroma ``chroma_BMC`` (HF's null chroma when only
    text is given). Plain MusicGen: the decoder cross-attends to ``text_BWE`` projected and zeroed where the mask is
    0 (``P = 0``). ``input_ids_BKT`` int ``(B, K, T)``; ``target_mask_BT`` HF's ``decoder_attention_mask``.
    ``rng``: dropout. ``remat``: gradient checkpointing of the decoder layers (:class:`Decoder`), for training.
    """
    if prefix_BPD is not None:
        conditions = Conditions(prefix_BPD=prefix_BPD)
    else:
        conditions = conditioning.forward_conditions(params, config, text_BWE, text_mask_BW, chroma_BMC)
    decoder = Decoder(config.decoder, deterministic, scan_layers=is_scanned(params["decoder"]), remat=remat)
    logits_BKTV, _ = decoder.apply(
        {"params": params["decoder"]},
        input_ids_BKT,
        conditions.prefix_BPD,
        attention_mask_BT=target_mask_BT,
        encoder_BWD=conditions.cross_BWD,
        encoder_mask_BW=conditions.cross_mask_BW,
        rngs={} if deterministic else {"dropout": rng},
    )
    return logits_BKTV, conditions


# Compiled once per config and input shapes (the front door calls these; the loss is jitted by its caller).
encode_text_jit = jax.jit(encode_text, static_argnames=("config", "deterministic"))
forward_jit = jax.jit(forward, static_argnames=("config", "deterministic", "remat"))
generation_prefix_jit = jax.jit(conditioning.generation_prefix, static_argnames=("config", "use_cfg"))
generation_conditions_jit = jax.jit(conditioning.generation_conditions, static_argnames=("config", "use_cfg"))
