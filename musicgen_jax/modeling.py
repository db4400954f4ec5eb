"""The front door: ``MusicgenMelodyForConditionalGeneration``, with HF's names and calling conventions.

This module only wires the network parts together; each part lives in its own file (``decoder.py``, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax import checkpoint, conditioning, encodec, hub, sampling, sharding, t5
from musicgen_jax import decoder as decoder_module
from musicgen_jax.config import GenerationConfig, MusicgenMelodyConfig
from musicgen_jax.decoder import Decoder
from musicgen_jax.encodec import EncodecModel
from musicgen_jax.t5 import T5Encoder

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
def _encode_text(params, config: MusicgenMelodyConfig, input_ids_BS, attention_mask_BS):
    return T5Encoder(config.text_encoder).apply({"params": params["text_encoder"]}, input_ids_BS, attention_mask_BS)


@functools.partial(jax.jit, static_argnames=("config",))
def _forward_logits(
    params, config: MusicgenMelodyConfig, input_ids_BKT, text_BSE, text_mask_BS, chroma_BFC, prefix_BPD, target_mask_BT
):
    if prefix_BPD is None:
        prefix_BPD = conditioning.forward_prefix(params, config, text_BSE, text_mask_BS, chroma_BFC)
    decoder = Decoder(config.decoder, scan_layers=decoder_module.is_scanned(params["decoder"]))
    logits_BKTV, _ = decoder.apply(
        {"params": params["decoder"]}, input_ids_BKT, prefix_BPD, attention_mask_BT=target_mask_BT
    )
    return logits_BKTV, prefix_BPD


class MusicgenMelodyForConditionalGeneration:
    """MusicGen Melody in JAX: the parameter tree, the config, and HF-compatible entry points.

    Attributes:
      config: :class:`~musicgen_jax.config.MusicgenMelodyConfig` (frozen; static under jit).
      params: nested dict of jax arrays, laid out as the Flax modules define (see each module's docstring):
        ``text_encoder``, ``audio_encoder``, ``decoder`` and the projections ``text_proj`` / ``chroma_proj``. The
        decoder's layers are unrolled (``layers_0`` ...) or scanned (one stacked ``layers``), as loaded
        (``scan_layers``); every entry point accepts either.
      generation_config: defaults for :meth:`generate`, read from ``generation_config.json``.
    """

    def __init__(self, config: MusicgenMelodyConfig, params: dict, generation_config: GenerationConfig | None = None):
        self.config = config
        self.params = params
        self.generation_config = generation_config or GenerationConfig(
            pad_token_id=config.decoder.pad_token_id, bos_token_id=config.decoder.bos_token_id
        )
        self.source_dir: str | None = None  # where tokenizer/preprocessor files come from when saving

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def dtype(self):
        return jax.tree_util.tree_leaves(self.params["decoder"])[0].dtype

    @property
    def audio_encoder(self) -> EncodecModel:
        """The EnCodec codec (``encode(audio)`` -> codes, ``decode(codes)`` -> audio), sharing this model's params."""
        return EncodecModel(self.config.audio_encoder, self.params["audio_encoder"])

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, dtype: Any = jnp.float32, mesh=None, scan_layers: bool = False
    ) -> MusicgenMelodyForConditionalGeneration:
        """Loads a checkpoint: a local HF directory (``config.json`` + safetensors, sharded or not, or a .bin), a
        Hugging Face Hub id such as ``"facebook/musicgen-melody"``, or a directory written by :meth:`save_pretrained`
        / ``musicgen-jax convert`` (orbax; the fastest to load).

        ``dtype``: ``jnp.float32`` (default), ``jnp.bfloat16``, ``"float32"``/``"bfloat16"``, or ``"auto"`` to keep
        the checkpoint's dtype. ``mesh``: a ``jax.sharding.Mesh`` with axes ``("data", "model")`` (see
        :func:`musicgen_jax.sharding.make_mesh`): every parameter is placed by its logical axes; a converted
        checkpoint restores straight into those shardings.

        ``scan_layers``: the decoder's parameter layout (see ``musicgen_jax.decoder``). False (default): one buffer per
        layer, run unrolled; the fastest decoding (XLA:CPU copies a stacked layer's kernels and cache out of the
        stack on every step), at a longer compile. True: the layers stacked and scanned, as checkpoints store them;
        flat compile time, what fine-tuning uses. Both give the same numbers.
        """
        source = hub.resolve(name_or_path, follow=False)
        path = checkpoint.resolve(source)  # a converted directory's current version
        target = resolve_dtype(dtype)
        if checkpoint.is_converted(path):
            config = MusicgenMelodyConfig.from_pretrained(path)
            abstract = abstract_params(config)
            shardings = None if mesh is None else sharding.shardings_for(abstract, mesh)
            params = checkpoint.restore(path, abstract, dtype=target, shardings=shardings)
            if not scan_layers:
                params["decoder"] = decoder_module.unstack_layers(params["decoder"], consume=True)
                if mesh is not None:
                    params = sharding.shard_params(params, mesh)
        else:
            from convert import convert_checkpoint  # the converter is only needed when loading HF weights

            config, params = convert_checkpoint(path)
            if not scan_layers:  # numpy views: each layer is copied to the device once, below
                params["decoder"] = decoder_module.unstack_layers(params["decoder"], consume=True)
            params = cast_params(params, target)
            if mesh is not None:
                params = sharding.shard_params(params, mesh)
        model = cls(config, params, GenerationConfig.from_pretrained(path, config.decoder))
        model.source_dir = source
        return model

    def save_pretrained(self, directory: str | os.PathLike, overwrite: bool = False) -> str:
        """Writes the converted format (orbax parameters + HF json, tokenizer and preprocessor files) to
        ``directory``; :meth:`from_pretrained` reads it back bit for bit.

        The write is atomic (a new version folder, then a pointer switched with ``os.replace``; see
        :mod:`musicgen_jax.checkpoint`): a process killed at any moment leaves the old checkpoint or the new one.
        ``directory`` must be new, empty or a converted checkpoint; ``overwrite=True`` also allows a folder holding
        other files, which are left as they are. Raises :class:`~musicgen_jax.checkpoint.CheckpointError` otherwise.
        """
        params = self.params
        if not decoder_module.is_scanned(params["decoder"]):  # checkpoints store the scanned layout
            params = {**params, "decoder": decoder_module.stack_layers(params["decoder"])}
        return checkpoint.save(
            directory,
            params,
            self.config.to_hf(),
            self.generation_config.to_hf(),
            copy_from=self.source_dir,
            overwrite=overwrite,
        )

    # ----------------------------------------------------------------------------------------------------------
    # Forward pass

    def encode_text(self, input_ids, attention_mask=None) -> jax.Array:
        """T5 ``last_hidden_state`` ``(batch, seq, d_model_text)`` of token ids ``(batch, seq)``, not projected."""
        ids = _as_int_array("input_ids", input_ids, ndim=2)
        vocab = self.config.text_encoder.vocab_size
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"input_ids values must lie in [0, {vocab}), got [{ids.min()}, {ids.max()}]")
        mask = np.ones_like(ids) if attention_mask is None else _as_int_array("attention_mask", attention_mask, ndim=2)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} does not match input_ids shape {ids.shape}")
        return _encode_text(self.params, self.config, jnp.asarray(ids), jnp.asarray(mask))

    def _check_features(self, input_features, batch: int | None):
        feats = np.asarray(input_features, np.float32)
        C = self.config.num_chroma
        if feats.ndim != 3 or feats.shape[2] != C or feats.shape[1] == 0:
            raise ValueError(f"input_features must have shape (batch, frames, num_chroma={C}), got {feats.shape}")
        if batch is not None and feats.shape[0] != batch:
            raise ValueError(f"input_features has batch {feats.shape[0]} but input_ids has batch {batch}")
        return jnp.asarray(feats, self.dtype)

    def _check_decoder_inputs(self, decoder_input_ids, batch: int | None, decoder_attention_mask=None):
        cfg = self.config.decoder
        ids = _as_int_array("decoder_input_ids", decoder_input_ids, ndim=2)
        if ids.shape[0] % cfg.num_codebooks:
            raise ValueError(
                f"decoder_input_ids must have shape (batch * num_codebooks, tgt_len) with num_codebooks="
                f"{cfg.num_codebooks}, got {ids.shape}"
            )
        if ids.size and (ids.min() < 0 or ids.max() > cfg.vocab_size):
            raise ValueError(
                f"decoder_input_ids values must lie in [0, {cfg.vocab_size}], got [{ids.min()}, {ids.max()}]"
            )
        rows = ids.shape[0] // cfg.num_codebooks
        if batch is not None and rows != batch:
            raise ValueError(f"decoder_input_ids holds batch {rows} (rows / num_codebooks) but the inputs have {batch}")
        if decoder_attention_mask is not None and tuple(np.shape(decoder_attention_mask)) != (rows, ids.shape[1]):
            raise ValueError(
                f"decoder_attention_mask must have shape (batch, tgt_len) = {(rows, ids.shape[1])}, "
                f"got {tuple(np.shape(decoder_attention_mask))}"
            )
        return ids.reshape(rows, cfg.num_codebooks, ids.shape[1]).astype(np.int32)

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

        Either ``input_ids`` (+ ``attention_mask``) and/or ``input_features`` ``(batch, frames, num_chroma)``, from
        which the prefix is built as HF does, or ``encoder_hidden_states``: an already-projected prefix
        ``(batch, prefix_len, hidden_size)``. ``decoder_input_ids`` is ``(batch * num_codebooks, tgt_len)`` int.
        """
        if labels is not None:
            from musicgen_jax.training import model_loss  # lazy: keeps optax out of `import musicgen_jax`

            return model_loss(
                self,
                labels=labels,
                input_ids=input_ids,
                attention_mask=attention_mask,
                input_features=input_features,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask,
                encoder_hidden_states=encoder_hidden_states,
            )
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required")
        cfg = self.config
        text = mask = feats = prefix = None
        batch = None
        if encoder_hidden_states is not None:
            prefix = jnp.asarray(encoder_hidden_states, self.dtype)
            if prefix.ndim != 3 or prefix.shape[2] != cfg.decoder.hidden_size:
                raise ValueError(
                    f"encoder_hidden_states must have shape (batch, prefix_len, hidden_size={cfg.decoder.hidden_size}),"
                    f" got {tuple(prefix.shape)}"
                )
            batch = prefix.shape[0]
        else:
            if input_ids is not None:
                text = self.encode_text(input_ids, attention_mask)
                mask = None if attention_mask is None else jnp.asarray(np.asarray(attention_mask))
                batch = text.shape[0]
            if input_features is not None:
                feats = self._check_features(input_features, batch)
                batch = feats.shape[0]
        ids_BKT = self._check_decoder_inputs(decoder_input_ids, batch, decoder_attention_mask)
        key_mask = None if decoder_attention_mask is None else jnp.asarray(np.asarray(decoder_attention_mask))
        logits_BKTV, prefix = _forward_logits(
            self.params, cfg, jnp.asarray(ids_BKT), text, mask, feats, prefix, key_mask
        )
        return MusicgenMelodyOutput(
            logits=logits_BKTV.reshape(-1, *logits_BKTV.shape[2:]), encoder_hidden_states=prefix
        )

    # ----------------------------------------------------------------------------------------------------------
    # Generation

    def generate(
        self,
        input_ids=None,
        attention_mask=None,
        input_features=None,
        decoder_input_ids=None,
        *,
        audio_prompt=None,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        duration: float | None = None,
        do_sample: bool | None = None,
        guidance_scale: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        rng: jax.Array | None = None,
        return_dict_in_generate: bool = False,
        generation_config: GenerationConfig | None = None,
        progress=None,
        **unknown,
    ):
        """Text (and melody) -> audio, as HF's ``generate``; the decode loop is one compiled XLA program.

        Args:
          input_ids, attention_mask: tokenized text ``(batch, seq)`` (from the processor).
          input_features: chroma ``(batch, frames, num_chroma)`` (from the processor's feature extractor).
          decoder_input_ids: audio codes to continue, ``(batch * num_codebooks, frames)`` in HF's layout.
          audio_prompt: a waveform ``(batch, channels, samples)`` at ``sampling_rate`` to continue (encoded with
            EnCodec); exclusive with ``decoder_input_ids``.
          max_new_tokens / max_length / duration: length, in decoder steps, buffer length, or seconds of audio.
          do_sample, guidance_scale, top_k, top_p, temperature: as HF (defaults from ``generation_config.json``).
          seed / rng: an int seed in [0, 2**32) or a JAX key for sampling; the same seed gives the same audio.
          return_dict_in_generate: return :class:`GenerateOutput` (``.sequences`` audio, ``.audio_codes``, and
            ``.stats``: compile seconds, decode steps/s, real-time factor).
          progress: optional ``callback(steps_done, steps_total)``: the loop then runs as compiled chunks of 32 steps
            with one host sync per chunk (for a progress bar), and ``stats`` separate compile from decode time.

        Returns:
          float32 numpy audio ``(batch, channels, samples)`` at ``self.sampling_rate``, or a :class:`GenerateOutput`.
        """
        if unknown:
            raise ValueError(f"generate() got unsupported argument(s): {', '.join(sorted(unknown))}")
        gen = generation_config or self.generation_config
        do_sample = gen.do_sample if do_sample is None else bool(do_sample)
        top_k, top_p, temperature, guidance_scale = _check_sampling(
            do_sample,
            gen.top_k if top_k is None else top_k,
            gen.top_p if top_p is None else top_p,
            gen.temperature if temperature is None else temperature,
            gen.guidance_scale if guidance_scale is None else guidance_scale,
        )
        seed = _check_seed(seed)
        if duration is not None:
            duration = _check_duration(duration)
        max_new_tokens = _check_count(max_new_tokens, "max_new_tokens")
        max_length = _check_count(max_length, "max_length")
        use_cfg = guidance_scale is not None and guidance_scale > 1
        cfg = self.config
        dec = cfg.decoder
        bos = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else gen.bos_token_id
        bos = dec.bos_token_id if bos is None else bos
        pad = dec.pad_token_id if gen.pad_token_id is None else gen.pad_token_id

        # 1. The batch: from the text, the melody, or the audio prompt.
        batch = _batch_of(input_ids, input_features, decoder_input_ids, dec.num_codebooks, audio_prompt)
        feats = None if input_features is None else self._check_features(input_features, batch)

        # 2. Text states. HF never generates without text: with no input_ids it encodes a single BOS token whose
        # attention mask it infers as 0 (BOS == pad), so the text prefix is one all-zero position.
        if input_ids is not None:
            ids = _as_int_array("input_ids", input_ids, ndim=2)
            if attention_mask is None:
                # HF _prepare_attention_mask_for_generation: infer the mask from the decoder's pad id.
                attention_mask = (ids != pad).astype(np.int64) if (ids == pad).any() else np.ones_like(ids)
            text = self.encode_text(ids, attention_mask)
            mask = jnp.asarray(np.asarray(attention_mask))
        else:
            text = jnp.zeros((batch, 1, cfg.text_encoder.d_model), self.dtype)
            mask = jnp.zeros((batch, 1), jnp.int32)
        prefix = _generation_prefix(self.params, cfg, text, mask, feats, use_cfg)

        # 3. Decoder input ids: BOS, prompt codes, or an encoded audio prompt.
        if audio_prompt is not None:
            if decoder_input_ids is not None:
                raise ValueError("pass either audio_prompt or decoder_input_ids, not both")
            codes = self.encode_audio(audio_prompt, name="audio_prompt")
            decoder_input_ids = codes.reshape(-1, codes.shape[2])
        start = np.full((batch * dec.num_codebooks, 1), bos, np.int64)
        if decoder_input_ids is None:
            prompt = start
        else:
            prompt = self._check_decoder_inputs(decoder_input_ids, batch).reshape(batch * dec.num_codebooks, -1)
            if (prompt[:, 0] != bos).all():  # HF prepends BOS unless every row already starts with it
                prompt = np.concatenate([start, prompt], axis=1)
        prompt_len = prompt.shape[1]

        # 4. Length, as HF's _prepare_generated_length: max_new_tokens wins, then an explicit max_length, then
        # the generation config's max_length counted from the prompt.
        channel_codebooks = dec.num_codebooks // dec.audio_channels
        # What the length came from, for the message when it does not fit: (argument, value, from the gen config?)
        asked = ("duration", duration, False)
        if duration is not None:
            if max_new_tokens is not None or max_length is not None:
                raise ValueError("pass only one of duration, max_new_tokens, max_length")
            # - 1e-6: duration * frame_rate is 7.000000000000001 for 0.14 s at 50 Hz, which must stay 7 frames
            frames = max(1, math.ceil(duration * cfg.audio_encoder.frame_rate - 1e-6))
            max_new_tokens = frames + channel_codebooks - 1
        elif max_new_tokens is not None:
            asked = ("max_new_tokens", max_new_tokens, False)
        elif max_length is not None:
            asked = ("max_length", max_length, False)
        elif gen.max_new_tokens is not None:
            asked = ("max_new_tokens", gen.max_new_tokens, True)
        else:
            asked = ("max_length", gen.max_length, True)
        if max_new_tokens is None and max_length is None:
            max_new_tokens = gen.max_new_tokens
        if max_new_tokens is not None:
            total = int(max_new_tokens) + prompt_len
        elif max_length is not None:
            total = int(max_length)
        else:
            total = gen.max_length + prompt_len
        if total <= prompt_len:
            raise ValueError(f"nothing to generate: max_length {total} <= decoder prompt length {prompt_len}")
        if total - prompt_len < channel_codebooks:
            raise ValueError(
                f"generating {total - prompt_len} steps yields no audio frame: the delay pattern needs at least "
                f"{channel_codebooks} (num_codebooks per channel)"
            )

        prefix_len = prefix.shape[1]
        if prefix_len + total > dec.max_position_embeddings:
            raise ValueError(
                _length_error(
                    dec.max_position_embeddings,
                    prefix_len - cfg.chroma_length,  # the prefix is [chroma_length chroma frames, text tokens]
                    cfg.chroma_length,
                    prompt_len,
                    total,
                    channel_codebooks,
                    asked,
                    cfg.audio_encoder.frame_rate,
                )
            )

        # 5. The compiled loop.
        fixed, pattern = sampling.build_delay_pattern(
            prompt.reshape(batch, dec.num_codebooks, -1), pad, total, dec.audio_channels
        )
        if rng is None:
            rng = jax.random.PRNGKey(np.random.randint(0, 2**31 - 1) if seed is None else int(seed))
        knobs = sampling.SamplingParams(
            jnp.float32(temperature), jnp.float32(top_p), jnp.float32(guidance_scale if use_cfg else 1.0)
        )
        args = (self.params["decoder"], prefix, jnp.asarray(fixed), jnp.asarray(pattern), rng, knobs)
        # On a mesh the prefill keeps 2B rows: B + 1 rows would not split evenly over the data axis.
        placement = getattr(jax.tree_util.tree_leaves(self.params["decoder"])[0], "sharding", None)
        single_device = placement is None or len(placement.device_set) == 1
        static = dict(
            config=dec,
            max_length=total,
            do_sample=do_sample,
            top_k=top_k if do_sample else 0,
            use_top_p=do_sample and top_p < 1.0,
            use_cfg=use_cfg,
            # generate's unconditional rows are all the same (zero text, null chroma, the same BOS): one prefill row
            shared_uncond=use_cfg and single_device and sampling.uncond_rows_shared(prefix, fixed),
        )
        started = time.perf_counter()
        if progress is None:
            tokens, compile_seconds = sampling.decode(*args, **static), None
        else:
            tokens, compile_seconds = sampling.decode_in_chunks(*args, chunk=32, on_chunk=progress, **static)
        tokens = np.asarray(tokens)
        decode_seconds = time.perf_counter() - started - (compile_seconds or 0.0)
        tokens = sampling.apply_delay_pattern(tokens, pattern)
        codes = sampling.revert_delay_pattern(tokens, pad)

        # 6. Audio: stereo checkpoints decode left (even codebooks) and right (odd) with the mono codec.
        audio = self.decode_audio(codes).view(AudioArray)
        if return_dict_in_generate:
            seconds_of_audio = audio.shape[-1] / self.sampling_rate
            stats = {
                "compile_seconds": compile_seconds,
                "decode_steps": total - prompt_len,
                "decode_steps_per_second": (total - prompt_len) / max(decode_seconds, 1e-9),
                "audio_seconds": seconds_of_audio,
                "wall_seconds": time.perf_counter() - started,
            }
            return GenerateOutput(sequences=audio, audio_codes=codes, stats=stats)
        return audio

    def decode_audio(self, codes_BKF) -> np.ndarray:
        """Codes ``(batch, num_codebooks, frames)`` -> float32 audio ``(batch, audio_channels, samples)``."""
        codes = jnp.asarray(codes_BKF, jnp.int32)
        codec = self.audio_encoder
        if self.config.decoder.audio_channels == 2:
            return np.concatenate(
                [np.asarray(codec.decode(codes[:, 0::2])), np.asarray(codec.decode(codes[:, 1::2]))], 1
            )
        return np.asarray(codec.decode(codes))

    def encode_audio(self, audio, name: str = "audio") -> np.ndarray:
        """A waveform ``(batch, audio_channels, samples)`` float at :attr:`sampling_rate` -> int codes
        ``(batch, num_codebooks, frames)`` (stereo: left and right codebooks interleaved, as the decoder reads them);
        ``name`` is the argument named in errors."""
        dec = self.config.decoder
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 2:
            audio = audio[:, None]
        if audio.ndim != 3 or audio.shape[1] != dec.audio_channels or audio.shape[2] == 0:
            raise ValueError(
                f"{name} must have shape (batch, {dec.audio_channels}, samples) at {self.sampling_rate} Hz, "
                f"got {audio.shape}"
            )
        codec = self.audio_encoder
        if dec.audio_channels == 2:  # as HF MusicGen: encode each channel, interleave left/right codebooks
            left, right = np.asarray(codec.encode(audio[:, :1])), np.asarray(codec.encode(audio[:, 1:]))
            codes = np.stack([left, right], axis=2).reshape(left.shape[0], -1, left.shape[2])
        else:
            codes = np.asarray(codec.encode(audio))
        if codes.shape[1] != dec.num_codebooks:
            raise ValueError(f"the codec gives {codes.shape[1]} codebooks, the decoder needs {dec.num_codebooks}")
        return codes


class AudioArray(np.ndarray):
    """A numpy array of audio that also answers ``.cpu()`` and ``.numpy()``, so code written for HF's torch output
    (``audio_values[0, 0].cpu().numpy()``) runs unchanged."""

    def cpu(self) -> AudioArray:
        return self

    def numpy(self) -> np.ndarray:
        return self.view(np.ndarray)


@dataclasses.dataclass
class GenerateOutput:
    """What ``generate(..., return_dict_in_generate=True)`` returns: ``sequences`` the audio, ``audio_codes``."""

    sequences: np.ndarray
    audio_codes: np.ndarray
    stats: dict | None = None

    def __getitem__(self, key: str):
        return getattr(self, key)


def abstract_params(config: MusicgenMelodyConfig) -> dict:
    """The whole model's parameter tree as ``jax.ShapeDtypeStruct`` (float32), without allocating it."""
    return {
        "text_encoder": t5.abstract_params(config.text_encoder),
        "audio_encoder": encodec.abstract_params(config.audio_encoder),
        "decoder": decoder_module.abstract_params(config.decoder),
        **conditioning.abstract_params(config),
    }


_generation_prefix = jax.jit(conditioning.generation_prefix, static_argnames=("config", "use_cfg"))


def _as_int_array(name: str, value, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _batch_of(input_ids, input_features, decoder_input_ids, num_codebooks, audio_prompt) -> int:
    for name, value, per_row in (
        ("input_ids", input_ids, 1),
        ("input_features", input_features, 1),
        ("decoder_input_ids", decoder_input_ids, num_codebooks),
        ("audio_prompt", audio_prompt, 1),
    ):
        if value is not None:
            shape = np.shape(value)
            if not shape:
                raise ValueError(f"{name} must be an array, got a scalar")
            return shape[0] // per_row
    return 1


def _check_sampling(do_sample, top_k, top_p, temperature, guidance_scale, names=None):
    """Validates the sampling knobs; returns ``(top_k, top_p, temperature, guidance_scale)`` as int / floats.

    One rule for every knob: a value that is invalid in itself (a negative top_k, top_p outside (0, 1], a temperature
    that is not a finite number > 0, a non-finite guidance_scale) is an error whether or not sampling is on.
    HF differs: with do_sample off, ``GenerationConfig.validate`` only warns that temperature / top_p / top_k are
    unused, and the logits warpers that refuse bad values (``TemperatureLogitsWarper``: > 0; ``TopPLogitsWarper``:
    in [0, 1]; ``TopKLogitsWarper``: > 0, with 0 meaning off) are only built when sampling, so HF's greedy search
    takes ``temperature=-1`` silently. A bad value is a mistake in any mode, so we refuse it in every mode.
    None means "off", as in HF (top_k 0, top_p 1, temperature 1, no guidance).

    ``names`` maps a knob to the name shown in messages (the CLI passes its flags, and "greedy": "--greedy").
    """
    names = names or {}
    unused = "" if do_sample else f" (refused with {names.get('greedy', 'do_sample=False')} too, which does not use it)"
    rules = {
        "top_k": "an integer >= 0 (0 turns top_k off)",
        "top_p": "a number in (0, 1] (1 turns top_p off)",
        "temperature": "a finite number > 0",
        "guidance_scale": "a finite number (> 1 turns classifier-free guidance on)",
    }

    def fail(key, value):
        note = "" if key == "guidance_scale" else unused  # guidance is used by greedy decoding too
        value = repr(value) if isinstance(value, str) else value
        return ValueError(f"{names.get(key, key)} must be {rules[key]}, got {value}{note}")

    def real(value):  # float(value) when it is a finite real number, else None
        try:
            value = None if isinstance(value, (bool, str)) else float(value)
        except (TypeError, ValueError):
            return None
        return value if value is not None and math.isfinite(value) else None

    k = 0.0 if top_k is None else real(top_k)
    if k is None or k < 0 or not k.is_integer():
        raise fail("top_k", top_k)
    p = 1.0 if top_p is None else real(top_p)
    if p is None or not 0.0 < p <= 1.0:
        raise fail("top_p", top_p)
    t = 1.0 if temperature is None else real(temperature)
    if t is None or not t > 0.0:
        raise fail("temperature", temperature)
    g = None if guidance_scale is None else real(guidance_scale)
    if guidance_scale is not None and g is None:
        raise fail("guidance_scale", guidance_scale)
    return int(k), p, t, g


# jax.random.PRNGKey takes a 64-bit seed but, unless jax_enable_x64 is on, keeps only its low 32 bits (2**32 gives
# the key of 0) and overflows above 2**63 - 1; seeds in [0, 2**32) give the same key in both modes.
SEED_MAX = 2**32 - 1


def _check_seed(seed, name: str = "seed") -> int | None:
    """``seed`` as an int in [0, 2**32 - 1] (None stays None); a one-line ValueError naming ``name`` otherwise."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise ValueError(
            f"{name} must be an integer in [0, 2**32 - 1 = {SEED_MAX}] (jax.random.PRNGKey keeps 32 bits of it), "
            f"got {seed!r}"
        )
    return int(seed)


def _check_duration(duration, name: str = "duration") -> float:
    """``duration`` as a positive finite float (seconds); a one-line ValueError naming ``name`` otherwise."""
    try:
        value = float(duration)
        ok = not isinstance(duration, (bool, str)) and math.isfinite(value) and value > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a positive finite number of seconds, got {duration!r}")
    return value


def _check_count(value, name: str) -> int | None:
    """A length argument as a positive int (None stays None); a one-line ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _seconds_at_most(frames: int, frame_rate: int) -> str:
    """``frames / frame_rate`` seconds rounded down (so that it still fits) to the frame rate's resolution."""
    decimals = max(1, math.ceil(math.log10(frame_rate)))
    seconds = math.floor(frames / frame_rate * 10**decimals + 1e-6) / 10**decimals
    return f"{seconds:.{decimals}f}".rstrip("0").rstrip(".") if seconds % 1 else f"{seconds:.1f}"


def _length_error(positions, text_len, chroma_len, prompt_len, total, min_steps, asked, frame_rate) -> str:
    """The message when the conditioning prefix + decoder prompt + the steps asked for overflow the position table.

    Says the prompt is too long (and by how many tokens) when even the fewest steps that give an audio frame do not
    fit, else the longest length that fits, in the unit asked in (seconds for ``duration``, else tokens).
    """
    name, value, from_config = asked
    steps = total - prompt_len
    if name == "duration":
        steps_asked = f"the {steps} decoder steps of {value} s"
    else:
        steps_asked = f"the {steps} steps {'the generation config asks' if from_config else 'asked'} for"
    start = "the start token" if prompt_len == 1 else f"the {prompt_len}-step decoder prompt (start + audio prompt)"
    holds = (
        f"the decoder's position table (max_position_embeddings {positions}) must hold the conditioning prefix "
        f"({text_len} text tokens + {chroma_len} chroma frames), {start} and {steps_asked}"
    )
    over_asked = text_len + chroma_len + prompt_len + steps - positions
    over_min = text_len + chroma_len + prompt_len + min_steps - positions
    if over_min > 0:  # the prompt alone does not fit
        if over_min >= text_len:  # the decoder prompt (an audio prompt) is too long: shortening the text is not enough
            return (
                f"prompt too long: {holds}; that is {over_min} positions too many even for the {min_steps} steps of "
                f"one audio frame: {'shorten the audio prompt' if prompt_len > 1 else 'the checkpoint leaves no room'}"
            )
        if over_asked < text_len:
            fix = f"shorten the text prompt by {over_asked} tokens"
        else:
            fix = f"shorten the text prompt by at least {over_min} tokens and ask for fewer steps"
        return f"text prompt too long: it is {text_len} tokens and {holds}; {fix}"
    room = positions - text_len - chroma_len - prompt_len  # new tokens that fit: >= min_steps here
    seconds = _seconds_at_most(room - min_steps + 1, frame_rate)
    if name == "duration":
        return f"duration {value} s does not fit: {holds}; at most {seconds} s fits"
    what = f"the generation config's {name} {value}" if from_config else f"{name} {value}"
    if name == "max_length" and not from_config:  # the config's max_length counts from the prompt, like new tokens
        return f"{what} does not fit: {holds}; ask for max_length at most {prompt_len + room} ({room} new tokens)"
    return f"{what} does not fit: {holds}; ask for at most {room} new tokens (or a duration of at most {seconds} s)"
