"""Generation as named stages, each a function the front door's ``generate`` calls in order:

    knobs (generation config + arguments) -> conditions (text states, melody -> prefix) -> prompt codes (BOS, codes
    or an encoded waveform) -> length (HF's rules) -> the compiled loop (prefill + scanned steps) -> audio

A new capability (long-form windows, another model family) is a new stage or a new implementation of one, not a
branch inside ``generate``. Stages above the conditioning see only arrays and the decoder, never the family.
The checks the CLI runs before loading a model (:func:`check_sampling`, :func:`check_seed`, :func:`check_duration`)
are the ones ``generate`` runs, so both give the same one-line messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax import core, sampling, sharding
from musicgen_jax.config import GenerationConfig
from musicgen_jax.decoder import Conditions

PerRow = float | tuple  # a knob: one value, or one per row (the batch job runner's per-job knobs)


@dataclasses.dataclass(frozen=True)
class Knobs:
    """How to sample, resolved from the generation config and ``generate``'s arguments (validated).
    ``top_p``, ``temperature`` and ``guidance_scale`` may hold one value per row (a tuple)."""

    do_sample: bool
    top_k: int
    top_p: PerRow
    temperature: PerRow
    guidance_scale: PerRow | None
    bos_token_id: int
    pad_token_id: int

    @property
    def use_cfg(self) -> bool:
        return self.guidance_scale is not None and bool(np.all(np.asarray(self.guidance_scale) > 1))

    @property
    def use_top_p(self) -> bool:
        return self.do_sample and bool(np.any(np.asarray(self.top_p) < 1.0))

    def sampling_params(self) -> sampling.SamplingParams:
        """The loop's dynamic knobs (scalars, or ``(B,)`` for per-row knobs)."""
        return sampling.SamplingParams(
            jnp.asarray(self.temperature, jnp.float32),
            jnp.asarray(self.top_p, jnp.float32),
            jnp.asarray(self.guidance_scale if self.use_cfg else 1.0, jnp.float32),
        )


def resolve_knobs(
    gen: GenerationConfig,
    decoder_config,
    *,
    do_sample=None,
    guidance_scale=None,
    top_k=None,
    top_p=None,
    temperature=None,
) -> Knobs:
    """Stage 1: arguments override the generation config (HF's precedence); special tokens from both.
    ``top_p``, ``temperature`` and ``guidance_scale`` may be sequences, one value per row."""
    do_sample = gen.do_sample if do_sample is None else bool(do_sample)
    values = {
        "top_p": gen.top_p if top_p is None else top_p,
        "temperature": gen.temperature if temperature is None else temperature,
        "guidance_scale": gen.guidance_scale if guidance_scale is None else guidance_scale,
    }
    names = ("top_k", "top_p", "temperature", "guidance_scale")

    def check(name, value):  # one knob, with check_sampling's rule and message
        return check_sampling(do_sample, **{**dict.fromkeys(names), name: value})[names.index(name)]

    top_k = check("top_k", gen.top_k if top_k is None else top_k)
    for name, value in values.items():
        per_row = isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1)
        if per_row and not len(value):
            raise ValueError(f"{name} must be a number or one number per row, got an empty sequence")
        values[name] = tuple(check(name, item) for item in value) if per_row else check(name, value)
    guidance = values["guidance_scale"]
    if isinstance(guidance, tuple) and len({g > 1 for g in guidance}) > 1:
        raise ValueError(
            f"guidance_scale per row must be all > 1 (guidance on) or all <= 1 (off) in one batch, got {list(guidance)}"
        )
    bos = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else gen.bos_token_id
    bos = decoder_config.bos_token_id if bos is None else bos
    pad = decoder_config.pad_token_id if gen.pad_token_id is None else gen.pad_token_id
    return Knobs(do_sample, top_k, values["top_p"], values["temperature"], guidance, bos, pad)


def check_rows(knobs: Knobs, batch: int) -> None:
    """Per-row knobs must have one value per row."""
    for name in ("top_p", "temperature", "guidance_scale"):
        value = getattr(knobs, name)
        if isinstance(value, tuple) and len(value) != batch:
            raise ValueError(f"{name} holds {len(value)} values (one per row) but the inputs have batch {batch}")


def encode_text(model, input_ids, attention_mask, batch: int, knobs: Knobs, text_states=None):
    """Stage 2a: the T5 states ``(B, W, E)`` and their mask ``(B, W)`` the conditions are built from.

    ``text_states``: T5 states given instead of ``input_ids`` (HF's ``encoder_outputs``, e.g. the zeros of
    ``get_unconditional_inputs``), with ``attention_mask``."""
    cfg = model.config
    # HF never generates without text: with no input_ids it encodes a single BOS token whose attention mask it infers
    # as 0 (BOS == pad), so the text prefix is one all-zero position.
    if text_states is not None:
        mask = (
            jnp.ones(text_states.shape[:2], jnp.int32)
            if attention_mask is None
            else jnp.asarray(np.asarray(attention_mask))
        )
        return text_states, mask
    if input_ids is not None:
        ids = as_int_array("input_ids", input_ids, ndim=2)
        if attention_mask is None:
            # HF _prepare_attention_mask_for_generation: infer the mask from the decoder's pad id.
            pad = knobs.pad_token_id
            attention_mask = (ids != pad).astype(np.int64) if (ids == pad).any() else np.ones_like(ids)
        return model.encode_text(ids, attention_mask), jnp.asarray(np.asarray(attention_mask))
    return jnp.zeros((batch, 1, cfg.text_encoder.d_model), model.dtype), jnp.zeros((batch, 1), jnp.int32)


def build_conditions(model, text, mask, input_features, knobs: Knobs) -> Conditions:
    """Stage 2b: the :class:`~musicgen_jax.decoder.Conditions` HF's ``generate`` builds (``B' = 2B`` rows under CFG:
    ``[cond; uncond]``) from the T5 states and, for MusicGen Melody, the chroma features ``(B, M, C)`` (or None): a
    prefix ``(B', P, D)`` (melody) or the cross-attention states ``(B', W, D)`` and mask (plain MusicGen)."""
    feats = None if input_features is None else check_features(input_features, model.config, text.shape[0], model.dtype)
    return core.generation_conditions_jit(model.params, model.config, text, mask, feats, knobs.use_cfg)


def encode_conditions(
    model,
    input_ids,
    attention_mask,
    input_features,
    batch: int,
    knobs: Knobs,
    text_states=None,
) -> Conditions:
    """Stage 2: :func:`encode_text`, then :func:`build_conditions`."""
    if input_features is not None:  # checked first: a plain checkpoint refuses a melody before T5 runs
        check_features(input_features, model.config, batch, model.dtype)
    text, mask = encode_text(model, input_ids, attention_mask, batch, knobs, text_states)
    return build_conditions(model, text, mask, input_features, knobs)


def prompt_codes(model, batch: int, decoder_input_ids, audio_prompt, knobs: Knobs) -> np.ndarray:
    """Stage 3: the decoder's starting codes ``(B * K, Q)`` in HF's layout: BOS, then the codes to continue
    (``decoder_input_ids``, or ``audio_prompt`` encoded with EnCodec)."""
    dec = model.config.decoder
    if audio_prompt is not None:
        if decoder_input_ids is not None:
            raise ValueError("pass either audio_prompt or decoder_input_ids, not both")
        codes = model.encode_audio(audio_prompt, name="audio_prompt")
        decoder_input_ids = codes.reshape(-1, codes.shape[2])
    start = np.full((batch * dec.num_codebooks, 1), knobs.bos_token_id, np.int64)
    if decoder_input_ids is None:
        return start
    prompt = check_decoder_inputs(decoder_input_ids, dec, batch).reshape(batch * dec.num_codebooks, -1)
    if (prompt[:, 0] != knobs.bos_token_id).all():  # HF prepends BOS unless every row already starts with it
        prompt = np.concatenate([start, prompt], axis=1)
    return prompt


def frames_for(duration: float, frame_rate: int) -> int:
    """The frames ``duration`` seconds of new audio ask for: rounded up, at least one."""
    # - 1e-6: duration * frame_rate is 7.000000000000001 for 0.14 s at 50 Hz, which must stay 7 frames
    return max(1, math.ceil(duration * frame_rate - 1e-6))


def decode_length(
    config,
    gen: GenerationConfig,
    prompt_len: int,
    prefix_len: int,
    *,
    max_new_tokens=None,
    max_length=None,
    duration=None,
) -> int:
    """Stage 4: the code buffer's length (prompt included), as HF's ``_prepare_generated_length``: max_new_tokens
    wins, then an explicit max_length, then the generation config's max_length counted from the prompt; or
    ``duration`` seconds. Errors say what fits, in the unit asked."""
    dec = config.decoder
    channel_codebooks = dec.num_codebooks // dec.audio_channels
    # What the length came from, for the message when it does not fit: (argument, value, from the gen config?)
    asked = ("duration", duration, False)
    if duration is not None:
        if max_new_tokens is not None or max_length is not None:
            raise ValueError("pass only one of duration, max_new_tokens, max_length")
        max_new_tokens = frames_for(duration, config.audio_encoder.frame_rate) + channel_codebooks - 1
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
    if prefix_len + total > dec.max_position_embeddings:
        chroma = getattr(config, "chroma_length", 0) if prefix_len else 0  # plain MusicGen: no prefix
        raise ValueError(
            length_error(
                dec.max_position_embeddings,
                prefix_len - chroma,  # the prefix is [chroma_length chroma frames, text tokens]
                chroma,
                prompt_len,
                total,
                channel_codebooks,
                asked,
                config.audio_encoder.frame_rate,
            )
        )
    return total


def run_loop(
    decoder_params,
    conditions,
    prompt,
    total: int,
    knobs: Knobs,
    rng,
    decoder_config,
    progress=None,
    rules=None,
    capacity: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Stage 5: the compiled loop. ``prompt`` ``(B * K, Q)`` -> codes ``(B, K, frames)`` (delay pattern reverted)
    and its timings (``prefill_seconds``, ``decode_seconds``, ``compile_seconds``). ``progress(done, total)`` runs
    the steps in compiled chunks of 32 with one host sync each.

    ``capacity``: the code buffer and KV cache length the programs are compiled for (default ``total``, the
    buffer this generation fills). Long-form windows pass the full window's, so a shorter last window runs the same
    programs and stops early.

    ``rng``: one key, or one per row (:func:`musicgen_jax.sampling.row_keys`).

    When the parameters live on a mesh, the rows (the prefix's ``[cond; uncond]`` rows, the prompt and the pattern)
    are split over the batch rule's axes of ``rules`` (default :data:`musicgen_jax.sharding.RULES`) where they
    divide; the KV cache follows them inside the loop."""
    codes, timings = run_loop_rows(
        decoder_params,
        conditions,
        prompt,
        [total],
        knobs,
        rng,
        decoder_config,
        progress,
        rules,
        capacity,
    )
    return np.concatenate(codes, axis=0), timings


def run_loop_rows(
    decoder_params,
    conditions,
    prompt,
    totals,
    knobs: Knobs,
    rng,
    decoder_config,
    progress=None,
    rules=None,
    capacity: int | None = None,
) -> tuple[list[np.ndarray], dict]:
    """:func:`run_loop` with a buffer length per row: ``totals`` holds one (every row) or ``B`` lengths, and row
    ``b`` is generated as it would be alone with ``totals[b]`` (its delay pattern ends there; the rows run the
    program of the longest, or of ``capacity``). Returns the codes of each row, ``(1, K, frames_b)``, and the
    timings. The batch job runner's rows of one duration bucket."""
    dec = decoder_config
    batch = prompt.shape[0] // dec.num_codebooks
    totals = [int(t) for t in totals] * (batch if len(totals) == 1 else 1)
    if len(totals) != batch:
        raise ValueError(f"totals holds {len(totals)} lengths but the prompt has batch {batch}")
    check_rows(knobs, batch)
    stop = max(totals)
    capacity = stop if capacity is None else capacity
    ids_BKQ = prompt.reshape(batch, dec.num_codebooks, -1)
    rows = (
        [
            sampling.build_delay_pattern(ids_BKQ[b : b + 1], knobs.pad_token_id, totals[b], dec.audio_channels)
            for b in range(batch)
        ]
        if len(set(totals)) > 1
        else [sampling.build_delay_pattern(ids_BKQ, knobs.pad_token_id, stop, dec.audio_channels)]
    )
    if len({fixed.shape for fixed, _ in rows}) > 1:
        raise ValueError("rows of different lengths must share their fixed prompt positions")
    fixed = np.concatenate([f for f, _ in rows], axis=0)
    patterns = [p for _, p in rows]
    # positions past a row's total are never generated; the pattern forces pad there should anything read them
    program_pattern = np.concatenate(
        [
            np.pad(
                p,
                ((0, 0), (0, 0), (0, capacity - p.shape[2])),
                constant_values=knobs.pad_token_id,
            )
            for p in patterns
        ],
        axis=0,
    )
    mesh = sharding.mesh_of(decoder_params)
    fixed_BKQ, pattern_BKT = jnp.asarray(fixed), jnp.asarray(program_pattern)
    if mesh is not None:
        rules = sharding.RULES if rules is None else rules
        conditions, fixed_BKQ, pattern_BKT = sharding.shard_batch((conditions, fixed_BKQ, pattern_BKT), mesh, rules)
    # On a mesh every row keeps its own prefix: B + 1 rows, or one, would not split evenly over the data axis.
    single_device = mesh is None
    tokens, timings = sampling.run_loop(
        decoder_params,
        conditions,
        fixed_BKQ,
        pattern_BKT,
        rng,
        knobs.sampling_params(),
        chunk=None if progress is None else 32,
        on_chunk=progress,
        config=dec,
        max_length=capacity,
        stop=stop,
        do_sample=knobs.do_sample,
        top_k=knobs.top_k if knobs.do_sample else 0,
        use_top_p=knobs.use_top_p,
        use_cfg=knobs.use_cfg,
        # generate's unconditional rows are all the same (zero text, null chroma, the same BOS), and without a
        # melody every row's chroma is the null chroma: each computed and kept once
        **(sampling.prefix_sharing(conditions, fixed, knobs.use_cfg) if single_device else {}),
    )
    tokens = sharding.to_host(tokens)
    if len(patterns) == 1:
        kept = sampling.apply_delay_pattern(tokens[:, :, :stop], patterns[0])
        return [sampling.revert_delay_pattern(kept, knobs.pad_token_id)], timings
    codes = []
    for b, (total, pattern) in enumerate(zip(totals, patterns, strict=True)):
        kept = sampling.apply_delay_pattern(tokens[b : b + 1, :, :total], pattern)
        codes.append(sampling.revert_delay_pattern(kept, knobs.pad_token_id))
    return codes, timings


def sampling_key(seed: int | None, rng) -> jax.Array:
    """The loop's PRNG key: ``rng`` when given, else from ``seed`` (a fresh random seed when both are None)."""
    if rng is not None:
        return rng
    return jax.random.PRNGKey(np.random.randint(0, 2**31 - 1) if seed is None else int(seed))


class Clock:
    """Per-phase seconds for ``GenerateOutput.stats``: each phase waits for its device work, and the time spent
    compiling inside it is moved to ``compile_seconds`` (so a first call and a repeated call compare)."""

    def __init__(self):
        self.stats: dict = {"compile_seconds": 0.0}
        self.started = self.last = time.perf_counter()
        self.compiled = sampling.compile_clock()

    def lap(self, name: str, result=None):
        """Ends the phase ``name`` once ``result`` (any pytree of arrays) is computed; returns ``result``."""
        jax.block_until_ready(result)
        now, compiled = time.perf_counter(), sampling.compile_clock()
        self.add(
            {
                name: now - self.last - (compiled - self.compiled),
                "compile_seconds": compiled - self.compiled,
            }
        )
        return result

    @contextlib.contextmanager
    def phase(self, name: str):
        """Adds a block's seconds to ``name`` (its compiling to ``compile_seconds``), waiting for what the block
        hands to ``done(result)``; for phases that interleave (long-form windows: conditions, steps, codec)."""
        start, compiled = time.perf_counter(), sampling.compile_clock()
        results = []
        yield results.append
        jax.block_until_ready(results)
        spent = sampling.compile_clock() - compiled
        self.stats[name] = self.stats.get(name, 0.0) + time.perf_counter() - start - spent
        self.stats["compile_seconds"] += spent

    def add(self, timings: dict) -> None:
        """Adds the seconds of a stage that timed itself (e.g. :func:`run_loop`); the next lap starts now."""
        for name, seconds in timings.items():
            self.stats[name] = self.stats.get(name, 0.0) + seconds
        self.last, self.compiled = time.perf_counter(), sampling.compile_clock()


# ---------------------------------------------------------------------------------------------------------------
# Input checks, shared with the CLI (which runs them before loading a model).


def as_int_array(name: str, value, ndim: int) -> np.ndarray:
    """``value`` as int64 numpy of rank ``ndim`` (whole floats accepted); a one-line ValueError naming ``name``."""
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def text_states(encoder_outputs, config, dtype) -> jax.Array:
    """HF's ``encoder_outputs`` (an array of T5 states ``(B, W, E)``, a tuple whose first item is one, or an object
    with ``last_hidden_state``) as ``dtype`` on the device, after checking the shape."""
    states = getattr(encoder_outputs, "last_hidden_state", encoder_outputs)
    if isinstance(states, tuple | list):
        states = states[0]
    states = np.asarray(states, np.float32)
    E = config.text_encoder.d_model
    if states.ndim != 3 or states.shape[2] != E:
        raise ValueError(f"encoder_outputs must hold T5 states (batch, seq, d_model={E}), got shape {states.shape}")
    return jnp.asarray(states, dtype)


def check_features(input_features, config, batch: int | None, dtype) -> jax.Array:
    """Chroma features ``(B, M, C)`` as ``dtype`` on the device, after checking their shape (and batch, if known)."""
    if config.decoder.cross_attention:
        raise ValueError("plain MusicGen takes no melody (input_features); use a MusicGen Melody checkpoint")
    feats = np.asarray(input_features, np.float32)
    C = config.num_chroma
    if feats.ndim != 3 or feats.shape[2] != C or feats.shape[1] == 0:
        raise ValueError(f"input_features must have shape (batch, frames, num_chroma={C}), got {feats.shape}")
    if batch is not None and feats.shape[0] != batch:
        raise ValueError(f"input_features has batch {feats.shape[0]} but input_ids has batch {batch}")
    return jnp.asarray(feats, dtype)


def check_decoder_inputs(decoder_input_ids, decoder_config, batch: int | None, decoder_attention_mask=None):
    """HF's ``decoder_input_ids`` ``(B * K, T)`` -> int32 ``(B, K, T)``, after checking shape, values and batch (and
    the shape of ``decoder_attention_mask`` ``(B, T)``, when given)."""
    cfg = decoder_config
    ids = as_int_array("decoder_input_ids", decoder_input_ids, ndim=2)
    if ids.shape[0] % cfg.num_codebooks:
        raise ValueError(
            f"decoder_input_ids must have shape (batch * num_codebooks, tgt_len) with num_codebooks="
            f"{cfg.num_codebooks}, got {ids.shape}"
        )
    if ids.size and (ids.min() < 0 or ids.max() > cfg.vocab_size):
        raise ValueError(f"decoder_input_ids values must lie in [0, {cfg.vocab_size}], got [{ids.min()}, {ids.max()}]")
    rows = ids.shape[0] // cfg.num_codebooks
    if batch is not None and rows != batch:
        raise ValueError(f"decoder_input_ids holds batch {rows} (rows / num_codebooks) but the inputs have {batch}")
    if decoder_attention_mask is not None and tuple(np.shape(decoder_attention_mask)) != (rows, ids.shape[1]):
        raise ValueError(
            f"decoder_attention_mask must have shape (batch, tgt_len) = {(rows, ids.shape[1])}, "
            f"got {tuple(np.shape(decoder_attention_mask))}"
        )
    return ids.reshape(rows, cfg.num_codebooks, ids.shape[1]).astype(np.int32)


def batch_of(input_ids, input_features, decoder_input_ids, num_codebooks, audio_prompt) -> int:
    """The batch size, from the first input given (``decoder_input_ids`` holds ``num_codebooks`` rows per item)."""
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


def check_sampling(do_sample, top_k, top_p, temperature, guidance_scale, names=None):
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


def check_seed(seed, name: str = "seed") -> int | None:
    """``seed`` as an int in [0, 2**32 - 1] (None stays None); a one-line ValueError naming ``name`` otherwise."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise ValueError(
            f"{name} must be an integer in [0, 2**32 - 1 = {SEED_MAX}] (jax.random.PRNGKey keeps 32 bits of it), "
            f"got {seed!r}"
        )
    return int(seed)


def check_duration(duration, name: str = "duration") -> float:
    """``duration`` as a positive finite float (seconds); a one-line ValueError naming ``name`` otherwise."""
    try:
        value = float(duration)
        ok = not isinstance(duration, (bool, str)) and math.isfinite(value) and value > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a positive finite number of seconds, got {duration!r}")
    return value


def check_count(value, name: str) -> int | None:
    """A length argument as a positive int (None stays None); a one-line ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def seconds_at_most(frames: int, frame_rate: int) -> str:
    """``frames / frame_rate`` seconds rounded down (so that it still fits) to the frame rate's resolution."""
    decimals = max(1, math.ceil(math.log10(frame_rate)))
    seconds = math.floor(frames / frame_rate * 10**decimals + 1e-6) / 10**decimals
    return f"{seconds:.{decimals}f}".rstrip("0").rstrip(".") if seconds % 1 else f"{seconds:.1f}"


def length_error(positions, text_len, chroma_len, prompt_len, total, min_steps, asked, frame_rate) -> str:
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
    prefix = (
        f"the conditioning prefix ({text_len} text tokens + {chroma_len} chroma frames), "
        if text_len + chroma_len
        else ""  # plain MusicGen: the text is cross-attended to and takes no position
    )
    table = f"the decoder's position table (max_position_embeddings {positions})"
    holds = f"{table} must hold {prefix}{start} and {steps_asked}"
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
    seconds = seconds_at_most(room - min_steps + 1, frame_rate)
    if name == "duration":
        return f"duration {value} s does not fit: {holds}; at most {seconds} s fits"
    what = f"the generation config's {name} {value}" if from_config else f"{name} {value}"
    if name == "max_length" and not from_config:  # the config's max_length counts from the prompt, like new tokens
        return f"{what} does not fit: {holds}; ask for max_length at most {prompt_len + room} ({room} new tokens)"
    return f"{what} does not fit: {holds}; ask for at most {room} new tokens (or a duration of at most {seconds} s)"
