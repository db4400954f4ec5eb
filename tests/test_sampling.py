"""The generation loop's parts against HF: delay pattern, logits processors, KV cache consistency, greedy codes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    ClassifierFreeGuidanceLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from musicgen_jax import MusicgenMelodyForConditionalGeneration, sampling
from musicgen_jax.decoder import Decoder, KVCache, stack_layers, unstack_layers
from tests.helpers import hf_generate, report, save_hf_melody


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    path, hf = save_hf_melody(tmp_path_factory.mktemp("mono"))
    return hf, MusicgenMelodyForConditionalGeneration.from_pretrained(path)


@pytest.fixture(scope="module")
def stereo(tmp_path_factory):
    path, hf = save_hf_melody(
        tmp_path_factory.mktemp("stereo"),
        decoder={"audio_channels": 2, "num_codebooks": 8},
        audio={"audio_channels": 1},
    )
    return hf, MusicgenMelodyForConditionalGeneration.from_pretrained(path)


@pytest.mark.parametrize("max_length", [3, 6, 7, 12])
@pytest.mark.parametrize("prompt_len", [1, 4])
@pytest.mark.parametrize("which", ["mono", "stereo"])
def test_delay_pattern_matches_hf(request, which, prompt_len, max_length):
    hf, ours = request.getfixturevalue(which)
    K, pad = ours.config.decoder.num_codebooks, ours.config.decoder.pad_token_id
    rng = np.random.default_rng(prompt_len * 100 + max_length)
    ids = rng.integers(0, pad, (2 * K, prompt_len))
    ids[:, 0] = pad
    ref_ids, ref_pattern = hf.decoder.build_delay_pattern_mask(torch.from_numpy(ids), pad, max_length)
    got_ids, got_pattern = sampling.build_delay_pattern(
        ids.reshape(2, K, -1), pad, max_length, ours.config.decoder.audio_channels
    )
    np.testing.assert_array_equal(got_pattern.reshape(2 * K, -1), ref_pattern.numpy())
    np.testing.assert_array_equal(got_ids.reshape(2 * K, -1), ref_ids.numpy())
    # applying the pattern to arbitrary ids, as HF does before every forward pass
    full = rng.integers(0, pad, (2 * K, max_length))
    ref_applied = hf.decoder.apply_delay_pattern_mask(torch.from_numpy(full), ref_pattern).numpy()
    got_applied = sampling.apply_delay_pattern(full.reshape(2, K, -1), got_pattern).reshape(2 * K, -1)
    np.testing.assert_array_equal(got_applied, ref_applied)


def test_revert_delay_pattern_matches_hf_regrouping(mono):
    hf, ours = mono
    K, pad = 4, 16
    ids = np.full((3, K, 1), pad)
    _, pattern = sampling.build_delay_pattern(ids, pad, 10)
    filled = sampling.apply_delay_pattern(np.random.default_rng(0).integers(0, pad, (3, K, 10)), pattern)
    flat = torch.from_numpy(filled.reshape(3 * K, -1))
    ref = flat[flat != pad].reshape(3, K, -1).numpy()  # the lines HF's generate runs
    got = sampling.revert_delay_pattern(filled, pad)
    np.testing.assert_array_equal(got, ref)
    assert got.shape == (3, K, 10 - K)


@pytest.mark.parametrize("top_k", [1, 5, 40, 50])
def test_top_k_matches_hf(top_k):
    scores = np.random.default_rng(top_k).standard_normal((6, 40)).astype(np.float32)
    scores[0, :3] = scores[0, 3]  # ties at the threshold are kept by HF
    ref = TopKLogitsWarper(top_k)(None, torch.from_numpy(scores)).numpy()
    np.testing.assert_array_equal(np.asarray(sampling.top_k_filter(jnp.asarray(scores), top_k)), ref)


def test_top_k_matches_hf_on_ties_zeros_and_infinities():
    """The k-th largest is found by counting over the scores' bit patterns (not a sort): HF's filter on scores full
    of ties, signed zeros (equal to each other), negative and positive infinities and huge or tiny magnitudes, at
    the bench's size (2048 codes, k = 250) too, jitted."""
    rng = np.random.default_rng(7)
    filter_jit = jax.jit(sampling.top_k_filter, static_argnums=1)
    for trial in range(30):
        V = 2048 if trial % 10 == 0 else int(rng.choice([1, 2, 7, 40, 299]))
        k = 250 if V == 2048 else int(rng.integers(1, V + 1))
        scores = (rng.standard_normal((3, V)) * rng.choice([1e-30, 1.0, 1e30])).astype(np.float32)
        if trial % 2:
            scores = (np.round(scores * 2) / 2).astype(np.float32)  # many ties, and -0.0 next to 0.0
        if trial % 3 == 0:
            scores[:, ::7] = -np.inf
        if trial % 4 == 0:
            scores[:, ::11] = np.inf
        if trial % 5 == 0:
            scores[:, ::3], scores[:, 1::5] = -0.0, 0.0
        ref = TopKLogitsWarper(k)(None, torch.from_numpy(scores)).numpy()
        np.testing.assert_array_equal(np.asarray(filter_jit(jnp.asarray(scores), k)), ref, err_msg=f"{V=} {k=}")


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.999])
def test_top_p_matches_hf(top_p):
    scores = 3 * np.random.default_rng(int(top_p * 1000)).standard_normal((6, 40)).astype(np.float32)
    ref = TopPLogitsWarper(top_p)(None, torch.from_numpy(scores)).numpy()
    got = np.asarray(sampling.top_p_filter(jnp.asarray(scores), top_p))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    np.testing.assert_array_equal(got[~np.isinf(got)], ref[~np.isinf(ref)])


def test_guidance_and_temperature_match_hf():
    scores = np.random.default_rng(1).standard_normal((8, 40)).astype(np.float32)
    ref = TemperatureLogitsWarper(0.7)(
        None, ClassifierFreeGuidanceLogitsProcessor(3.0)(torch.zeros((4, 1)), torch.from_numpy(scores))
    )
    got = sampling.guide(jnp.asarray(scores), 3.0) / 0.7
    report("cfg + temperature", got, ref.numpy())
    np.testing.assert_allclose(np.asarray(got), ref.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scanned", [True, False], ids=["scanned", "unrolled"])
@pytest.mark.parametrize("which", ["mono", "stereo"])
def test_prefill_then_steps_equals_full_forward(request, which, scanned):
    """MaxText-style autoregression test: cached decoding reproduces one full forward pass position by position,
    in either parameter/cache layout; the full forward of the other layout agrees too."""
    _, ours = request.getfixturevalue(which)
    cfg = ours.config.decoder
    rng = np.random.default_rng(3)
    B, P, T, prefill = 2, 5, 9, 3
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size + 1, (B, cfg.num_codebooks, T)))
    prefix = jnp.asarray(rng.standard_normal((B, P, cfg.hidden_size)), jnp.float32)
    layout = stack_layers if scanned else unstack_layers
    params = {"params": layout(ours.params["decoder"])}
    other = {"params": (unstack_layers if scanned else stack_layers)(ours.params["decoder"])}
    decoder = Decoder(cfg, scan_layers=scanned)
    full, _ = decoder.apply(params, ids, prefix)
    full_other, _ = Decoder(cfg, scan_layers=not scanned).apply(other, ids, prefix)
    errs = [report(f"{which} scanned vs unrolled forward", full_other, full)]
    cache = KVCache.zeros(cfg, B, P + T + 4, scanned=scanned)  # spare capacity must stay invisible
    logits, cache = decoder.apply(params, ids[:, :, :prefill], prefix, cache=cache, cache_index=0)
    errs.append(report(f"{which} prefill", logits, full[:, :, : P + prefill]))
    for t in range(prefill, T):
        logits, cache = decoder.apply(params, ids[:, :, t : t + 1], None, cache=cache, cache_index=P + t)
        errs.append(float(np.abs(np.asarray(logits[:, :, 0]) - np.asarray(full[:, :, P + t])).max()))
    print(f"[parity] {which} ({'scanned' if scanned else 'unrolled'}) cached steps vs full forward: {max(errs):.3e}")
    assert max(errs) <= 1e-5


def _greedy_codes(ours, prefix, max_new, prompt=None, seed=0, do_sample=False, top_k=0, top_p=1.0, temperature=1.0):
    cfg = ours.config.decoder
    B = prefix.shape[0]
    ids = np.full((B, cfg.num_codebooks, 1), cfg.pad_token_id) if prompt is None else prompt
    fixed, pattern = sampling.build_delay_pattern(ids, cfg.pad_token_id, max_new + ids.shape[-1], cfg.audio_channels)
    tokens = sampling.decode(
        ours.params["decoder"],
        jnp.asarray(prefix),
        jnp.asarray(fixed),
        jnp.asarray(pattern),
        jax.random.PRNGKey(seed),
        sampling.SamplingParams(jnp.float32(temperature), jnp.float32(top_p), jnp.float32(1.0)),
        config=cfg,
        max_length=max_new + ids.shape[-1],
        do_sample=do_sample,
        top_k=top_k,
        use_top_p=top_p < 1,
        use_cfg=False,
    )
    return sampling.revert_delay_pattern(np.asarray(tokens), cfg.pad_token_id)


@pytest.mark.parametrize("which", ["mono", "stereo"])
def test_greedy_codes_match_hf_generate(request, which):
    hf, ours = request.getfixturevalue(which)
    prefix = np.random.default_rng(5).standard_normal((2, 6, ours.config.decoder.hidden_size)).astype(np.float32)
    got = _greedy_codes(ours, prefix, 20)
    _, ref = hf_generate(hf, encoder_hidden_states=prefix, max_new_tokens=20, do_sample=False, guidance_scale=None)
    assert got.shape == ref.shape
    agreement = float((got == ref).mean())
    print(f"[parity] {which} greedy codes agreement with HF generate: {agreement:.4f} over {got.size} codes")
    assert agreement == 1.0


def test_same_seed_same_codes_different_seed_different_codes(mono):
    _, ours = mono
    prefix = np.random.default_rng(6).standard_normal((2, 4, 12)).astype(np.float32)
    a = _greedy_codes(ours, prefix, 16, seed=1, do_sample=True, top_k=8, top_p=0.9, temperature=1.3)
    b = _greedy_codes(ours, prefix, 16, seed=1, do_sample=True, top_k=8, top_p=0.9, temperature=1.3)
    c = _greedy_codes(ours, prefix, 16, seed=2, do_sample=True, top_k=8, top_p=0.9, temperature=1.3)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_chunked_decode_equals_one_program(mono):
    _, ours = mono
    cfg = ours.config.decoder
    prefix = jnp.asarray(np.random.default_rng(7).standard_normal((4, 5, 12)), jnp.float32)  # CFG: 2 x batch 2
    ids = np.full((2, cfg.num_codebooks, 1), cfg.pad_token_id)
    fixed, pattern = sampling.build_delay_pattern(ids, cfg.pad_token_id, 15, cfg.audio_channels)
    args = (
        ours.params["decoder"],
        prefix,
        jnp.asarray(fixed),
        jnp.asarray(pattern),
        jax.random.PRNGKey(3),
        sampling.SamplingParams(jnp.float32(1.1), jnp.float32(0.9), jnp.float32(3.0)),
    )
    static = dict(config=cfg, max_length=15, do_sample=True, top_k=6, use_top_p=True, use_cfg=True)
    whole = sampling.decode(*args, **static)
    seen = []
    chunked, timings = sampling.run_loop(*args, chunk=4, on_chunk=lambda d, t: seen.append((d, t)), **static)
    np.testing.assert_array_equal(np.asarray(chunked), np.asarray(whole))
    assert seen == [(5, 14), (9, 14), (13, 14), (14, 14)] and timings["compile_seconds"] > 0
    # A second call compiles nothing (jit's cache) and still splits its time into prefill and steps.
    again, timings = sampling.run_loop(*args, chunk=4, **static)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(whole))
    assert timings["compile_seconds"] == 0 and timings["prefill_seconds"] > 0 and timings["decode_seconds"] > 0


def _cfg_prefix(rng, B, P, C, D):
    """A CFG prefix ``(2B, P, D)``: B conditional rows, then B identical unconditional rows; its first C positions
    the same in every row."""
    cond = rng.standard_normal((B, P, D)).astype(np.float32)
    uncond = np.repeat(rng.standard_normal((1, P, D)).astype(np.float32), B, axis=0)
    prefix = np.concatenate([cond, uncond])
    prefix[:, :C] = prefix[:1, :C]
    return jnp.asarray(prefix)


def _full_forward(ours, rng, prefix, B, T, scanned):
    """Random codes ``(B, K, T)`` after BOS, the CFG rows ``(2B, K, T)``, the decoder in the layout, and the logits of
    one full forward over every row's prefix and codes ``(2B, K, P + T, V)``."""
    cfg = ours.config.decoder
    ids = rng.integers(0, cfg.vocab_size, (B, cfg.num_codebooks, T))
    ids[:, :, 0] = cfg.bos_token_id
    ids = jnp.asarray(ids, jnp.int32)
    params = (stack_layers if scanned else unstack_layers)(ours.params["decoder"])
    decoder = Decoder(cfg, scan_layers=scanned)
    rows = jnp.concatenate([ids, ids], axis=0)
    full, _ = decoder.apply({"params": params}, rows, prefix)
    return ids, rows, params, decoder, full


def _cfg_decoder(params, cfg, fixed, pattern, do_sample):
    """``sampling.decode`` under CFG over a 14-position buffer, greedy or sampled (top-k 6 + top-p), awaiting the
    prefix and the sharing flags."""
    return functools.partial(
        sampling.decode,
        params,
        prompt_BKQ=jnp.asarray(fixed),
        pattern_BKT=jnp.asarray(pattern),
        rng=jax.random.PRNGKey(4),
        sampling=sampling.SamplingParams(jnp.float32(1.2), jnp.float32(0.95), jnp.float32(3.0)),
        config=cfg,
        max_length=14,
        do_sample=do_sample,
        top_k=6 if do_sample else 0,
        use_top_p=do_sample,
        use_cfg=True,
    )


def test_phase_ends_split_the_steps_evenly():
    # the steps run the decoder over positions [first, max_length - 1); each phase's buffer ends at a position
    assert sampling.phase_ends(1, 14, 5) == (5, 9, 14)  # 12 forward positions: 3 phases of 4
    assert sampling.phase_ends(1, 14, 12) == (14,)  # they fit in one
    assert sampling.phase_ends(1, 14, 0) == (14,)  # 0: one phase
    assert sampling.phase_ends(3, 1503, 512) == (503, 1003, 1503)
    assert sampling.phase_ends(1, 1501, sampling.PHASE_LENGTH) == (751, 1501)  # 30 s: 2 phases of 750 positions
    assert sampling.phase_ends(1, 1025, sampling.PHASE_LENGTH) == (1025,)  # up to 1024 steps: one buffer
    ends = sampling.phase_ends(4, 30, 4)
    assert ends[-1] == 30 and all(b - a in (3, 4) for a, b in zip((4, *ends[:-1]), (*ends[:-1], 29), strict=True))


def _sampled_case(ours, scanned: bool):
    """The sampled CFG loop of the phase tests (3 rows, a 5-position prefix whose first 2 are common, 14 positions):
    ``(config, prefix, prompt, the decode partial, its codes with one buffer)``."""
    cfg = ours.config.decoder
    B, P, C = 3, 5, 2
    prefix = _cfg_prefix(np.random.default_rng(13), B, P, C, cfg.hidden_size)
    ids = np.full((B, cfg.num_codebooks, 1), cfg.pad_token_id)
    fixed, pattern = sampling.build_delay_pattern(ids, cfg.pad_token_id, 14, cfg.audio_channels)
    params = (stack_layers if scanned else unstack_layers)(ours.params["decoder"])
    run = _cfg_decoder(params, cfg, fixed, pattern, do_sample=True)
    return cfg, prefix, fixed, run, np.asarray(run(prefix_BPD=prefix, phase_length=0))


@pytest.mark.parametrize("scanned", [True, False], ids=["scanned", "unrolled"])
def test_cache_phases_give_the_same_codes(mono, scanned):
    """The KV cache's buffer in phases (each full buffer sealed into read-only context, the next buffer after it)
    gives the sampled codes of one buffer for the whole loop, with what the rows share kept once or not, as one
    program (``decode``) or as programs the host runs (``run_loop``: in chunks, and stopped early). Greedy codes in
    phases are checked against HF's generate (``tests/test_generate.py``)."""
    cfg, prefix, fixed, run, whole = _sampled_case(mono[1], scanned)
    assert len(np.unique(whole[:, :, 4:])) > 1
    shared = {"shared_uncond": True, "common_prefix": 2}
    got = run(prefix_BPD=prefix, phase_length=5, **shared)  # phase_ends(1, 14, 5) == (5, 9, 14)
    np.testing.assert_array_equal(np.asarray(got), whole)
    if scanned:
        return
    got = run(prefix_BPD=prefix, phase_length=3)
    np.testing.assert_array_equal(np.asarray(got), whole)
    kw = {k: v for k, v in run.keywords.items() if k != "max_length"}
    looped, _ = sampling.run_loop(*run.args, prefix, chunk=2, max_length=14, phase_length=5, **shared, **kw)
    np.testing.assert_array_equal(np.asarray(looped), whole)
    # stopped early, inside the second phase: the first 9 positions of the full run
    short, _ = sampling.run_loop(*run.args, prefix, stop=9, max_length=14, phase_length=5, **shared, **kw)
    np.testing.assert_array_equal(np.asarray(short)[:, :, :9], whole[:, :, :9])


def test_buffer_slack_pads_a_buffer_just_under_the_one_thread_size(monkeypatch):
    # XLA:CPU's matrix-vector product runs on one thread up to 32768 matrix elements: 512 positions of 64 dims
    assert sampling.buffer_slack(504, 64) == 9  # batch 1, 256 steps: 248 prefix positions + 256 in one buffer
    assert sampling.buffer_slack(512, 64) == 1  # batch 4, 10 s: 12 text positions + 500
    assert sampling.buffer_slack(513, 64) == 0 and sampling.buffer_slack(1500, 64) == 0
    assert sampling.buffer_slack(448, 64) == 65 and sampling.buffer_slack(447, 64) == 0  # 14.5% more at most
    assert sampling.buffer_slack(1020, 32) == 5
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert sampling.buffer_slack(504, 64) == 0  # a CPU matter only


def test_buffer_slack_gives_the_same_codes(mono, monkeypatch):
    """The last buffer's slack (unwritten positions after its end, :func:`sampling.buffer_slack`) changes no code: in
    one buffer (``decode`` and ``run_loop``), and in the last phase's buffer after sealed phases."""
    cfg, prefix, fixed, run, whole = _sampled_case(mono[1], scanned=False)
    P = prefix.shape[1]
    static = {k: v for k, v in run.keywords.items() if k in ("config", "max_length", "do_sample", "top_k")}
    static.update(use_top_p=True, use_cfg=True)
    # one buffer of P + 14 = 19 positions; the one-thread size made 20 positions: 2 positions of slack
    monkeypatch.setattr(sampling, "ONE_THREAD_GEMV", 20 * cfg.head_dim)
    state = sampling.prefill(run.args[0], prefix, fixed, jax.random.PRNGKey(0), phase_length=0, **static)
    assert state.cache.buffer_length == P + 14 + 2
    sampling.decode.clear_cache()  # its program planned the cache under the old size (the plan is traced)
    np.testing.assert_array_equal(np.asarray(run(prefix_BPD=prefix, phase_length=0)), whole)
    kw = {k: v for k, v in run.keywords.items() if k != "max_length"}
    looped, _ = sampling.run_loop(*run.args, prefix, chunk=4, max_length=14, phase_length=0, **kw)
    np.testing.assert_array_equal(np.asarray(looped), whole)
    # phases (5, 9, 14): the last buffer holds 5 positions; a one-thread size of 5 positions gives it 1 of slack
    monkeypatch.setattr(sampling, "ONE_THREAD_GEMV", 5 * cfg.head_dim)
    assert sampling.buffer_slack(5, cfg.head_dim) == 1  # (a slack the buffer lacked would shift every position)
    sampling.decode.clear_cache()
    shared = {"shared_uncond": True, "common_prefix": 2}
    np.testing.assert_array_equal(np.asarray(run(prefix_BPD=prefix, phase_length=5, **shared)), whole)
    looped, _ = sampling.run_loop(*run.args, prefix, chunk=3, max_length=14, phase_length=5, **shared, **kw)
    np.testing.assert_array_equal(np.asarray(looped), whole)


@pytest.mark.parametrize("scanned", [True, False], ids=["scanned", "unrolled"])
def test_sealed_phases_steps_equal_full_forward(mono, scanned):
    """Cached steps over a cache whose earlier phases were sealed into read-only context (after the shared prefix
    context) give, position by position, the logits of one full forward."""
    _, ours = mono
    cfg = ours.config.decoder
    rng = np.random.default_rng(6)
    B, P, C, T = 2, 6, 3, 11
    prefix = _cfg_prefix(rng, B, P, C, cfg.hidden_size)
    ids, rows, params, decoder, full = _full_forward(ours, rng, prefix, B, T, scanned)
    static = dict(config=cfg, max_length=T, do_sample=False, top_k=0, use_top_p=False, use_cfg=True)
    ends = sampling.phase_ends(1, T, 3)
    assert ends == (4, 7, 11)
    state = sampling.prefill(
        params,
        prefix,
        ids[:, :, :1],
        jax.random.PRNGKey(0),
        shared_uncond=True,
        common_prefix=C,
        phase_length=3,
        **static,
    )
    assert state.cache.buffer_length == ends[0] and state.cache.capacity == P + ends[0]
    errs = [report("phased prefill", state.logits_BKV, full[:, :, P])]
    for t in range(1, T - 1):
        if t in ends:
            state = sampling.seal(state, ends[ends.index(t) + 1] - t)
            assert state.cache.capacity == P + ends[ends.index(t) + 1] and state.cache.context_length == P + t
        logits, cache = decoder.apply(
            {"params": params}, rows[:, :, t : t + 1], None, cache=state.cache, cache_index=P + t
        )
        state = state._replace(cache=cache)
        errs.append(float(np.abs(np.asarray(logits[:, :, 0]) - np.asarray(full[:, :, P + t])).max()))
    assert len(state.cache.context) == 2 + len(ends) - 1
    print(f"[parity] cache phases ({'scanned' if scanned else 'unrolled'}) steps vs full forward: {max(errs):.3e}")
    assert max(errs) <= 1e-5


@pytest.mark.parametrize("scanned", [True, False], ids=["scanned", "unrolled"])
def test_shared_prefill_gives_the_same_codes(mono, scanned):
    """With CFG, generate's unconditional rows are identical, and without a melody every row begins with the same
    null chroma. Computing what the rows share once (``shared_uncond``: one unconditional row; ``common_prefix``: the
    leading prefix positions every row has) and reading it from the cache's shared context must not change a single
    code, greedy or sampled, alone or together, whatever part of the prefix is common (none, some, all)."""
    _, ours = mono
    cfg = ours.config.decoder
    rng = np.random.default_rng(11)
    B, P, C = 3, 5, 2
    cond = rng.standard_normal((B, P, cfg.hidden_size)).astype(np.float32)
    uncond = np.repeat(rng.standard_normal((1, P, cfg.hidden_size)).astype(np.float32), B, axis=0)
    prefix = np.concatenate([cond, uncond])
    prefix[:, :C] = prefix[:1, :C]  # the first C positions: the same in every row
    prefix = jnp.asarray(prefix)
    ids = np.full((B, cfg.num_codebooks, 1), cfg.pad_token_id)
    fixed, pattern = sampling.build_delay_pattern(ids, cfg.pad_token_id, 14, cfg.audio_channels)
    assert sampling.uncond_rows_shared(prefix, fixed)
    assert not sampling.uncond_rows_shared(prefix.at[B + 1, 0, 0].add(1.0), fixed)
    assert not sampling.uncond_rows_shared(prefix, np.concatenate([fixed[:1], fixed[1:] * 0], axis=0))
    assert sampling.common_prefix_length(prefix) == C
    assert sampling.common_prefix_length(prefix.at[B + 1, 1, 3].add(1.0)) == 1
    assert sampling.common_prefix_length(prefix[:1]) == 0  # one row shares nothing
    same = jnp.broadcast_to(prefix[:1], prefix.shape)  # every row the same
    assert sampling.common_prefix_length(same) == P
    params = (stack_layers if scanned else unstack_layers)(ours.params["decoder"])
    for do_sample in (False, True):
        run = _cfg_decoder(params, cfg, fixed, pattern, do_sample)
        separate = np.asarray(run(prefix_BPD=prefix))
        assert len(np.unique(separate[:, :, 4:])) > 1  # generated codes, not a constant
        for shared_uncond, common in [(True, 0), (False, C), (True, C)]:
            got = run(prefix_BPD=prefix, shared_uncond=shared_uncond, common_prefix=common)
            np.testing.assert_array_equal(np.asarray(got), separate, err_msg=f"{shared_uncond=} {common=}")
        # every prefix position common: the prefix is one row for all, the tokens each row's own
        want = np.asarray(run(prefix_BPD=same))
        for shared_uncond in (False, True):
            got = run(prefix_BPD=same, shared_uncond=shared_uncond, common_prefix=P)
            np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"{shared_uncond=} common={P}")


@pytest.mark.parametrize("scanned", [True, False], ids=["scanned", "unrolled"])
def test_shared_context_steps_equal_full_forward(mono, scanned):
    """The prefill's shared context (the common prefix positions as one row, the unconditional rows' prefix as one)
    followed by cached steps gives, position by position, the logits of one full forward over every row's whole
    prefix and codes."""
    _, ours = mono
    cfg = ours.config.decoder
    rng = np.random.default_rng(5)
    B, P, C, T = 2, 6, 3, 7
    prefix = _cfg_prefix(rng, B, P, C, cfg.hidden_size)
    ids, rows, params, decoder, full = _full_forward(ours, rng, prefix, B, T, scanned)
    static = dict(config=cfg, max_length=T, do_sample=False, top_k=0, use_top_p=False, use_cfg=True)
    state = sampling.prefill(
        params, prefix, ids[:, :, :1], jax.random.PRNGKey(0), shared_uncond=True, common_prefix=C, **static
    )
    assert len(state.cache.context) == 2 and state.cache.buffer_length == T and state.cache.capacity == P + T
    errs = [report("shared-context prefill", state.logits_BKV, full[:, :, P])]
    cache = state.cache
    for t in range(1, T):
        logits, cache = decoder.apply({"params": params}, rows[:, :, t : t + 1], None, cache=cache, cache_index=P + t)
        errs.append(float(np.abs(np.asarray(logits[:, :, 0]) - np.asarray(full[:, :, P + t])).max()))
    print(f"[parity] shared context ({'scanned' if scanned else 'unrolled'}) steps vs full forward: {max(errs):.3e}")
    assert max(errs) <= 1e-5


@pytest.mark.parametrize("scanned", [True, False], ids=["scanned", "unrolled"])
def test_common_prefix_copied_for_two_rows(mono, scanned):
    """Batch 1 under CFG (2 rows): the common prefix positions are computed once and copied into both rows' buffers
    (no shared context: for 2 rows each row's own copy is the faster read); the same codes, greedy and sampled."""
    _, ours = mono
    cfg = ours.config.decoder
    rng = np.random.default_rng(12)
    P, C = 5, 3
    prefix = rng.standard_normal((2, P, cfg.hidden_size)).astype(np.float32)
    prefix[1, :C] = prefix[0, :C]
    prefix = jnp.asarray(prefix)
    assert sampling.common_prefix_length(prefix) == C
    ids = np.full((1, cfg.num_codebooks, 1), cfg.pad_token_id)
    fixed, pattern = sampling.build_delay_pattern(ids, cfg.pad_token_id, 14, cfg.audio_channels)
    params = (stack_layers if scanned else unstack_layers)(ours.params["decoder"])
    static = dict(config=cfg, max_length=14, do_sample=False, top_k=0, use_top_p=False, use_cfg=True)
    state = sampling.prefill(params, prefix, jnp.asarray(fixed), jax.random.PRNGKey(0), **static, common_prefix=C)
    assert state.cache.context == () and state.cache.buffer_length == P + 14
    for do_sample in (False, True):
        run = _cfg_decoder(params, cfg, fixed, pattern, do_sample)
        separate = np.asarray(run(prefix_BPD=prefix))
        assert len(np.unique(separate[:, :, 4:])) > 1
        np.testing.assert_array_equal(np.asarray(run(prefix_BPD=prefix, common_prefix=C)), separate)
