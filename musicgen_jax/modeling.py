"""The front door: ``MusicgenMelodyForConditionalGeneration``, with HF's names and calling conventions.

This module only wires the network parts together; each part lives in its own file (``decoder.py``, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax import conditioning
from musicgen_jax.config import GenerationConfig, MusicgenMelodyConfig
from musicgen_jax.decoder import Decoder

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve_dtype(dtype: Any):
    """``jnp.float32`` / ``"bfloat16"`` / ... -> a numpy dtype; ``"auto"`` -> None (keep the checkpoint's)."""
    if dtype is None or (isinstance(dtype, str) and dtype == "auto"):
        return None
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported (float32, bfloat16, float16 or 'auto')")
        return np.dtype(_DTYPES[dtype])
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype={dtype!r} is not a dtype") from None
    if resolved not in {np.dtype(d) for d in _DTYPES.values()}:
        raise ValueError(f"dtype={dtype!r} is not supported (float32, bfloat16, float16 or 'auto')")
    return resolved


def cast_params(params, dtype):
    """Floating leaves -> ``dtype`` (None keeps each leaf's dtype), placed on the default device."""

    def cast(x):
        x = np.asarray(x)
        if dtype is not None and jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(dtype)
        return jnp.asarray(x)

    return jax.tree_util.tree_map(cast, params)


@dataclasses.dataclass
class MusicgenMelodyOutput:
    """What ``model(...)`` returns, like HF's ``MusicgenMelodyOutputWithPast``.

    logits: ``(batch * num_codebooks, prefix_len + tgt_len, vocab_size)``.
    encoder_hidden_states: the conditioning prefix ``(batch, prefix_len, hidden_size)`` that was used.
    loss: scalar, when ``labels`` were given.
    """

    logits: jax.Array
    encoder_hidden_states: jax.Array | None = None
    loss: jax.Array | None = None

    def __getitem__(self, key: str):
        return getattr(self, key)


@functools.partial(jax.jit, static_argnames=("config",))
def _decoder_logits(params, config: MusicgenMelodyConfig, input_ids_BKT, prefix_BPD, key_mask_BS):
    logits_BKTV, _ = Decoder(config.decoder).apply(
        {"params": params["decoder"]}, input_ids_BKT, prefix_BPD, key_mask_BS=key_mask_BS
    )
    return logits_BKTV


class MusicgenMelodyForConditionalGeneration:
    """MusicGen Melody in JAX: the parameter tree, the config, and HF-compatible entry points.

    Attributes:
      config: :class:`~musicgen_jax.config.MusicgenMelodyConfig` (frozen; static under jit).
      params: nested dict of jax arrays, laid out as the Flax modules define (see each module's docstring).
      generation_config: defaults for ``generate`` read from ``generation_config.json``.
    """

    def __init__(self, config: MusicgenMelodyConfig, params: dict, generation_config: GenerationConfig | None = None):
        self.config = config
        self.params = params
        self.generation_config = generation_config or GenerationConfig(
            pad_token_id=config.decoder.pad_token_id, bos_token_id=config.decoder.bos_token_id
        )

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def dtype(self):
        return jax.tree_util.tree_leaves(self.params["decoder"])[0].dtype

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, dtype: Any = jnp.float32
    ) -> MusicgenMelodyForConditionalGeneration:
        """Loads a local HF checkpoint directory (``config.json`` + safetensors, sharded or not, or a .bin).

        ``dtype``: ``jnp.float32`` (default), ``jnp.bfloat16``, ``"float32"``/``"bfloat16"``, or ``"auto"`` to keep
        the checkpoint's dtype.
        """
        from convert import convert_checkpoint  # the converter is only needed when loading HF weights

        target = resolve_dtype(dtype)
        path = os.fspath(path)
        config, params = convert_checkpoint(path)
        generation_config = GenerationConfig.from_pretrained(path, config.decoder)
        return cls(config, cast_params(params, target), generation_config)

    def _check_decoder_inputs(self, decoder_input_ids, encoder_hidden_states, decoder_attention_mask):
        cfg = self.config.decoder
        ids = np.asarray(decoder_input_ids)
        if ids.ndim != 2 or ids.shape[0] % cfg.num_codebooks:
            raise ValueError(
                f"decoder_input_ids must have shape (batch * num_codebooks, tgt_len) with num_codebooks="
                f"{cfg.num_codebooks}, got {ids.shape}"
            )
        if ids.size and (ids.min() < 0 or ids.max() > cfg.vocab_size):
            raise ValueError(
                f"decoder_input_ids values must lie in [0, {cfg.vocab_size}], got [{ids.min()}, {ids.max()}]"
            )
        batch = ids.shape[0] // cfg.num_codebooks
        if encoder_hidden_states is not None:
            shape = tuple(encoder_hidden_states.shape)
            if len(shape) != 3 or shape[0] != batch or shape[2] != cfg.hidden_size:
                raise ValueError(
                    f"encoder_hidden_states must have shape (batch={batch}, prefix_len, "
                    f"hidden_size={cfg.hidden_size}), "
                    f"got {shape}"
                )
        if decoder_attention_mask is not None and tuple(np.shape(decoder_attention_mask)) != (batch, ids.shape[1]):
            raise ValueError(
                f"decoder_attention_mask must have shape (batch, tgt_len) = {(batch, ids.shape[1])}, "
                f"got {tuple(np.shape(decoder_attention_mask))}"
            )
        return ids.reshape(batch, cfg.num_codebooks, ids.shape[1]).astype(np.int32)

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        input_features=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_hidden_states=None,
        labels=None,
    ) -> MusicgenMelodyOutput:
        """HF's forward: logits ``(batch * num_codebooks, prefix_len + tgt_len, vocab_size)``.

        ``encoder_hidden_states`` is the already-projected conditioning prefix ``(batch, prefix_len, hidden_size)``,
        as HF's forward accepts it. ``decoder_input_ids`` is ``(batch * num_codebooks, tgt_len)`` int.
        """
        if input_ids is not None or input_features is not None or labels is not None:
            raise NotImplementedError("input_ids / input_features / labels in the forward pass are not implemented yet")
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required")
        ids_BKT = self._check_decoder_inputs(decoder_input_ids, encoder_hidden_states, decoder_attention_mask)
        prefix = None if encoder_hidden_states is None else jnp.asarray(encoder_hidden_states, self.dtype)
        key_mask = None
        if decoder_attention_mask is not None:
            prefix_len = 0 if prefix is None else prefix.shape[1]
            key_mask = jnp.concatenate(
                [jnp.ones((ids_BKT.shape[0], prefix_len), bool), jnp.asarray(decoder_attention_mask).astype(bool)],
                axis=1,
            )
        logits_BKTV = _decoder_logits(self.params, self.config, jnp.asarray(ids_BKT), prefix, key_mask)
        logits = logits_BKTV.reshape(-1, *logits_BKTV.shape[2:])
        return MusicgenMelodyOutput(logits=logits, encoder_hidden_states=prefix)


__all__ = ["MusicgenMelodyForConditionalGeneration", "MusicgenMelodyOutput", "conditioning"]
