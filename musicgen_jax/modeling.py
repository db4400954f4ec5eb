"""The front door: ``MusicgenMelodyForConditionalGeneration``, with HF's names and calling conventions.

This module only wires the network parts together; each part lives in its own file (``decoder.py``, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax import (
    checkpoint,
    chunked_decode,
    compilation_cache,
    core,
    generation,
    hub,
    long_form,
    loss,
    parameters,
    sharding,
)
from musicgen_jax import decoder as decoder_module
from musicgen_jax import melody as melody_module
from musicgen_jax.config import GenerationConfig, MusicgenConfig, MusicgenMelodyConfig, config_from_pretrained
from musicgen_jax.encodec import EncodecModel

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _on_own_mesh(method):
    """Runs a front-door method on the (``Auto``) mesh the model's parameters live on, even inside a caller's
    ``with jax.set_mesh(...)`` block of an explicit-axes mesh (:func:`musicgen_jax.sharding.context`)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with sharding.context(self.params):
            return method(self, *args, **kwargs)

    return run


def default_scan_layers(backend: str | None = None) -> bool:
    """The decoder layout :meth:`~MusicgenMelodyForConditionalGeneration.from_pretrained` picks on ``backend``
    (default: ``jax.default_backend()``): unrolled on CPU, where it decodes fastest (measured: XLA:CPU copies each
    layer's kernels and KV cache out of a stacked buffer on every step); scanned on TPU and GPU, where it reads
    slices in place and keeps compile time flat in depth (what MaxText does)."""
    return (backend or jax.default_backend()) != "cpu"


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


_LAYERED = ("decoder", "text_encoder")  # the parts with a stack of layers: scanned, or unrolled (one per layer)


def _unrolled(params: dict) -> dict:
    """The decoder's and T5's layers in the unrolled layout (``layers_0`` ...), each stacked leaf released once
    sliced (see ``decoder.unstack_layers``)."""
    return {**params, **{part: decoder_module.unstack_layers(params[part], consume=True) for part in _LAYERED}}


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


class ConditionalGeneration:
    """Either MusicGen family in JAX: the parameter tree, the config, and HF-compatible entry points. Use the
    family's class (:class:`MusicgenMelodyForConditionalGeneration`, :class:`MusicgenForConditionalGeneration`);
    ``from_pretrained`` on either returns the class of the checkpoint's ``model_type``.

    Attributes:
      config: :class:`~musicgen_jax.config.MusicgenMelodyConfig` or :class:`~musicgen_jax.config.MusicgenConfig`
        (frozen; static under jit).
      params: nested dict of jax arrays, laid out as the Flax modules define (see each module's docstring):
        ``text_encoder``, ``audio_encoder``, ``decoder`` and the projections ``text_proj`` / ``chroma_proj``. The
        decoder's layers are unrolled (``layers_0`` ...) or scanned (one stacked ``layers``), as loaded
        (``scan_layers``); every entry point accepts either.
      generation_config: defaults for :meth:`generate`, read from ``generation_config.json``.
    """

    config_class: type | None = None  # the family's config (None: any)

    def __init__(
        self,
        config: MusicgenMelodyConfig | MusicgenConfig,
        params: dict,
        generation_config: GenerationConfig | None = None,
        rules: Any = None,
    ):
        if self.config_class is not None and not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, got a {type(config).__name__} "
                f"(model_type {config.model_type!r}: use {_FAMILY_CLASSES[config.model_type].__name__})"
            )
        self.config = config
        self.params = params
        # how the parameters were placed on a mesh (musicgen_jax.sharding rules); generate splits rows by it too
        self.rules = sharding.RULES if rules is None else rules
        self.generation_config = generation_config or GenerationConfig(
            pad_token_id=config.decoder.pad_token_id, bos_token_id=config.decoder.bos_token_id
        )
        self.source_dir: str | None = None  # where tokenizer/preprocessor files come from when saving
        self._feature_extractor = None
        # the codec decodes long code sequences in chunks of this many seconds, overlapping by the second figure
        self.audio_chunk_seconds = chunked_decode.CHUNK_SECONDS
        self.audio_overlap_seconds = chunked_decode.OVERLAP_SECONDS

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
        cls,
        name_or_path: str | os.PathLike,
        dtype: Any = jnp.float32,
        mesh: Any = "auto",
        scan_layers: bool | None = None,
        *,
        rules: Any = None,
        matmul_precision: str | None = None,
        lora: str | os.PathLike | None = None,
    ) -> MusicgenMelodyForConditionalGeneration:
        """Loads a checkpoint: a local HF directory (``config.json`` + safetensors, sharded or not, or a .bin), a
        Hugging Face Hub id such as ``"facebook/musicgen-melody"``, or a directory written by :meth:`save_pretrained`
        / ``musicgen-jax convert`` (orbax; the fastest to load).

        ``dtype``: ``jnp.float32`` (default), ``jnp.bfloat16``, ``"float32"``/``"bfloat16"``, or ``"auto"`` to keep
        the checkpoint's dtype.

        ``mesh``: ``"auto"`` (default): one device, unless ``MUSICGEN_JAX_CPU_DEVICES`` split the CPU into one JAX
        device per core (:mod:`musicgen_jax.cpu_devices`): then the layers' heads and ffn are split over the cores
        (tensor parallelism: each core reads its share of the weights at every step); None: one device; or any
        ``jax.sharding.Mesh``
        (``jax.make_mesh``'s, explicit or auto axes, or :func:`musicgen_jax.sharding.make_mesh`'s): every parameter
        is placed by its logical axes through ``rules`` (default :data:`musicgen_jax.sharding.RULES`, for axes named
        ``data`` and ``model``; other names through :func:`musicgen_jax.sharding.rules_for`), and ``generate``
        splits its rows by them too; a converted checkpoint restores straight into those shardings.

        ``scan_layers``: the decoder's and the T5 encoder's parameter layout (see ``musicgen_jax.decoder``). None
        (default): by backend,
        :func:`default_scan_layers` (unrolled on CPU, scanned on TPU and GPU). False: one buffer per layer, run
        unrolled; the fastest decoding on XLA:CPU (which copies a stacked layer's kernels and cache out of the stack
        on every step), at a compile time that grows with depth. True: the layers stacked and scanned, as checkpoints
        store them; flat compile time, what fine-tuning and accelerators use. Both give the same numbers.

        ``matmul_precision``: None (default) computes float32 weights with exact float32 products on every backend
        (``Precision.HIGHEST``: HF's float32 numbers) and bfloat16 weights with bf16 products accumulated in float32;
        "high" or "default" trade float32 exactness for speed on TPU/GPU (see ``musicgen_jax/layers.py``).

        ``lora``: a LoRA adapter folder (``musicgen-jax finetune --lora-rank R`` writes ``OUT/lora``), merged into the
        decoder's weights once loaded (:meth:`merge_lora`), so generation runs at the base model's speed.

        Loading also turns on the persistent compilation cache (:mod:`musicgen_jax.compilation_cache`), so a new
        process skips XLA compilation of programs an earlier one compiled; ``MUSICGEN_JAX_COMPILATION_CACHE=0`` turns
        it off.
        """
        compilation_cache.enable()  # a no-op when turned off (MUSICGEN_JAX_COMPILATION_CACHE=0) or set by the user
        scan_layers = default_scan_layers() if scan_layers is None else bool(scan_layers)
        rules = sharding.RULES if rules is None else rules
        if isinstance(mesh, str):
            if mesh != "auto":
                raise ValueError(f"mesh must be a jax.sharding.Mesh, None or 'auto', got {mesh!r}")
            mesh = sharding.cpu_mesh()  # None unless musicgen_jax split the CPU into one device per core
        if mesh is not None:
            sharding.check_rules(mesh, rules)  # before anything is read
        source = hub.resolve(name_or_path, follow=False)
        path = checkpoint.resolve(source)  # a converted directory's current version
        target = resolve_dtype(dtype)
        if checkpoint.is_converted(path):
            config = config_from_pretrained(path)
            abstract = parameters.abstract(config)
            if scan_layers:
                shardings = None if mesh is None else sharding.shardings_for(abstract, mesh, rules)
                params = checkpoint.restore(path, abstract, dtype=target, shardings=shardings)
            else:
                # host views (memory-mapped), sliced per layer as numpy views and put on the device(s) in one
                # batched copy: slicing device arrays would dispatch one op per layer and leaf (~1.6 s, small)
                params = _unrolled(checkpoint.restore(path, abstract, dtype=target, host=True))
                params = jax.device_put(params) if mesh is None else sharding.shard_params(params, mesh, rules)
        else:
            from convert import convert_checkpoint  # the converter is only needed when loading HF weights

            config, params = convert_checkpoint(path)
            if not scan_layers:  # numpy views: each layer is copied to the device once, below
                params = _unrolled(params)
            params = cast_params(params, target)
            if mesh is not None:
                params = sharding.shard_params(params, mesh, rules)
        config = config.with_matmul_precision(matmul_precision)
        family = _FAMILY_CLASSES[config.model_type]  # the checkpoint's family, whichever class was asked
        model = family(config, params, GenerationConfig.from_pretrained(path, config.decoder), rules=rules)
        model.source_dir = source
        if lora is not None:
            model.merge_lora(lora)
        return model

    def merge_lora(self, adapters: str | os.PathLike | dict, lora_config: Any = None) -> None:
        """Folds LoRA adapters into the decoder's weights in place (``W + alpha/rank * a @ b``, in the weights'
        dtype; either layer layout): a folder written by :func:`musicgen_jax.lora.save` (``OUT/lora`` of a finetune
        run), or an adapters tree with its :class:`~musicgen_jax.lora.LoraConfig`."""
        from musicgen_jax import lora as lora_module

        if isinstance(adapters, str | os.PathLike):
            if lora_config is not None:
                raise ValueError("lora_config comes from the adapter folder; pass it only with an adapters tree")
            adapters, lora_config = lora_module.load(adapters)
        elif lora_config is None:
            raise ValueError("an adapters tree needs its lora_config (musicgen_jax.lora.LoraConfig)")
        lora_config.check(self.config)
        adapters = jax.tree_util.tree_map(jnp.asarray, dict(adapters))
        with sharding.context(self.params):
            self.params = {
                **self.params,
                "decoder": lora_module.merge_decoder(self.params["decoder"], adapters, lora_config),
            }

    def save_pretrained(
        self, directory: str | os.PathLike, overwrite: bool = False, format: str = "musicgen-jax"
    ) -> str:
        """Writes the converted format (orbax parameters + HF json, tokenizer and preprocessor files) to
        ``directory``; :meth:`from_pretrained` reads it back bit for bit.

        ``format="hf"`` writes a transformers checkpoint instead (``model.safetensors``, ``config.json``,
        ``generation_config.json``, the tokenizer/preprocessor files of the folder it was loaded from), which
        transformers' class of the same name loads (see :mod:`musicgen_jax.hf_export`): the converter's tables run
        backwards, so a HF checkpoint loaded and saved again gives its tensors back bit for bit. Its destination must
        be new, empty or an earlier export (``overwrite`` does not apply); the write is atomic too.

        The write is atomic (a new version folder, then a pointer switched with ``os.replace``; see
        :mod:`musicgen_jax.checkpoint`): a process killed at any moment leaves the old checkpoint or the new one.
        ``directory`` must be new, empty or a converted checkpoint; ``overwrite=True`` also allows a folder holding
        other files, which are left as they are. Raises :class:`~musicgen_jax.checkpoint.CheckpointError` otherwise.
        """
        if format not in ("musicgen-jax", "hf"):
            raise ValueError(f"format={format!r}: 'musicgen-jax' (converted, orbax) or 'hf' (transformers)")
        params = {**self.params}
        for part in _LAYERED:  # checkpoints store the scanned layout
            params[part] = decoder_module.stack_layers(params[part])
        if format == "hf":
            from musicgen_jax import hf_export

            source = None if self.source_dir is None else hub.resolve(self.source_dir)
            return hf_export.save(directory, params, self.config, self.generation_config, copy_from=source)
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

    @_on_own_mesh
    def encode_text(self, input_ids, attention_mask=None) -> jax.Array:
        """T5 ``last_hidden_state`` ``(batch, seq, d_model_text)`` of token ids ``(batch, seq)``, not projected."""
        ids = generation.as_int_array("input_ids", input_ids, ndim=2)
        vocab = self.config.text_encoder.vocab_size
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"input_ids values must lie in [0, {vocab}), got [{ids.min()}, {ids.max()}]")
        mask = (
            np.ones_like(ids)
            if attention_mask is None
            else generation.as_int_array("attention_mask", attention_mask, ndim=2)
        )
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} does not match input_ids shape {ids.shape}")
        return core.encode_text_jit(self.params, self.config, jnp.asarray(ids), jnp.asarray(mask))

    @_on_own_mesh
    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        input_features=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_hidden_states=None,
        labels=None,
        *,
        encoder_outputs=None,
        input_values=None,
        padding_mask=None,
        melody=None,
    ) -> MusicgenMelodyOutput:
        """HF's forward: logits ``(batch * num_codebooks, prefix_len + tgt_len, vocab_size)``.

        Either ``input_ids`` (+ ``attention_mask``) or ``encoder_outputs`` (T5 states ``(batch, seq, d_model)``, or
        HF's tuple of them) and, for MusicGen Melody, ``input_features`` ``(batch, frames, num_chroma)``, from which
        the conditions are built as HF does; or (melody) ``encoder_hidden_states``: an already-projected prefix
        ``(batch, prefix_len, hidden_size)``. ``decoder_input_ids`` is ``(batch * num_codebooks, tgt_len)`` int; for
        plain MusicGen, without them (and without ``labels``) HF encodes ``input_values`` ``(batch, channels,
        samples)`` with EnCodec and reads those codes (``padding_mask`` is accepted and, as in HF's unnormalised
        32 kHz codec, changes nothing). ``melody`` (the processor's waveform, for long-form generation) is accepted
        and not read: the forward pass reads its chroma, ``input_features``.
        """
        dec = self.config.decoder
        del padding_mask, melody  # HF's EnCodec uses it only to normalise, which MusicGen's codec does not do
        if decoder_input_ids is None and labels is None and input_values is not None:
            codes = self.encode_audio(input_values, name="input_values")
            decoder_input_ids = codes.reshape(-1, codes.shape[2])
        labels_BTK = None
        if labels is not None:
            labels_BTK = loss.check_labels(labels, dec.num_codebooks, dec.vocab_size)
            if decoder_input_ids is None:  # HF: the decoder reads the labels shifted right
                ids_BKT = loss.shift_tokens_right(labels_BTK, dec.pad_token_id, dec.bos_token_id)
                decoder_input_ids = ids_BKT.reshape(-1, ids_BKT.shape[2])
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
            if encoder_outputs is not None:
                text = generation.text_states(encoder_outputs, cfg, self.dtype)
                mask = None if attention_mask is None else jnp.asarray(np.asarray(attention_mask))
                batch = text.shape[0]
            elif input_ids is not None:
                text = self.encode_text(input_ids, attention_mask)
                mask = None if attention_mask is None else jnp.asarray(np.asarray(attention_mask))
                batch = text.shape[0]
            if input_features is not None:
                feats = generation.check_features(input_features, cfg, batch, self.dtype)
                batch = feats.shape[0]
        ids_BKT = generation.check_decoder_inputs(decoder_input_ids, cfg.decoder, batch, decoder_attention_mask)
        key_mask = None if decoder_attention_mask is None else jnp.asarray(np.asarray(decoder_attention_mask))
        logits_BKTV, conditions = core.forward_jit(
            self.params,
            cfg,
            jnp.asarray(ids_BKT),
            text_BWE=text,
            text_mask_BW=mask,
            chroma_BMC=feats,
            prefix_BPD=prefix,
            target_mask_BT=key_mask,
        )
        states = conditions.prefix_BPD if conditions.prefix_BPD is not None else conditions.cross_BWD
        out = MusicgenMelodyOutput(logits=logits_BKTV.reshape(-1, *logits_BKTV.shape[2:]), encoder_hidden_states=states)
        if labels_BTK is not None:
            if labels_BTK.shape[:2] != (ids_BKT.shape[0], ids_BKT.shape[2]):
                raise ValueError(
                    f"labels {labels_BTK.shape} do not match decoder_input_ids (batch {ids_BKT.shape[0]}, length "
                    f"{ids_BKT.shape[2]})"
                )
            out.loss = loss.loss_from_logits(logits_BKTV, jnp.asarray(labels_BTK), dec.pad_token_id)
        return out

    # ----------------------------------------------------------------------------------------------------------
    # Generation

    @_on_own_mesh
    def generate(
        self,
        input_ids=None,
        attention_mask=None,
        input_features=None,
        decoder_input_ids=None,
        *,
        audio_prompt=None,
        input_values=None,
        padding_mask=None,
        encoder_outputs=None,
        melody=None,
        melody_sampling_rate: int | None = None,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        duration: float | None = None,
        window_duration: float | None = None,
        extend_stride: float | None = None,
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
        on_audio=None,
        **unknown,
    ):
        """Text (and melody) -> audio, as HF's ``generate``; the decode loop is one compiled XLA program. Pieces
        longer than one window (``duration`` past ``window_duration``) are generated window by window, as audiocraft
        does (:mod:`musicgen_jax.long_form`).

        Args:
          input_ids, attention_mask: tokenized text ``(batch, seq)`` (from the processor).
          input_features: chroma ``(batch, frames, num_chroma)`` (from the processor's feature extractor).
          decoder_input_ids: audio codes to continue, ``(batch * num_codebooks, frames)`` in HF's layout.
          audio_prompt / input_values: a waveform ``(batch, channels, samples)`` at ``sampling_rate`` to continue
            (encoded with EnCodec; ``input_values`` and ``padding_mask`` are the names HF's ``MusicgenProcessor``
            returns: the mask changes nothing, as in HF); exclusive with ``decoder_input_ids``.
          encoder_outputs: T5 states ``(batch, seq, d_model)`` (or HF's tuple of them) instead of ``input_ids``, as
            :meth:`get_unconditional_inputs` returns.
          melody, melody_sampling_rate (MusicGen Melody): the melody waveform, ``(samples,)`` (one mono clip),
            ``(batch, samples)`` (mono clips), ``(batch, channels, samples)`` or a list of clips, at
            ``melody_sampling_rate`` (default :attr:`sampling_rate`); mixed to mono and resampled. One window reads
            its chroma as the processor computes it (``input_features``, when given, is used instead); long-form
            windows read it again for each window, tiled when shorter (the processor returns it as ``melody``).
          max_new_tokens / max_length / duration: length, in decoder steps, buffer length (both one-shot, as HF), or
            seconds of new audio.
          window_duration, extend_stride: long-form windows (with ``duration``): each window holds
            ``window_duration`` seconds (default 30) and starts ``extend_stride`` seconds (default 18, or 0.6 of the
            window) after the one before, continuing the rest of it. One window (the prompt and ``duration`` fit in
            ``window_duration``) is one-shot generation, as HF.
          do_sample, guidance_scale, top_k, top_p, temperature: as HF (defaults from ``generation_config.json``);
            ``guidance_scale``, ``top_p`` and ``temperature`` may also hold one value per row.
          seed / rng: an int seed in [0, 2**32) or a JAX key for sampling; the same seed gives the same audio (row
            ``b`` draws from ``fold_in(key, b)``). ``rng`` may also hold one key per row ``(batch, 2)``: each row then
            samples exactly as a batch of one with its key (what the batch job runner passes).
          return_dict_in_generate: return :class:`GenerateOutput` (``.sequences`` audio, ``.audio_codes``, and
            ``.stats``, per-phase seconds on every call: see :class:`GenerateOutput`).
          progress: optional ``callback(steps_done, steps_total)``, over the whole piece: the loop then runs as
            compiled chunks of 32 steps with one host sync per chunk (for a progress bar).
          on_audio: optional ``callback(audio (batch, channels, samples))`` with each stretch of audio as soon as it
            is decoded (long-form: after each window), in order; together they are the returned audio.

        Returns:
          float32 numpy audio ``(batch, channels, samples)`` at ``self.sampling_rate``, or a :class:`GenerateOutput`.
        """
        if unknown:
            raise ValueError(f"generate() got unsupported argument(s): {', '.join(sorted(unknown))}")
        del padding_mask  # HF's EnCodec uses it only to normalise, which MusicGen's codec does not do
        if input_values is not None:
            if audio_prompt is not None:
                raise ValueError("pass either audio_prompt or input_values, not both")
            audio_prompt = input_values
        states = None if encoder_outputs is None else generation.text_states(encoder_outputs, self.config, self.dtype)
        gen = generation_config or self.generation_config
        dec = self.config.decoder
        knobs = generation.resolve_knobs(
            gen,
            dec,
            do_sample=do_sample,
            guidance_scale=guidance_scale,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
        )
        seed = generation.check_seed(seed)
        duration = None if duration is None else generation.check_duration(duration)
        max_new_tokens = generation.check_count(max_new_tokens, "max_new_tokens")
        max_length = generation.check_count(max_length, "max_length")
        if duration is None and (window_duration is not None or extend_stride is not None):
            raise ValueError(
                "window_duration and extend_stride apply to duration= (seconds, long-form); max_new_tokens and "
                "max_length are one-shot, as in HF"
            )
        text_inputs = input_ids if states is None else states
        batch = generation.batch_of(text_inputs, input_features, decoder_input_ids, dec.num_codebooks, audio_prompt)
        clips = self._melody_clips(melody, melody_sampling_rate, text_inputs, input_features, decoder_input_ids, batch)
        if clips is not None:
            batch = len(clips)

        clock = generation.Clock()
        if input_features is not None:  # a plain checkpoint refuses a melody before anything runs
            generation.check_features(input_features, self.config, batch, self.dtype)
        text, mask = generation.encode_text(self, input_ids, attention_mask, batch, knobs, states)
        prompt = generation.prompt_codes(self, batch, decoder_input_ids, audio_prompt, knobs)
        frame_rate = self.config.audio_encoder.frame_rate
        windows = None
        if duration is not None:
            windows = long_form.plan(duration, window_duration, extend_stride, prompt.shape[1] - 1, frame_rate)
        key = generation.sampling_key(seed, rng)
        if windows is None:
            if input_features is None and clips is not None:
                input_features = self._chroma(clips, padding=True)
            conditions = clock.lap(
                "text_encode_seconds", generation.build_conditions(self, text, mask, input_features, knobs)
            )
            total = generation.decode_length(
                self.config,
                gen,
                prompt.shape[1],
                conditions.prefix_length,
                max_new_tokens=max_new_tokens,
                max_length=max_length,
                duration=duration,
            )
            clock.lap("prompt_seconds")
            codes, loop = generation.run_loop(
                self.params["decoder"], conditions, prompt, total, knobs, key, dec, progress, rules=self.rules
            )
            clock.add(loop)
            with clock.phase("codec_decode_seconds") as done:
                audio = self.decode_audio(codes, on_audio=on_audio)
                done(audio)
            steps = total - prompt.shape[1]
        else:
            codes, audio, loop = self._generate_windows(
                windows,
                text,
                mask,
                input_features,
                clips,
                prompt,
                knobs,
                key,
                clock,
                progress,
                on_audio,
                window_duration,
            )
            steps = sum(windows.steps(dec.num_codebooks // dec.audio_channels))
        audio = audio.view(AudioArray)
        if not return_dict_in_generate:
            return audio
        stats = {
            **clock.stats,
            "decode_steps": steps,
            "decode_steps_per_second": steps / max(loop["decode_seconds"], 1e-9),
            "audio_seconds": audio.shape[-1] / self.sampling_rate,
            "windows": 1 if windows is None else len(windows.windows),
            "wall_seconds": time.perf_counter() - clock.started,
        }
        return GenerateOutput(sequences=audio, audio_codes=codes, stats=stats)

    def _generate_windows(
        self, windows, text, mask, input_features, clips, prompt, knobs, key, clock, progress, on_audio, window_duration
    ):
        """Long-form generation (:mod:`musicgen_jax.long_form`): the windows of ``windows``, the audio decoded in
        chunks as each window ends. Returns ``(codes, audio, loop timings)``."""
        cfg = self.config
        if input_features is not None and clips is None:
            raise ValueError(
                "long-form generation with a melody reads it again for every window: pass the waveform as melody= "
                "(the processor returns it under 'melody'), not only input_features"
            )
        fr, sr = cfg.audio_encoder.frame_rate, self.sampling_rate
        window_samples = windows.window * sr // fr

        def conditions_for(window):
            with clock.phase("text_encode_seconds") as done:
                feats = None
                if clips is not None:
                    start = window.offset * sr // fr  # audiocraft: int(offset / frame_rate * sample_rate)
                    feats = self._chroma(melody_module.window_waves(clips, start, window_samples))
                conditions = generation.build_conditions(self, text, mask, feats, knobs)
                done(conditions)
            if window.index == 0:
                seconds = long_form.DEFAULT_WINDOW_SECONDS if window_duration is None else window_duration
                message = long_form.window_error(
                    cfg, conditions.prefix_length, windows.window, seconds, default=window_duration is None
                )
                if message:
                    raise ValueError(message)
            return conditions

        stream = self._audio_stream(windows.total)
        pieces = []

        def on_codes(new):
            with clock.phase("codec_decode_seconds") as done:
                for piece in stream.push(new):
                    pieces.append(piece)
                    if on_audio is not None:
                        on_audio(piece)
                done(pieces[-1:])

        codes, loop = long_form.run(
            self.params["decoder"],
            windows,
            conditions_for,
            prompt,
            knobs,
            key,
            cfg.decoder,
            progress=progress,
            rules=self.rules,
            on_codes=on_codes,
        )
        clock.add(loop)
        with clock.phase("codec_decode_seconds") as done:
            for piece in stream.finish():
                pieces.append(piece)
                if on_audio is not None:
                    on_audio(piece)
            done(pieces[-1:])
        return codes, np.concatenate(pieces, axis=-1), loop

    def _melody_clips(self, melody, melody_sampling_rate, text_inputs, input_features, decoder_input_ids, batch):
        """``melody`` as mono clips at the model's rate (None without one); the batch from it when nothing else says."""
        if melody is None:
            if melody_sampling_rate is not None:
                raise ValueError("melody_sampling_rate is given without a melody")
            return None
        if self.config.decoder.cross_attention:
            raise ValueError("plain MusicGen takes no melody; use a MusicGen Melody checkpoint")
        given = text_inputs is not None or input_features is not None or decoder_input_ids is not None
        count = batch if given else melody_module.clip_count(melody)
        return melody_module.melody_items(melody, count, melody_sampling_rate, self.sampling_rate)

    @property
    def feature_extractor(self):
        """MusicGen Melody's chroma feature extractor: the checkpoint's ``preprocessor_config.json`` when it has one,
        else HF's defaults at the model's rate (what ``generate(melody=...)`` computes chroma with)."""
        if self._feature_extractor is None:
            from musicgen_jax.chroma import MusicgenMelodyFeatureExtractor
            from musicgen_jax.feature_files import FEATURE_EXTRACTOR_NAME

            source = self.source_dir
            if source is not None and os.path.isfile(os.path.join(source, FEATURE_EXTRACTOR_NAME)):
                self._feature_extractor = MusicgenMelodyFeatureExtractor.from_pretrained(source)
            else:
                chroma = self.config.num_chroma
                self._feature_extractor = MusicgenMelodyFeatureExtractor(
                    feature_size=chroma, num_chroma=chroma, sampling_rate=self.sampling_rate
                )
        return self._feature_extractor

    def _chroma(self, clips, padding=True) -> np.ndarray:
        """One-hot chroma ``(B, M, C)`` of mono clips at the model's rate, as the processor computes it."""
        return self.feature_extractor(clips, sampling_rate=self.sampling_rate, padding=padding)["input_features"]

    def _audio_stream(self, total_frames: int):
        """The chunked codec decode of ``total_frames`` frames (:mod:`musicgen_jax.chunked_decode`)."""
        fr = self.config.audio_encoder.frame_rate
        return chunked_decode.StreamingDecoder(
            self._decode_codes,
            total_frames,
            self.config.audio_encoder.hop_length,
            chunked_decode.frames_for(self.audio_chunk_seconds, fr),
            chunked_decode.frames_for(self.audio_overlap_seconds, fr),
        )

    @_on_own_mesh
    def decode_audio(self, codes_BKY, on_audio=None) -> np.ndarray:
        """Codes ``(batch, num_codebooks, frames)`` -> float32 audio ``(batch, audio_channels, samples)``.

        Long sequences are decoded in overlapping chunks of :attr:`audio_chunk_seconds` (peak memory flat in
        length, one compiled program for every length; at least 60 dB SNR against one pass, see
        :mod:`musicgen_jax.chunked_decode`). ``on_audio(piece)``: called with each decoded stretch, in order."""
        codes = np.asarray(codes_BKY)
        stream = self._audio_stream(codes.shape[-1])
        pieces = stream.push(codes) + stream.finish()
        if on_audio is not None:
            for piece in pieces:
                on_audio(piece)
        return np.concatenate(pieces, axis=-1)

    def _decode_codes(self, codes_BKY) -> np.ndarray:
        """One pass of the codec: codes ``(B, K, Y)`` -> audio ``(B, channels, Y * hop)`` (stereo: left and right
        codebooks decoded apart)."""
        codes = jnp.asarray(codes_BKY, jnp.int32)
        codec = self.audio_encoder
        if self.config.decoder.audio_channels == 2:
            return np.concatenate(
                [np.asarray(codec.decode(codes[:, 0::2])), np.asarray(codec.decode(codes[:, 1::2]))], 1
            )
        return np.asarray(codec.decode(codes))

    @_on_own_mesh
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


class MusicgenMelodyForConditionalGeneration(ConditionalGeneration):
    """MusicGen Melody (HF ``transformers.models.musicgen_melody``): text and melody (chroma) conditions, read by the
    decoder as a prefix in front of the audio codes."""

    config_class = MusicgenMelodyConfig


class MusicgenForConditionalGeneration(ConditionalGeneration):
    """Plain MusicGen (HF ``transformers.models.musicgen``: musicgen-small/-medium/-large and the stereo models): the
    decoder cross-attends to the T5 text states in every layer; no melody."""

    config_class = MusicgenConfig

    def get_unconditional_inputs(self, num_samples: int = 1) -> dict:
        """HF's null inputs for unconditional generation: ``generate(**model.get_unconditional_inputs(n), ...)``.
        Zero T5 states ``(n, 1, d_model)`` with an all-zero attention mask, and guidance off."""
        states = np.zeros((num_samples, 1, self.config.text_encoder.d_model), np.float32)
        return {
            "encoder_outputs": (states,),
            "attention_mask": np.zeros((num_samples, 1), np.int64),
            "guidance_scale": 1.0,
        }


_FAMILY_CLASSES = {
    "musicgen_melody": MusicgenMelodyForConditionalGeneration,
    "musicgen": MusicgenForConditionalGeneration,
}


class AudioArray(np.ndarray):
    """A numpy array of audio that also answers ``.cpu()`` and ``.numpy()``, so code written for HF's torch output
    (``audio_values[0, 0].cpu().numpy()``) runs unchanged."""

    def cpu(self) -> AudioArray:
        return self

    def numpy(self) -> np.ndarray:
        return self.view(np.ndarray)


@dataclasses.dataclass
class GenerateOutput:
    """What ``generate(..., return_dict_in_generate=True)`` returns.

    sequences: the audio ``(batch, channels, samples)``; audio_codes: ``(batch, num_codebooks, frames)``.
    stats: seconds per phase, on every call (a first call included; each phase waits for its device work, and the
      compiling inside any phase is counted in ``compile_seconds`` only): ``text_encode_seconds`` (T5 and the
      conditioning prefix), ``prompt_seconds`` (prompt codes, EnCodec-encoding an audio prompt), ``prefill_seconds``,
      ``decode_seconds`` (the scanned steps), ``codec_decode_seconds`` (codes to audio), ``compile_seconds``;
      and ``decode_steps``, ``decode_steps_per_second``, ``audio_seconds``, ``windows`` (1, or the long-form
      windows run), ``wall_seconds``. Long-form: summed over the windows.
    """

    sequences: np.ndarray
    audio_codes: np.ndarray
    stats: dict | None = None

    def __getitem__(self, key: str):
        return getattr(self, key)


def abstract_params(config: MusicgenMelodyConfig | MusicgenConfig) -> dict:
    """The whole model's parameter tree as ``jax.ShapeDtypeStruct`` (float32): :func:`parameters.abstract`."""
    return parameters.abstract(config)
