"""The generation loop: delay pattern, one jit-compiled prefill + ``lax.scan`` decode over a KV cache, CFG, sampling.

Einsum letters: the package legend (``musicgen_jax/__init__.py``).

The whole autoregressive loop is one XLA program: the prefix and the prompt codes are prefilled into a
preallocated cache in one forward pass, then each scan step feeds one code per codebook and samples the next.
No Python runs per step. Only the delay pattern (a small integer table) is built on the host, exactly as HF does.

Long loops run in phases of the KV cache (:func:`phase_ends`): a step attends over its whole writable buffer, so the
buffer covers one phase's positions, and at the phase's end it is sealed into read-only context in front of the
next phase's buffer. A step then reads the keys and values written so far plus at most one phase, where one buffer
for the whole loop would make every step read all ``max_length`` positions.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from musicgen_jax.config import DecoderConfig
from musicgen_jax.decoder import Conditions, Decoder, KVCache, Segment, is_scanned

# ---------------------------------------------------------------------------------------------------------------
# Delay pattern (host side, numpy): HF MusicgenMelodyForCausalLM.build_delay_pattern_mask / apply / revert.


def build_delay_pattern(
    input_ids_BKT: np.ndarray, pad_token_id: int, max_length: int, audio_channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """HF's delay pattern. Codebook k (mono) or codebook pair k (stereo: left/right interleaved) is shifted right
    by k; BOS/pad fills the triangle in front, pad the triangle at the end.

    Args:
      input_ids_BKT: int ``(B, K, T)`` decoder input ids (starting with BOS).
      pad_token_id: the BOS/pad id (``vocab_size``).
      max_length: length of the full code buffer.
      audio_channels: 1 or 2.

    Returns:
      ``(input_ids_BKQ, pattern_BKT)``: the prompt positions already determined (``Q`` = the first position that
      must be generated, as HF computes it) and the pattern ``(B, K, max_length)``, where -1 marks positions to
      generate and any other value is forced there.
    """
    B, K, T = input_ids_BKT.shape
    shifted = np.full((B, K, max_length), -1, dtype=np.int64)
    channel_codebooks = K // 2 if audio_channels == 2 else K
    # HF returns the ids untouched (and an all -1 pattern) when max_length is too short for the delays.
    if max_length < 2 * channel_codebooks - 1:
        return input_ids_BKT, shifted
    for c in range(channel_codebooks):
        rows = [c] if audio_channels == 1 else [2 * c, 2 * c + 1]
        for k in rows:
            n = min(T, max_length - c)
            shifted[:, k, c : c + n] = input_ids_BKT[:, k, :n]
    j = np.arange(max_length)[None, :]
    c = np.arange(channel_codebooks)[:, None]
    delayed = (j >= c + max_length - channel_codebooks + 1) | (j <= c)  # triu (EOS pad) + tril (BOS pad)
    if audio_channels == 2:
        delayed = np.repeat(delayed, 2, axis=0)
    pattern = np.where(delayed[None], pad_token_id, shifted)
    first = pattern[:, 0, :]
    starts = np.nonzero(first == -1)[1]
    start = int(starts.min()) if starts.size else T  # HF falls back to the prompt length when nothing is left
    return pattern[..., :start], pattern


def apply_delay_pattern(ids_BKT: np.ndarray, pattern_BKT: np.ndarray) -> np.ndarray:
    """Keeps ids where the pattern is -1, forces the pattern's value elsewhere (HF ``apply_delay_pattern_mask``)."""
    pattern = pattern_BKT[..., : ids_BKT.shape[-1]]
    return np.where(pattern == -1, ids_BKT, pattern)


def revert_delay_pattern(ids_BKT: np.ndarray, pad_token_id: int) -> np.ndarray:
    """Drops every pad id and regroups per codebook, as HF's ``generate`` does: ``(B, K, frames)``."""
    B, K, _ = ids_BKT.shape
    kept = ids_BKT[ids_BKT != pad_token_id]
    if kept.size % (B * K):
        raise ValueError("generated codes do not regroup evenly per codebook (pad ids inside the prompt?)")
    return kept.reshape(B, K, -1)


# ---------------------------------------------------------------------------------------------------------------
# Logits processing, in HF's order: classifier-free guidance, temperature, top-k, top-p.


def guide(logits_2BV, guidance_scale):
    """HF ``ClassifierFreeGuidanceLogitsProcessor``: rows ``[cond; uncond]`` -> ``uncond + s * (cond - uncond)``."""
    cond, uncond = jnp.split(logits_2BV, 2, axis=0)
    return uncond + (cond - uncond) * guidance_scale


def top_k_filter(scores, top_k: int):
    """HF ``TopKLogitsWarper``: keep every score >= the k-th largest (ties kept), others -inf. ``scores`` (rows, V)
    float32."""
    top_k = min(top_k, scores.shape[-1])
    keys = _ordered_keys(scores)
    return jnp.where(keys < _kth_largest_key(keys, top_k), -jnp.inf, scores)


def _ordered_keys(scores):
    """float32 scores as uint32 keys in the same order (``a < b`` exactly when ``key(a) < key(b)``; -0.0 and 0.0,
    which compare equal, get the same key)."""
    scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)  # (x + 0.0 is folded to x by XLA)
    bits = jax.lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))


def _kth_largest_key(keys, k: int):
    """The k-th largest of each row's keys (counting ties), ``(rows, 1)``: the largest key ``t`` with at least k keys
    ``>= t``, found bit by bit from the top (32 rounds of compare-and-count over the row). ``lax.top_k`` gives the
    same value but sorts: 14 ms against 0.6 ms for 64 rows of 2048 (batch 16 under CFG's 4 codebooks) on XLA:CPU,
    25% of the batch-16 decode step (benchmarks/NOTES.md #22)."""
    t = jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32)
    for bit in range(31, -1, -1):
        candidate = t | jnp.uint32(1 << bit)
        enough = jnp.sum(keys >= candidate, axis=-1, keepdims=True, dtype=jnp.int32) >= k
        t = jnp.where(enough, candidate, t)
    return t


def top_p_filter(scores, top_p):
    """HF ``TopPLogitsWarper``: sort ascending, drop tokens whose cumulative probability is <= 1 - top_p (keeping
    at least the most likely one). ``scores`` (rows, V)."""
    order = jnp.argsort(scores, axis=-1)
    sorted_scores = jnp.take_along_axis(scores, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_scores, axis=-1), axis=-1)
    remove_sorted = (cumulative <= 1 - top_p).at[..., -1].set(False)
    remove = jnp.take_along_axis(remove_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(remove, -jnp.inf, scores)


class SamplingParams(NamedTuple):
    """Dynamic sampling knobs (changing them does not recompile): each a scalar, or one value per row ``(B,)``
    (the batch job runner's per-job knobs)."""

    temperature: jax.Array
    top_p: jax.Array
    guidance_scale: jax.Array


def row_keys(rng, rows: int) -> jax.Array:
    """The loop's raw PRNG key per row, ``(rows, 2)``: row ``b`` of a batch sampled with one key ``(2,)`` draws
    from ``fold_in(rng, b)``. ``(rows, 2)`` keys are one key per row, each taken as the key of a batch of one
    (row ``b`` draws from ``fold_in(rng[b], 0)``): a row then samples exactly as it would alone with that key, never
    depending on its neighbours. Typed keys (``jax.random.key``) too."""
    rng = jnp.asarray(rng)
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    if rng.shape == (2,):
        return jax.vmap(lambda b: jax.random.fold_in(rng, b))(jnp.arange(rows, dtype=jnp.uint32))
    if rng.shape != (rows, 2):
        raise ValueError(f"rng must be one PRNG key (2,) or one per row ({rows}, 2), got shape {rng.shape}")
    return jax.vmap(lambda key: jax.random.fold_in(key, 0))(rng.astype(jnp.uint32))


def fold_in(rng, data: int) -> jax.Array:
    """``jax.random.fold_in`` of one key ``(2,)`` or of each of per-row keys ``(rows, 2)`` (see :func:`row_keys`)."""
    rng = jnp.asarray(rng)
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    if rng.ndim == 1:
        return jax.random.fold_in(rng, data)
    return jax.vmap(lambda key: jax.random.fold_in(key, data))(rng)


def _per_row(value, rows: int):
    """A knob (scalar or ``(rows,)``) as float32 ``(rows,)``."""
    return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (rows,))


def choose(logits, params: SamplingParams, rng, *, do_sample: bool, top_k: int, use_top_p: bool):
    """Next ids ``(rows,)`` from logits ``(rows, V)``, processed in float32: argmax (greedy) or a categorical draw."""
    scores = logits.astype(jnp.float32)
    if not do_sample:
        return jnp.argmax(scores, axis=-1).astype(jnp.int32)
    scores = scores / params.temperature
    if top_k > 0:
        scores = top_k_filter(scores, top_k)
    if use_top_p:
        scores = top_p_filter(scores, params.top_p)
    return jax.random.categorical(rng, scores, axis=-1).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------------------------
# The compiled loop.


class DecodeState(NamedTuple):
    """The loop's carry: everything one step reads and writes."""

    step: jax.Array  # int32 scalar: buffer position whose logits ``logits_BKV`` predict
    tokens_BKT: jax.Array  # int32 (B, K, max_length): the code buffer in delayed layout
    cache: KVCache  # keys/values of prefix + buffer positions < step
    logits_BKV: jax.Array  # float32 (B', K, V) next-token logits (B' = 2B under CFG)
    rng: jax.Array  # uint32 (B, 2): one key per row (:func:`row_keys`)


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """Everything static about one generation (hashable: part of the compiled program's key)."""

    config: DecoderConfig
    max_length: int
    do_sample: bool
    top_k: int
    use_top_p: bool
    use_cfg: bool
    shared_uncond: bool = False  # every unconditional row has the same prefix and prompt: prefill it once
    common_prefix: int = 0  # leading prefix positions that are the same in every row: prefilled and kept once
    phase_length: int = 0  # positions per phase of the KV cache's buffer (:func:`phase_ends`); 0: one phase
    buffer_end: int = 0  # the code position where the cache's writable buffer ends (0: ``max_length``)
    slack: int = 0  # unwritten positions after the buffer's end (masked; :func:`buffer_slack`)

    @property
    def end(self) -> int:
        return self.buffer_end or self.max_length


def _pass(decoder_params, spec: LoopSpec, ids, cache, index, conditions: Conditions | None = None):
    """One decoder pass over the rows ``ids`` at cache ``index``; last-position logits. ``conditions`` at the
    prefill only (the steps read the cross-attention keys and values from the cache)."""
    c = Conditions() if conditions is None else conditions
    decoder = Decoder(spec.config, scan_layers=is_scanned(decoder_params))
    logits, cache = decoder.apply(
        {"params": decoder_params},
        ids,
        c.prefix_BPD,
        cache=cache,
        cache_index=index,
        encoder_BWD=c.cross_BWD,
        encoder_mask_BW=c.cross_mask_BW,
    )
    return logits[:, :, -1].astype(jnp.float32), cache


def _run(decoder_params, spec: LoopSpec, ids_BKT, cache, index, conditions: Conditions | None = None):
    """One decoder pass over ``ids_BKT`` (duplicated for CFG) at cache ``index``; last-position logits."""
    ids = jnp.concatenate([ids_BKT, ids_BKT], axis=0) if spec.use_cfg else ids_BKT
    return _pass(decoder_params, spec, ids, cache, index, conditions)


def as_conditions(conditions) -> Conditions:
    """A :class:`Conditions`, or an array read as MusicGen Melody's prefix ``(B', P, D)`` (or None: no conditions)."""
    if conditions is None or isinstance(conditions, Conditions):
        return Conditions() if conditions is None else conditions
    return Conditions(prefix_BPD=conditions)


def _repeat_last_row(x, rows: int, axis: int):
    """``x`` with ``rows`` rows along ``axis``: the first ``rows - 1`` then copies of the last row of ``x``."""
    head = jax.lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)
    last = jax.lax.slice_in_dim(x, x.shape[axis] - 1, x.shape[axis], axis=axis)
    shape = list(last.shape)
    shape[axis] = rows - head.shape[axis]
    return jnp.concatenate([head, jnp.broadcast_to(last, shape)], axis=axis)


def _sample(state: DecodeState, pattern_BKT, sampling: SamplingParams, spec: LoopSpec):
    """The ids for position ``state.step``: guided, processed, drawn, then forced by the delay pattern."""
    B, K, _ = state.tokens_BKT.shape
    logits = state.logits_BKV
    if spec.use_cfg:
        logits = guide(logits, _per_row(sampling.guidance_scale, B)[:, None, None])
    # Each row draws from its own key, with its own knobs: row b's codes are those of a batch of one.
    keys = jax.vmap(jax.random.split)(state.rng)
    rng, key = keys[:, 0], keys[:, 1]

    def one_row(scores_KV, temperature, top_p, row_key):
        params = SamplingParams(temperature, top_p, None)
        return choose(scores_KV, params, row_key, do_sample=spec.do_sample, top_k=spec.top_k, use_top_p=spec.use_top_p)

    ids = jax.vmap(one_row)(logits, _per_row(sampling.temperature, B), _per_row(sampling.top_p, B), key)
    forced_BK = jax.lax.dynamic_index_in_dim(pattern_BKT, state.step, axis=2, keepdims=False)
    return jnp.where(forced_BK == -1, ids, forced_BK).astype(jnp.int32), rng


def _prefill(decoder_params, conditions, prompt_BKQ, rng, spec: LoopSpec) -> DecodeState:
    """The conditions (a prefix, or the text's cross-attention keys and values) and every fixed position into a fresh
    cache; the last logits predict position Q. ``conditions``: see :func:`as_conditions`.

    What the rows have in common is computed and kept once (the caller checked it on the host,
    :func:`prefix_sharing`): the first ``spec.common_prefix`` prefix positions, the same in every row, run as one row
    whose keys and values every row then reads (the cache's shared context); with ``spec.shared_uncond`` the B
    identical unconditional rows run as one, whose prefix keys and values they all read, and whose prompt keys,
    values and logits are copied to each of them. Each row's numbers are those of its own full pass (only the order
    of the float32 sums in attention differs); the steps read the shared parts once instead of once per row."""
    conditions = as_conditions(conditions)
    B, K, Q = prompt_BKQ.shape
    P, C = conditions.prefix_length, spec.common_prefix
    dtype = jax.tree_util.tree_leaves(decoder_params)[0].dtype
    rows = 2 * B if spec.use_cfg else B
    rng = row_keys(rng, B)
    scanned = is_scanned(decoder_params)
    tokens = jnp.zeros((B, K, spec.max_length), jnp.int32).at[:, :, :Q].set(prompt_BKQ.astype(jnp.int32))
    shared_uncond = _shares_uncond(spec, B)
    copy_common = _copies_common(spec, B)
    context, one_row = (), None
    if C:
        common = conditions._replace(prefix_BPD=conditions.prefix_BPD[:1, :C])
        one_row = KVCache.zeros(spec.config, 1, C, dtype, scanned=scanned)
        _, one_row = _pass(decoder_params, spec, None, one_row, 0, common)
        if not copy_common:
            context = (Segment(one_row.k, _transposed(one_row.v)),)
    if P:  # the rest of the prefix (none left: no prefix, rather than a zero-length one)
        conditions = conditions._replace(prefix_BPD=conditions.prefix_BPD[:, C:] if C < P else None)
    own = P - C  # prefix positions each row (or the one unconditional row) computes for itself
    if not shared_uncond:
        positions = spec.end + spec.slack  # the buffer's code positions, then its unwritten slack
        if copy_common:
            cache = KVCache.zeros(spec.config, rows, P + positions, dtype, scanned=scanned)
            cache = cache._replace(k=_write_rows(cache.k, one_row.k), v=_write_rows(cache.v, one_row.v))
        else:
            cache = KVCache.zeros(spec.config, rows, own + positions, dtype, scanned=scanned, context=context)
        logits, cache = _run(decoder_params, spec, tokens[:, :, :Q], cache, C, conditions)
        return DecodeState(jnp.asarray(Q, jnp.int32), tokens, cache, logits, rng)
    # The B conditional rows and one unconditional row.
    cache = KVCache.zeros(spec.config, B + 1, own + Q, dtype, scanned=scanned, context=context)
    ids = jnp.concatenate([tokens[:, :, :Q], tokens[:1, :, :Q]], axis=0)
    head = jax.tree_util.tree_map(lambda x: x[: B + 1], conditions)
    logits, cache = _pass(decoder_params, spec, ids, cache, C, head)
    logits = _repeat_last_row(logits, rows, axis=0)
    row_axis, pos_axis = (1, 3) if scanned else (0, 2)  # of the keys and values; the cross mask is (rows, W)

    def positions(x, start, stop):
        return jax.lax.slice_in_dim(x, start, stop, axis=pos_axis)

    def buffer(x):  # the prompt's keys and values, copied to every unconditional row, in the first phase's buffer
        prompt = _repeat_last_row(positions(x, own, own + Q), rows, axis=row_axis)
        pad = [(0, 0)] * x.ndim
        pad[pos_axis] = (0, spec.end + spec.slack - Q)
        return jnp.pad(prompt, pad)

    if own:  # the prefix positions: the conditional rows' own and the one unconditional row's
        k, v = (jax.tree_util.tree_map(lambda x: positions(x, 0, own), part) for part in (cache.k, cache.v))

        def rows_of(x, start, stop):
            return jax.tree_util.tree_map(lambda a: jax.lax.slice_in_dim(a, start, stop, axis=row_axis), x)

        v_t = _transposed(v)
        segment = Segment(rows_of(k, 0, B), rows_of(v_t, 0, B), rows_of(k, B, B + 1), rows_of(v_t, B, B + 1))
        context = (*context, segment)
    cache = KVCache(
        *(jax.tree_util.tree_map(buffer, part) for part in (cache.k, cache.v)),
        *(jax.tree_util.tree_map(lambda x: _repeat_last_row(x, rows, axis=row_axis), p) for p in cache[2:4]),
        None if cache.cross_mask is None else _repeat_last_row(cache.cross_mask, rows, axis=0),
        context,
    )
    return DecodeState(jnp.asarray(Q, jnp.int32), tokens, cache, logits, rng)


# Query rows up to which a step reads the common prefix positions from each row's own copy rather than from one
# shared row: for 2 rows the shared form's per-head (2 x 64) matmul reads at ~11 GB/s on XLA:CPU, each row's own
# matrix-vector product at ~34 GB/s, so two copies cost less than one shared row; from 4 rows on, one row is cheaper
# (benchmarks/NOTES.md #21).
_COPY_COMMON_ROWS = 2


def _shares_uncond(spec: LoopSpec, batch: int) -> bool:
    """Whether the prefill runs the identical unconditional rows as one (``shared_uncond``; one row has none to
    share)."""
    return spec.use_cfg and spec.shared_uncond and batch > 1


def _copies_common(spec: LoopSpec, batch: int) -> bool:
    """Whether the prefill copies the common prefix positions into each row's own buffer (few rows: each row's
    buffer gets its own copy, computed once all the same) rather than keeping them once as shared context."""
    rows = 2 * batch if spec.use_cfg else batch
    return bool(spec.common_prefix) and not _shares_uncond(spec, batch) and rows <= _COPY_COMMON_ROWS


def _buffer_prefix(spec: LoopSpec, prefix_length: int, batch: int) -> int:
    """Positions the prefill's buffer holds in front of code position 0: the prefix positions each row keeps in its
    own buffer (none when the unconditional rows share theirs: the prefix then lives in context segments)."""
    if _shares_uncond(spec, batch):
        return 0
    return prefix_length if _copies_common(spec, batch) else prefix_length - spec.common_prefix


def _write_rows(buffer, common):
    """``common`` (one row, the first C positions; a cache part: one array or a tuple) written into every row of
    ``buffer`` at positions ``[0, C)``."""

    def write(buf, one):
        row_axis = buf.ndim - 4  # (L, B, N, S, H) or (B, N, S, H)
        shape = list(one.shape)
        shape[row_axis] = buf.shape[row_axis]
        return jax.lax.dynamic_update_slice(buf, jnp.broadcast_to(one, shape).astype(buf.dtype), (0,) * buf.ndim)

    return jax.tree_util.tree_map(write, buffer, common)


def _transposed(v):
    """Values ``(..., C, H)`` (a cache part: one array or a tuple of them) as a :class:`Segment` holds them,
    ``(..., H, C)``."""
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, -1, -2), v)


def _advance(decoder_params, state: DecodeState, pattern_BKT, sampling, spec: LoopSpec, num_steps):
    """``num_steps`` loop steps: sample position ``step``, write it, run it through the decoder. ``num_steps`` may be
    traced (an int32 scalar): under jit one program then runs any number of steps (a progress chunk, a window's
    steps, a last partial window), where a static count would compile one program per count. The steps stay inside
    the cache's buffer, which ends at code position ``spec.end``."""
    prefix_len = state.cache.capacity - spec.end - spec.slack

    def step(_, state: DecodeState) -> DecodeState:
        ids_BK, rng = _sample(state, pattern_BKT, sampling, spec)
        tokens = jax.lax.dynamic_update_index_in_dim(state.tokens_BKT, ids_BK, state.step, axis=2)
        logits, cache = _run(decoder_params, spec, ids_BK[:, :, None], state.cache, prefix_len + state.step)
        return DecodeState(state.step + 1, tokens, cache, logits, rng)

    # A traced trip count makes this a while loop; a Python int, a scan (same cost per step, measured on XLA:CPU).
    return jax.lax.fori_loop(0, num_steps, step, state)


def seal(state: DecodeState, length: int) -> DecodeState:
    """The next phase's cache: the full buffer becomes a read-only context :class:`Segment` (its values transposed
    once, as a segment keeps them) and a buffer of ``length`` positions follows it.

    The new buffer is the old one's first ``length`` positions (padded if longer), not zeros: a step writes its
    position before any query can see it (the mask), so what it held is never read, and an array derived from the
    old buffer keeps its placement on a mesh (rows over ``data``, heads over ``model``), where fresh zeros would be
    placed by XLA's guess."""
    cache = state.cache

    def reused(x):
        axis = x.ndim - 2  # (L, B, N, S, H) or (B, N, S, H)
        part = jax.lax.slice_in_dim(x, 0, min(length, x.shape[axis]), axis=axis)
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, length - part.shape[axis])
        return jnp.pad(part, pad)

    sealed = Segment(cache.k, _transposed(cache.v))
    k, v = (jax.tree_util.tree_map(reused, part) for part in (cache.k, cache.v))
    return state._replace(cache=cache._replace(k=k, v=v, context=(*cache.context, sealed)))


def phase_ends(first: int, max_length: int, phase_length: int) -> tuple[int, ...]:
    """Where the KV cache's writable buffer ends in each phase of a loop from code position ``first`` (the prompt's
    length) to ``max_length``, as code positions; the last is ``max_length``.

    A step attends to every position of the buffer, written or not (static shapes; masked), so one buffer for the
    whole loop makes every step read ``max_length`` positions of keys and values: at 30 s (1500 steps) that is more
    than the weights at batch 4 and up. In phases, each step reads what is written plus the rest of its own
    phase's buffer: the steps that run the decoder over positions ``[first, max_length - 1)`` are split into
    ``ceil(n / phase_length)`` equal phases (0: one phase), and between two phases :func:`seal` turns the full
    buffer into read-only context. Each phase is one more compiled step program, so phases are long
    (:data:`PHASE_LENGTH`)."""
    forwards = max_length - 1 - first
    if phase_length <= 0 or forwards <= phase_length:
        return (max_length,)
    n = -(-forwards // phase_length)
    return tuple(first + -(-forwards * i // n) for i in range(1, n)) + (max_length,)


# Positions per phase of the KV cache (:func:`phase_ends`). A phase costs one compiled step program (2-5 s cold on
# a 2-core CPU, once per machine with the compilation cache) and saves, per step, the unwritten positions of every
# later phase. 1024: a loop of more than 1024 steps splits into phases of more than 512 positions each, which keeps
# every (row, head) keys and values matrix above XLA:CPU's one-thread matrix-vector size (:func:`buffer_slack`):
# 1500 steps in 2 phases of 750 ran 8.7% (batch 4) and 3.3% (batch 1) faster than one buffer, 3 phases of 500 no
# faster (benchmarks/NOTES.md #27).
PHASE_LENGTH = 1024

# XLA:CPU (jax 0.10) runs a matrix-vector product over a matrix of up to this many elements on one thread, and a
# larger one on all cores: a step's attention over a (row, head) matrix of 512 x 64 keys reads at ~32 GB/s on the
# 2-core machines, over 513 x 64 at ~47 GB/s (benchmarks/NOTES.md #27).
ONE_THREAD_GEMV = 32768


def buffer_slack(positions: int, head_dim: int) -> int:
    """Unwritten positions to add after a KV cache buffer of ``positions`` positions (the loop's last or only one;
    masked, so the numbers are unchanged): on CPU, a buffer just under XLA:CPU's one-thread matrix-vector size is
    padded past it, where reading 14% more at most runs on every core. 0 elsewhere (other backends, other sizes)."""
    threaded = ONE_THREAD_GEMV // head_dim + 1
    if jax.default_backend() != "cpu" or not threaded * 7 // 8 <= positions < threaded:
        return 0
    return threaded - positions


def _finish(state: DecodeState, pattern_BKT, sampling, spec: LoopSpec):
    """The last position needs a sample but no forward pass after it."""
    ids_BK, _ = _sample(state, pattern_BKT, sampling, spec)
    return jax.lax.dynamic_update_index_in_dim(state.tokens_BKT, ids_BK, state.step, axis=2)


def _steps_spec(spec: LoopSpec) -> LoopSpec:
    """The spec the steps compile under: ``shared_uncond`` and ``common_prefix`` only change the prefill; the steps
    follow the cache it builds (its shapes are part of their compiled key), so windows whose caches have the same
    structure run the same step programs. ``phase_length`` only plans the phases (each phase's step program has its
    ``buffer_end``)."""
    return dataclasses.replace(spec, shared_uncond=False, common_prefix=0, phase_length=0)


def _spec(
    config,
    max_length,
    do_sample,
    top_k,
    use_top_p,
    use_cfg,
    shared_uncond=False,
    common_prefix=0,
    phase_length=None,
) -> LoopSpec:
    return LoopSpec(
        config,
        int(max_length),
        bool(do_sample),
        int(top_k),
        bool(use_top_p),
        bool(use_cfg),
        bool(shared_uncond),
        int(common_prefix),
        int(PHASE_LENGTH if phase_length is None else phase_length),
    )


def _phases(spec: LoopSpec, first: int, in_front: int) -> tuple[LoopSpec, list[LoopSpec]]:
    """The prefill's spec and each phase's step spec (:func:`phase_ends`); ``phase_length`` only plans them, so it
    is left out of every compiled program's key. ``in_front``: the positions the prefill's buffer holds in front of
    code position 0 (:func:`_buffer_prefix`); with the phases they size the last buffer, and so its slack
    (:func:`buffer_slack`)."""
    ends = phase_ends(first, spec.max_length, spec.phase_length)
    last = in_front + ends[0] if len(ends) == 1 else ends[-1] - ends[-2]
    slack = buffer_slack(last, spec.config.head_dim)
    steps = _steps_spec(spec)
    prefill = dataclasses.replace(spec, phase_length=0, buffer_end=ends[0], slack=slack if len(ends) == 1 else 0)
    phases = [dataclasses.replace(steps, buffer_end=e, slack=slack if e == ends[-1] else 0) for e in ends]
    return prefill, phases


def _plan(spec: LoopSpec, prefix_BPD, prompt_BKQ) -> tuple[LoopSpec, list[LoopSpec]]:
    """:func:`_phases` for these conditions and prompt."""
    B, _, first = prompt_BKQ.shape
    return _phases(spec, first, _buffer_prefix(spec, as_conditions(prefix_BPD).prefix_length, B))


def _spans(phases: list[LoopSpec], first: int, stop: int):
    """Each phase that runs before ``stop``: ``(spec, seal, start, last)``, the decoder running the steps over
    positions ``[start, last)`` after :func:`seal` gave the cache a buffer of ``seal`` positions, its slack
    included (None: the prefill's buffer)."""
    start = first
    for i, phase in enumerate(phases):
        last = min(phase.end, stop - 1)
        if last <= start:
            return
        yield phase, (phase.end - phases[i - 1].end + phase.slack if i else None), start, last
        start = last


def common_prefix_length(conditions) -> int:
    """Host check: how many leading positions of MusicGen Melody's prefix ``(B', P, D)`` are the same in every row
    (what :func:`decode`'s ``common_prefix`` may be); 0 for one row, or for conditions without a prefix. A text-only
    batch gives the chroma length: every row's chroma is the null chroma, and the causal prefix's keys and values
    there depend on nothing else."""
    prefix = as_conditions(conditions).prefix_BPD
    if prefix is None or prefix.shape[0] < 2 or prefix.shape[1] == 0:
        return 0
    x = np.asarray(prefix)
    same_P = (x == x[:1]).all(axis=(0, 2))
    return int(same_P.shape[0] if same_P.all() else np.argmin(same_P))


def uncond_rows_shared(conditions, prompt_BKQ) -> bool:
    """Whether the unconditional half of CFG conditions ``[cond; uncond]`` (see :func:`as_conditions`) holds one row
    repeated and every prompt row is the same (host check; what :func:`decode`'s ``shared_uncond`` requires). True
    for generate's own conditions."""
    conditions = as_conditions(conditions)
    prompt = np.asarray(prompt_BKQ)
    B = prompt.shape[0]
    parts = [x for x in conditions if x is not None]
    if B < 2 or not parts or any(x.shape[0] != 2 * B for x in parts) or not (prompt == prompt[:1]).all():
        return False
    return all(bool((np.asarray(x[B:]) == np.asarray(x[B : B + 1])).all()) for x in parts)


def prefix_sharing(conditions, prompt_BKQ, use_cfg: bool) -> dict:
    """Host check: what the rows of these conditions share, as :func:`decode`'s ``shared_uncond`` and
    ``common_prefix`` (one device; on a mesh the rows stay whole, as they split evenly there)."""
    return {
        "shared_uncond": bool(use_cfg) and uncond_rows_shared(conditions, prompt_BKQ),
        "common_prefix": common_prefix_length(conditions),
    }


@functools.partial(
    jax.jit,
    static_argnames=(
        "config",
        "max_length",
        "do_sample",
        "top_k",
        "use_top_p",
        "use_cfg",
        "shared_uncond",
        "common_prefix",
        "phase_length",
    ),
)
def decode(
    decoder_params,
    prefix_BPD,
    prompt_BKQ,
    pattern_BKT,
    rng,
    sampling: SamplingParams,
    *,
    config: DecoderConfig,
    max_length: int,
    do_sample: bool,
    top_k: int,
    use_top_p: bool,
    use_cfg: bool,
    shared_uncond: bool = False,
    common_prefix: int = 0,
    phase_length: int | None = None,
):
    """Generates the full delayed code buffer ``(B, K, max_length)`` int32, as one compiled program.

    Args:
      decoder_params: the ``decoder`` parameter subtree.
      prefix_BPD: the conditions (``B' = 2B`` rows, ``[cond; uncond]``, when ``use_cfg``): MusicGen Melody's prefix
        ``(B', P, D)``, a :class:`~musicgen_jax.decoder.Conditions` (plain MusicGen's cross-attention states), or
        None.
      prompt_BKQ: int ``(B, K, Q)`` the positions already fixed by BOS/prompt (from :func:`build_delay_pattern`).
      pattern_BKT: int ``(B, K, max_length)`` the delay pattern (-1 where codes are generated).
      rng: a PRNG key, or one per row ``(B, 2)`` (:func:`row_keys`; unused when greedy).
      sampling: temperature / top_p / guidance_scale as arrays, scalars or one per row.
      shared_uncond: the unconditional rows of the prefix are one row repeated and all prompt rows are equal
        (:func:`uncond_rows_shared`): the prefill then runs B + 1 rows instead of 2B, and the steps read the
        unconditional prefix once. Same codes.
      common_prefix: the first ``common_prefix`` prefix positions are the same in every row
        (:func:`common_prefix_length`): the prefill runs them as one row, and the steps read them once. Same codes.
      phase_length: the KV cache's buffer grows in phases of about that many positions (:func:`phase_ends`; 0: one
        buffer of ``max_length``; None: :data:`PHASE_LENGTH`), so that a step reads little more of it than is
        written. Same codes.
    """
    first = prompt_BKQ.shape[2]
    if max_length <= first:
        raise ValueError(f"max_length {max_length} leaves nothing to generate after {first} positions")
    spec = _spec(config, max_length, do_sample, top_k, use_top_p, use_cfg, shared_uncond, common_prefix, phase_length)
    spec, phases = _plan(spec, prefix_BPD, prompt_BKQ)
    state = _prefill(decoder_params, prefix_BPD, prompt_BKQ, rng, spec)
    for phase, length, start, last in _spans(phases, first, max_length):
        if length is not None:
            state = seal(state, length)
        state = _advance(decoder_params, state, pattern_BKT, sampling, phase, last - start)
    return _finish(state, pattern_BKT, sampling, phases[-1])


_prefill_jit = jax.jit(_prefill, static_argnames=("spec",))


def prefill(decoder_params, prefix_BPD, prompt_BKQ, rng, **static) -> DecodeState:
    """:func:`decode`'s first program alone (same arguments, less the pattern and the sampling knobs): the loop's
    state after the prefill, its KV cache (shared context included) ready for the first step. For benchmarks and
    tools that time or inspect the steps; its buffer is the first phase's (``phase_length=0``: all of
    ``max_length``)."""
    spec, _ = _plan(_spec(**static), prefix_BPD, prompt_BKQ)
    return _prefill_jit(decoder_params, prefix_BPD, prompt_BKQ, rng, spec=spec)


_advance_jit = jax.jit(_advance, static_argnames=("spec",), donate_argnames=("state",))
_seal_jit = jax.jit(seal, static_argnames=("length",), donate_argnames=("state",))
_finish_jit = jax.jit(_finish, static_argnames=("spec",))


# Compile time, measured on every call: XLA reports each trace, lowering and backend compile through jax.monitoring.
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_clock = [0.0]


def _on_event(event: str, duration: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _compile_clock[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_event)


def compile_clock() -> float:
    """Seconds this process has spent tracing, lowering and compiling XLA programs so far (read it twice)."""
    return _compile_clock[0]


class _Phase:
    """Wall seconds of a block, split into compile and run (the run part waits for the device)."""

    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start, self.compile_start = time.perf_counter(), _compile_clock[0]
        return self

    def __exit__(self, *exc):
        compiled = _compile_clock[0] - self.compile_start
        self.timings["compile_seconds"] = self.timings.get("compile_seconds", 0.0) + compiled
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start - compiled
        return False


def run_loop(
    decoder_params,
    prefix_BPD,
    prompt_BKQ,
    pattern_BKT,
    rng,
    sampling: SamplingParams,
    *,
    chunk: int | None = None,
    on_chunk=None,
    stop: int | None = None,
    **static,
) -> tuple[jax.Array, dict]:
    """:func:`decode` as three compiled programs (prefill, the steps, the last sample), timed.

    ``chunk``: run the steps as chunks of that many steps, calling ``on_chunk(steps_done, steps_total)`` on the host
    between chunks (a progress bar; one host sync per chunk, none per step). Same tokens as :func:`decode`.
    ``stop``: generate buffer positions up to ``stop`` only (default ``max_length``); the buffer and the cache keep
    ``max_length`` positions, so a shorter run (long-form generation's last window) reuses the programs compiled
    for a full one. Positions from ``stop`` on are left as zeros.
    Each program compiles once per shape and static arguments (jit's cache); the step count is not one of them, so
    any ``chunk`` and any ``stop`` run the same step programs (one per phase of the cache, :func:`phase_ends`; a
    chunk ends at a phase's end).

    Returns ``(tokens_BKT, timings)``: ``prefill_seconds``, ``decode_seconds`` (the steps) and ``compile_seconds``
    (tracing, lowering and XLA compilation during this call, excluded from the other two).
    """
    spec = _spec(**static)
    stop = spec.max_length if stop is None else int(stop)
    if stop <= prompt_BKQ.shape[2]:
        raise ValueError(f"max_length {stop} leaves nothing to generate after {prompt_BKQ.shape[2]} positions")
    if stop > spec.max_length:
        raise ValueError(f"stop {stop} is past the buffer's max_length {spec.max_length}")
    first = prompt_BKQ.shape[2]
    total = stop - first
    spec, phases = _plan(spec, prefix_BPD, prompt_BKQ)
    timings: dict = {"compile_seconds": 0.0}
    with _Phase(timings, "prefill_seconds"):
        state = jax.block_until_ready(_prefill_jit(decoder_params, prefix_BPD, prompt_BKQ, rng, spec=spec))
    with _Phase(timings, "decode_seconds"):
        size = total if chunk is None else chunk
        for phase, length, position, last in _spans(phases, first, stop):
            if length is not None:
                # the last phase's steps first: the next phase's programs may compile now, and a compile that
                # overlapped the running steps would be subtracted from their time (and slow them down)
                jax.block_until_ready(state.step)
                state = _seal_jit(state, length=length)
            while position < last:
                n = min(size, last - position)
                state = _advance_jit(decoder_params, state, pattern_BKT, sampling, spec=phase, num_steps=np.int32(n))
                position += n
                if on_chunk is not None:
                    jax.block_until_ready(state.step)
                    on_chunk(position + 1 - first, total)
        # Wait for the steps before the last program is dispatched: its first-call compile would otherwise overlap
        # them and be subtracted from them.
        jax.block_until_ready(state.step)
        tokens = jax.block_until_ready(_finish_jit(state, pattern_BKT, sampling, spec=phases[-1]))
    return tokens, timings
