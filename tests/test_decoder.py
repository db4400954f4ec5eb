"""Decoder logits parity with HF `MusicgenMelodyForConditionalGeneration.forward` (float32), on several configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musicgen_jax import MusicgenMelodyForConditionalGeneration
from tests.helpers import report, save_hf_melody

# (name, decoder overrides): non-power-of-two head counts, widths not divisible by 64, odd width (HF zero-pads
# the last sinusoid column), 1 and 3 layers, stereo (8 codebooks), another activation.
CONFIGS = [
    ("h12-n3-l2", {}),
    ("h20-n5-l1-ffn7", {"hidden_size": 20, "num_attention_heads": 5, "num_hidden_layers": 1, "ffn_dim": 7}),
    ("h15-n3-l3-odd", {"hidden_size": 15, "num_attention_heads": 3, "num_hidden_layers": 3}),
    (
        "stereo-h24-n6-l3",
        {"hidden_size": 24, "num_attention_heads": 6, "num_hidden_layers": 3, "audio_channels": 2, "num_codebooks": 8},
    ),
    ("h18-n6-gelu_new", {"hidden_size": 18, "num_attention_heads": 6, "activation_function": "gelu_new"}),
]


def _inputs(model_cfg, batch, tgt_len, prefix_len, seed=0):
    rng = np.random.default_rng(seed)
    dec = model_cfg.decoder
    ids = rng.integers(0, dec.vocab_size + 1, (batch * dec.num_codebooks, tgt_len))
    prefix = rng.standard_normal((batch, prefix_len, dec.hidden_size)).astype(np.float32)
    return ids, prefix


def _hf_logits(hf, ids, prefix, mask=None):
    with torch.no_grad():
        out = hf(
            decoder_input_ids=torch.from_numpy(ids),
            encoder_hidden_states=None if prefix is None else torch.from_numpy(prefix),
            decoder_attention_mask=None if mask is None else torch.from_numpy(mask),
        )
    return out.logits.numpy()


@pytest.fixture(scope="module", params=CONFIGS, ids=[c[0] for c in CONFIGS])
def pair(request, tmp_path_factory):
    name, decoder = request.param
    path, hf = save_hf_melody(tmp_path_factory.mktemp(name), decoder=decoder)
    return name, hf, MusicgenMelodyForConditionalGeneration.from_pretrained(path)


@pytest.mark.parametrize("batch,tgt_len,prefix_len", [(1, 1, 4), (3, 7, 5)])
def test_logits_match_hf(pair, batch, tgt_len, prefix_len):
    name, hf, ours = pair
    ids, prefix = _inputs(ours.config, batch, tgt_len, prefix_len)
    ref = _hf_logits(hf, ids, prefix)
    got = np.asarray(ours(decoder_input_ids=ids, encoder_hidden_states=prefix).logits)
    assert got.shape == ref.shape == (batch * ours.config.decoder.num_codebooks, prefix_len + tgt_len, 16)
    err = report(f"decoder logits {name} B={batch} T={tgt_len} P={prefix_len}", got, ref)
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())


def test_without_prefix(pair):
    name, hf, ours = pair
    ids, _ = _inputs(ours.config, 2, 6, 0, seed=1)
    ref = _hf_logits(hf, ids, None)
    err = report(f"decoder logits {name} no prefix", ours(decoder_input_ids=ids).logits, ref)
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())


def test_decoder_attention_mask(pair):
    name, hf, ours = pair
    ids, prefix = _inputs(ours.config, 2, 6, 3, seed=2)
    mask = np.ones((2, 6), np.int64)
    mask[1, 4:] = 0  # right padding in the second sequence
    ref = _hf_logits(hf, ids, prefix, mask)
    got = ours(decoder_input_ids=ids, encoder_hidden_states=prefix, decoder_attention_mask=mask).logits
    err = report(f"decoder logits {name} with decoder_attention_mask", got, ref)
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())


def test_bfloat16_close_to_float32(tmp_path):
    path, hf = save_hf_melody(tmp_path)
    f32 = MusicgenMelodyForConditionalGeneration.from_pretrained(path)
    bf16 = MusicgenMelodyForConditionalGeneration.from_pretrained(path, dtype=jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(bf16.params))
    ids, prefix = _inputs(f32.config, 2, 5, 3)
    ref = np.asarray(_hf_logits(hf, ids, prefix))
    got = np.asarray(bf16(decoder_input_ids=ids, encoder_hidden_states=prefix).logits, np.float32)
    err = report("decoder logits bf16 vs HF f32", got, ref)
    assert err <= 2e-2 * max(1.0, np.abs(ref).max())


def test_auto_dtype_keeps_checkpoint_dtype(tmp_path):
    _, hf = save_hf_melody(tmp_path / "f32")
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert model.dtype == jnp.bfloat16
    model32 = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "bf16", dtype="float32")
    assert model32.dtype == jnp.float32
    # bf16 -> f32 is exact: the parameters equal HF's bf16 tensors bit for bit.
    ref = hf.decoder.lm_heads[1].weight.detach().to(torch.bfloat16).float().numpy().T
    np.testing.assert_array_equal(np.asarray(model32.params["decoder"]["lm_heads"][1]), ref)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(decoder_input_ids=np.zeros((7, 3), np.int64)), "num_codebooks=4"),
        (dict(decoder_input_ids=np.full((4, 3), 17)), r"values must lie in \[0, 16\]"),
        (
            dict(decoder_input_ids=np.zeros((8, 3), np.int64), encoder_hidden_states=np.zeros((2, 2, 5))),
            "hidden_size=12",
        ),
        (
            dict(decoder_input_ids=np.zeros((8, 3), np.int64), decoder_attention_mask=np.ones((2, 4))),
            "decoder_attention_mask",
        ),
    ],
)
def test_bad_inputs_name_the_problem(tmp_path_factory, kwargs, match):
    path, _ = save_hf_melody(tmp_path_factory.mktemp("bad"))
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(path)
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_unrolled_layers_traced_once_match_the_submodules():
    """The unrolled inference path runs each layer through one jitted function of its parameters (traced once for all
    layers); the flax submodules (what training and init use) give the same logits and cache, bit for bit."""
    from musicgen_jax.config import DecoderConfig
    from musicgen_jax.decoder import Decoder, KVCache

    cfg = DecoderConfig(
        vocab_size=16, hidden_size=24, num_hidden_layers=3, num_attention_heads=4, ffn_dim=40, pad_token_id=16,
        bos_token_id=16, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, 17, (2, cfg.num_codebooks, 5)), jnp.int32)
    prefix = jnp.asarray(rng.standard_normal((2, 3, 24)), jnp.float32)
    fast, modules = (
        Decoder(cfg, deterministic=True, scan_layers=False),
        Decoder(cfg, deterministic=False, scan_layers=False),
    )
    params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype) * 0.3,
        fast.init(jax.random.PRNGKey(0), ids, prefix)["params"],
    )
    variables = {"params": params}
    cache = KVCache.zeros(cfg, 2, 12, scanned=False)
    jaxpr = jax.make_jaxpr(lambda p: fast.apply({"params": p}, ids, prefix, cache=cache))(params)
    calls = [
        e for e in jaxpr.jaxpr.eqns if e.primitive.name in ("pjit", "jit") and "_layer_call" in str(e.params["name"])
    ]
    assert len(calls) == cfg.num_hidden_layers
    assert len({id(e.params["jaxpr"]) for e in calls}) == 1  # one traced body for every layer
    dropout = jax.random.PRNGKey(1)  # unused (rates 0), but the non-deterministic path asks for the stream
    want_logits, want_cache = jax.jit(lambda v: modules.apply(v, ids, prefix, cache=cache, rngs={"dropout": dropout}))(
        variables
    )
    got_logits, got_cache = jax.jit(lambda v: fast.apply(v, ids, prefix, cache=cache))(variables)
    np.testing.assert_array_equal(np.asarray(got_logits), np.asarray(want_logits))
    for got, want in zip(jax.tree_util.tree_leaves(got_cache), jax.tree_util.tree_leaves(want_cache), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("rows", [2, 130])
def test_linear_keeps_the_kernel_first_for_few_rows(rows):
    """The decode step's few-row products must stay ``W (out, in) @ x.T``, the form XLA:CPU streams at 1.6-1.9x the
    speed of ``x @ W`` (benchmarks/NOTES.md #20): the compiled dot's result is ``(out, rows)``, which only the barrier
    keeps XLA from folding back into ``x @ W.T``; many rows (the prefill) run ``x @ W.T``, a ``(rows, out)`` dot. Both
    equal numpy's product."""
    import re

    from musicgen_jax import layers

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 16), np.float32)
    w = rng.standard_normal((3, 8, 16), np.float32)  # (out dims 3 x 8, in 16)
    fn = jax.jit(lambda x, w: jnp.tanh(layers.linear(x, w, 2)))
    hlo = fn.lower(x, w).compile().as_text()
    dots = re.findall(r"= f32\[(\d+),(\d+)\]\{[0-9,]*\} dot\(", hlo)
    assert dots, hlo
    want = ("24", str(rows)) if rows <= layers.LEFT_KERNEL_ROWS else (str(rows), "24")
    assert dots == [want], (rows, dots)
    np.testing.assert_allclose(np.asarray(fn(x, w)), np.tanh(x @ w.reshape(24, 16).T).reshape(rows, 3, 8), atol=1e-5)
