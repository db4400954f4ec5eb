"""The JAX decode step taken apart, and its hardware floor.

From ``generate``'s own stats (median over the repeats): the prefill and the scan step ``decode_seconds /
(steps - 1)``. Jitted here on their own, with public pieces of the library (on the ``Conditions`` generate builds:
MusicGen Melody's prefix, or plain MusicGen's cross-attention text states): one cached ``Decoder`` forward step,
the sampling head (``sampling.guide`` + ``sampling.choose``), and the GEMV line: plain GEMVs over the same weight
matrices, unstacked (what one step must at least read). The floor: ``max(bytes / read bandwidth, FLOPs / matmul
throughput)`` for the bytes and FLOPs one step must move and do.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from benchmarks.bench.probes import median, time_call
from benchmarks.bench.specs import GUIDANCE, TOP_K


def generation_conditions(model, ids, mask):
    """The :class:`~musicgen_jax.decoder.Conditions` generate builds for this text (CFG, no melody): MusicGen Melody's
    conditioning prefix ``(2B, P, D)``, or plain MusicGen's cross-attention text states ``(2B, W, D)`` and mask."""
    import jax.numpy as jnp

    from musicgen_jax import core

    text = model.encode_text(ids, mask)
    return core.generation_conditions_jit(model.params, model.config, text, jnp.asarray(mask), None, True)


def prefix_sharing(model, conditions, batch: int) -> dict:
    """What generate's prefill shares between the rows of these conditions on one device
    (``sampling.prefix_sharing``: one unconditional row, the common prefix positions)."""
    from musicgen_jax import sampling

    dec = model.config.decoder
    prompt = np.full((batch, dec.num_codebooks, 1), dec.bos_token_id, np.int64)
    return sampling.prefix_sharing(conditions, prompt, use_cfg=True)


def time_forward_step(model, batch: int, total: int, n: int, conditions):
    """Seconds of ``n`` cached one-position ``Decoder`` passes over generate's ``2 * batch`` CFG rows (BOS ids), in
    the cache generate's prefill builds for ``conditions`` (its shared context included, on one device) with a
    buffer for ``total`` positions, at positions after the prefill's; returns (times, last logits, bytes of the
    cache: the buffer's capacity and the shared context, plain MusicGen's cached text keys and values too)."""
    import jax
    import jax.numpy as jnp

    from musicgen_jax import sampling
    from musicgen_jax.decoder import Decoder, is_scanned

    dec, params = model.config.decoder, model.params["decoder"]
    decoder = Decoder(dec, scan_layers=is_scanned(params))
    devices = len(jax.tree_util.tree_leaves(params)[0].sharding.device_set)
    sharing = prefix_sharing(model, conditions, batch) if devices == 1 else {}
    prompt = jnp.full((batch, dec.num_codebooks, 1), dec.bos_token_id, jnp.int32)
    # one buffer for all ``total`` positions (no cache phases): the step at the end of a run, its most to read
    static = dict(config=dec, max_length=total, do_sample=False, top_k=0, use_top_p=False, use_cfg=True, phase_length=0)
    state = sampling.prefill(params, conditions, prompt, jax.random.PRNGKey(0), **static, **sharing)
    cache = jax.block_until_ready(state.cache)
    cache_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(cache))
    ids = jnp.full((2 * batch, dec.num_codebooks, 1), dec.bos_token_id, jnp.int32)
    # (a buffer with slack, sampling.buffer_slack, starts the steps that many positions later: every position is
    # read all the same)
    index = cache.capacity - total + 1

    @functools.partial(jax.jit, donate_argnums=(2,))
    def forward(params, ids, cache, index):
        logits, cache = decoder.apply({"params": params}, ids, None, cache=cache, cache_index=index)
        return logits[:, :, -1].astype(jnp.float32), cache

    logits, cache = jax.block_until_ready(forward(params, ids, cache, index))  # compile
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        logits, cache = jax.block_until_ready(forward(params, ids, cache, index + 1 + i))
        times.append(time.perf_counter() - t0)
    return times, logits, cache_bytes


def time_sampling_head(logits, num_codebooks: int, n: int) -> list[float]:
    """Seconds of ``n`` calls of the sampling head on logits ``(2B, K, V)``: CFG + top-k + draw, as generate's."""
    import jax
    import jax.numpy as jnp

    from musicgen_jax import sampling

    knobs = sampling.SamplingParams(jnp.float32(1.0), jnp.float32(1.0), jnp.float32(GUIDANCE))

    @jax.jit
    def head(logits, rng):
        guided = sampling.guide(logits, knobs.guidance_scale)
        flat = guided.reshape(guided.shape[0] * num_codebooks, -1)
        return sampling.choose(flat, knobs, rng, do_sample=True, top_k=TOP_K, use_top_p=False)

    rng = jax.random.PRNGKey(0)
    time_call(head, logits, rng)  # compile
    return [time_call(head, logits, rng) for _ in range(n)]


def time_layer_gemvs(model, rows: int, n: int, one_device: bool = False) -> tuple[list[float], int]:
    """Seconds of ``n`` rounds of plain GEMVs ``W (out, in) @ x.T (in, rows)`` (the form and the layout the step's
    few-row products use, ``musicgen_jax.layers.linear``) over every layer matrix a step reads (QKV, out, up, down;
    plain MusicGen also the cross-attention's query and out, not its key/value projection, which only the prefill
    runs), each its own buffer, placed as the model's parameters are (over its devices when it has several) or, with
    ``one_device``, on JAX's first device; and the bytes of those matrices."""
    import jax
    import jax.numpy as jnp

    from musicgen_jax.decoder import is_scanned, unstack_layers

    dec, params = model.config.decoder, model.params["decoder"]
    layers = unstack_layers(params) if is_scanned(params) else params
    D, mats = dec.hidden_size, []
    for i in range(dec.num_hidden_layers):
        layer = layers[f"layers_{i}"]
        step_mats = [layer["attn"]["qkv"], layer["attn"]["out"], layer["mlp"]["up"], layer["mlp"]["down"]]
        if "cross_attn" in layer:
            step_mats[2:2] = [layer["cross_attn"]["q"], layer["cross_attn"]["out"]]
        for w in step_mats:
            w = jax.device_put(np.asarray(w), jax.devices()[0]) if one_device else w
            # (out, in) kernels: qkv (3, N, H, D), up (F, D), cross q (N, H, D) read D; out (D, N, H), down (D, F)
            mats.append(jnp.array(w).reshape(D, -1) if w.shape[0] == D else jnp.array(w).reshape(-1, D))
    x = jnp.ones((rows, max(m.shape[1] for m in mats)), mats[0].dtype)
    if one_device:
        x = jax.device_put(x, jax.devices()[0])
    gemvs = jax.jit(lambda x, mats: sum(jnp.sum(w @ x[:, : w.shape[1]].T) for w in mats))
    time_call(gemvs, x, mats)  # compile
    times = [time_call(gemvs, x, mats) for _ in range(n)]
    return times, sum(m.nbytes for m in mats)


def prefill_only_bytes(model) -> int:
    """Bytes of the decoder weights no decode step reads: plain MusicGen's cross-attention key/value projections
    (the text's keys and values are computed once, at the prefill, and read from the cache); 0 for melody."""
    import jax

    from musicgen_jax.decoder import is_scanned

    params = model.params["decoder"]
    layers = [params["layers"]] if is_scanned(params) else [v for k, v in params.items() if k.startswith("layers_")]
    kv = [layer["cross_attn"]["kv"] for layer in layers if "cross_attn" in layer]
    return sum(x.nbytes for x in jax.tree_util.tree_leaves(kv))


def step_work(model, rows: int, prefix_len: int, prompt_len: int, total: int, cross_len: int = 0) -> dict:
    """What one step must do: read every decoder weight once (the embedding only for the K rows it looks up; plain
    MusicGen: not the cross-attention key/value projections) and the keys/values of the positions filled so far (on
    average the prefix + half the generated steps; plain MusicGen: plus the ``cross_len`` text positions' cached
    cross-attention keys/values); FLOPs: 2 per weight per row for the matmuls, plus the attention over those
    positions."""
    import jax

    dec, params = model.config.decoder, model.params["decoder"]
    weight_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
    embed = params["embed"]
    itemsize = np.dtype(embed.dtype).itemsize
    unread = prefill_only_bytes(model) if cross_len else 0
    read_bytes = weight_bytes - embed.nbytes - unread + dec.num_codebooks * embed.shape[-1] * itemsize
    mean_filled = prefix_len + prompt_len + (total - prompt_len) / 2
    attended = mean_filled + cross_len  # self-attention keys, then (plain MusicGen) the text's
    kv_needed = 2 * dec.num_hidden_layers * rows * attended * dec.hidden_size * itemsize
    matmul_params = (weight_bytes - embed.nbytes - unread) / itemsize
    flops = 2 * rows * matmul_params + 4 * rows * dec.num_hidden_layers * attended * dec.hidden_size
    out = {
        "decoder_weight_bytes": weight_bytes,
        "step_read_bytes": read_bytes + kv_needed,
        "step_kv_needed_bytes": kv_needed,
        "step_flops": flops,
    }
    if cross_len:
        out["prefill_only_weight_bytes"] = unread
    return out


def decode_step_breakdown(model, conditions, batch: int, steps: int, jax_rows: list[dict], n: int = 8) -> dict:
    """The breakdown of one decode step of a generate of ``steps`` new tokens (``jax_rows``: its timed repeats), on
    ``conditions`` as :func:`generation_conditions` gives them (a melody prefix array is accepted too)."""
    import jax

    from musicgen_jax import sampling
    from musicgen_jax.decoder import is_scanned

    conditions = sampling.as_conditions(conditions)
    rows, P = conditions.rows, conditions.prefix_length
    W = 0 if conditions.cross_BWD is None else conditions.cross_BWD.shape[1]  # plain MusicGen's text positions
    S, total = 1, steps + 1  # BOS, then the generated positions
    prefill_s = median([r["prefill"] for r in jax_rows])
    scan_step_s = median([r["scan"] / max(steps - 1, 1) for r in jax_rows])
    forward_times, logits, kv_bytes = time_forward_step(model, batch, total, n, conditions)
    head_times = time_sampling_head(logits, model.config.decoder.num_codebooks, n)
    gemv_times, mat_bytes = time_layer_gemvs(model, rows, n)
    devices = len(jax.tree_util.tree_leaves(model.params["decoder"])[0].sharding.device_set)
    one_device_times = time_layer_gemvs(model, rows, n, one_device=True)[0] if devices > 1 else gemv_times
    work = step_work(model, rows, P, S, total, W)
    moved = work["decoder_weight_bytes"] - work.get("prefill_only_weight_bytes", 0) + kv_bytes
    forward_s, gemv_s = median(forward_times), median(gemv_times)
    out = {
        "prefill_s": prefill_s,
        "scan_step_s": scan_step_s,
        "forward_step_s": forward_s,
        "forward_step_min_s": min(forward_times),
        "sampling_head_s": median(head_times),
        "gemv_floor_s": gemv_s,
        "gemv_floor_min_s": min(gemv_times),
        "gemv_floor_GBps": mat_bytes / gemv_s / 1e9,
        "devices": devices,
        "gemv_one_device_s": median(one_device_times),
        "layer_matrix_bytes": mat_bytes,
        "kv_cache_bytes": kv_bytes,
        "prefix_len": P,
        **{f"prefill_{k}": v for k, v in prefix_sharing(model, conditions, batch).items()},
        "cache_capacity": P + total,
        "rows": rows,
        "scan_step_effective_GBps": moved / scan_step_s / 1e9,
        "layout": "scanned" if is_scanned(model.params["decoder"]) else "unrolled",
        "forward_step_effective_GBps": moved / forward_s / 1e9,
        **work,
    }
    if W:
        out["cross_attention_text_len"] = W
    return out


def hardware_floor(breakdown: dict, bandwidth: dict, matmul: dict) -> dict:
    """One decode step's floor on JAX's device: max(bytes it must read / read bandwidth, FLOPs / matmul throughput),
    and the measured step as a fraction of it (1.0 = at the hardware limit). On an accelerator the bytes term is the
    HBM weight-read floor the targets use (``scan_step_over_bytes_floor``)."""
    bytes_s = breakdown["step_read_bytes"] / (bandwidth["read_GBps"] * 1e9)
    flops_s = breakdown["step_flops"] / (matmul["jax_matmul_GFLOPs"] * 1e9)
    floor = max(bytes_s, flops_s)
    return {
        "read_bandwidth_GBps": bandwidth["read_GBps"],
        "matmul_GFLOPs": matmul["jax_matmul_GFLOPs"],
        "bytes_floor_s": bytes_s,
        "flops_floor_s": flops_s,
        "floor_s": floor,
        "bound": "memory" if bytes_s >= flops_s else "compute",
        "scan_step_fraction_of_floor": floor / breakdown["scan_step_s"],
        "scan_step_over_bytes_floor": breakdown["scan_step_s"] / bytes_s,
        "gemv_fraction_of_floor": floor / breakdown["gemv_floor_s"],
    }
