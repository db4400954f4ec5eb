"""T5 text encoder parity with HF `model.text_encoder(...).last_hidden_state` (float32), and converter strictness."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention

from convert.reader import CheckpointError, read_checkpoint
from convert.rules import convert
from convert.t5 import t5_rules
from musicgen_jax.config import MusicgenMelodyConfig
from musicgen_jax.t5 import T5Encoder, abstract_params, relative_position_buckets
from tests.helpers import report, save_hf_melody

# (name, T5 overrides). The tiny default (tests/helpers.TINY_T5) has d_model 16, 3 heads of d_kv 4 (inner 12 != 16),
# 8 buckets and max distance 16; sequences of 23 tokens reach beyond the max distance. The last config has
# inner dim == d_model and a bucket count that is not a power of two.
CONFIGS = [
    ("relu-l2", {}),
    ("relu-l1", {"num_layers": 1}),
    ("gated-gelu-l3", {"num_layers": 3, "feed_forward_proj": "gated-gelu", "d_kv": 6}),
    (
        "gated-relu-l3-b12",
        {
            "num_layers": 3,
            "feed_forward_proj": "gated-relu",
            "relative_attention_num_buckets": 12,
            "relative_attention_max_distance": 10,
            "num_heads": 4,
            "d_kv": 4,
        },
    ),
]


def _convert(path, config, tensors=None):
    tensors = read_checkpoint(path) if tensors is None else tensors
    text = {k: v for k, v in tensors.items() if k.startswith("text_encoder.")}
    abstract = {"text_encoder": abstract_params(config.text_encoder)}
    return convert(text, *t5_rules(config), abstract=abstract, source=path)


@pytest.fixture(scope="module", params=CONFIGS, ids=[c[0] for c in CONFIGS])
def pair(request, tmp_path_factory):
    name, text = request.param
    path, hf = save_hf_melody(tmp_path_factory.mktemp(name), text=text)
    config = MusicgenMelodyConfig.from_pretrained(path)
    params = jax.tree.map(jnp.asarray, _convert(path, config)["text_encoder"])
    encode = jax.jit(lambda p, ids, mask: T5Encoder(config.text_encoder).apply({"params": p}, ids, mask))
    return name, hf.text_encoder, config, params, encode


def _hf_states(hf_text, ids, mask):
    with torch.no_grad():
        out = hf_text(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    return out.last_hidden_state.numpy()


def test_config_read_from_hf(pair):
    name, hf_text, config, _, _ = pair
    hf_cfg = hf_text.config
    assert (config.text_encoder.is_gated_act, config.text_encoder.dense_act_fn) == (
        hf_cfg.is_gated_act,
        hf_cfg.dense_act_fn,
    )


@pytest.mark.parametrize("batch,length", [(1, 5), (3, 23)])
def test_last_hidden_state_matches_hf(pair, batch, length):
    name, hf_text, config, params, encode = pair
    rng = np.random.default_rng(length)
    ids = rng.integers(0, config.text_encoder.vocab_size, (batch, length))
    mask = np.ones((batch, length), np.int64)
    for row in range(1, batch):  # right padding of different lengths; row 0 stays full
        mask[row, length - 4 * row :] = 0
        ids[row, length - 4 * row :] = config.text_encoder.pad_token_id
    ref = _hf_states(hf_text, ids, mask)
    got = np.asarray(encode(params, ids, mask))
    assert got.shape == ref.shape == (batch, length, config.text_encoder.d_model)
    err = report(f"t5 last_hidden_state {name} B={batch} S={length}", got, ref)
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())


def test_unrolled_layout_matches_hf(pair):
    """One subtree per layer (``layers_0`` ..., what ``from_pretrained`` loads on CPU) gives HF's states too."""
    from musicgen_jax.decoder import unstack_layers

    name, hf_text, config, params, _ = pair
    ids = np.random.default_rng(3).integers(0, config.text_encoder.vocab_size, (2, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    unrolled = unstack_layers(params)
    assert "layers" not in unrolled and f"layers_{config.text_encoder.num_layers - 1}" in unrolled
    got = T5Encoder(config.text_encoder, scan_layers=False).apply({"params": unrolled}, ids, mask)
    ref = _hf_states(hf_text, ids, mask)
    err = report(f"t5 last_hidden_state {name} unrolled", got, ref)
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())


def test_without_attention_mask(pair):
    name, hf_text, config, params, _ = pair
    ids = np.random.default_rng(7).integers(0, config.text_encoder.vocab_size, (2, 9))
    with torch.no_grad():
        ref = hf_text(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    got = T5Encoder(config.text_encoder).apply({"params": params}, ids)
    err = report(f"t5 last_hidden_state {name} no mask", got, ref)
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_fully_padded_row_matches_hf(pair, attn_implementation):
    # A row with no key to attend to: HF's sdpa replaces the bias by float32 min, eager adds min to it; both give a
    # uniform softmax, as ours does.
    name, hf_text, config, params, encode = pair
    ids = np.array([[5, 6, 7, 8, 9], [0, 0, 0, 0, 0]])
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    saved = hf_text.config._attn_implementation
    hf_text.config._attn_implementation = attn_implementation
    try:
        ref = _hf_states(hf_text, ids, mask)
    finally:
        hf_text.config._attn_implementation = saved
    err = report(
        f"t5 last_hidden_state {name} fully padded row ({attn_implementation})", encode(params, ids, mask), ref
    )
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 16), (12, 10), (6, 40)])
def test_relative_position_buckets_match_hf(num_buckets, max_distance):
    S = 300
    rel = torch.arange(S)[None, :] - torch.arange(S)[:, None]
    ref = T5Attention._relative_position_bucket(
        rel, bidirectional=True, num_buckets=num_buckets, max_distance=max_distance
    ).numpy()
    got = np.asarray(relative_position_buckets(S, S, num_buckets, max_distance))
    np.testing.assert_array_equal(got, ref)


def test_dropout_is_active_only_when_not_deterministic(pair):
    _, _, config, params, _ = pair
    cfg = dataclasses.replace(config.text_encoder, dropout_rate=0.5)
    ids = np.arange(12).reshape(2, 6) % cfg.vocab_size
    calm = T5Encoder(cfg).apply({"params": params}, ids)
    noisy = T5Encoder(cfg, deterministic=False).apply({"params": params}, ids, rngs={"dropout": jax.random.key(0)})
    assert np.allclose(calm, T5Encoder(config.text_encoder).apply({"params": params}, ids))
    assert not np.allclose(calm, noisy)


def test_tied_embedding_spellings(tmp_path):
    path, _ = save_hf_melody(tmp_path)
    config = MusicgenMelodyConfig.from_pretrained(path)
    tensors = dict(read_checkpoint(path))
    shared = tensors["text_encoder.shared.weight"]
    want = _convert(path, config, tensors)["text_encoder"]["embed"]
    np.testing.assert_array_equal(want, shared)
    # Both spellings, equal: accepted. Only the encoder's spelling: accepted.
    both = {**tensors, "text_encoder.encoder.embed_tokens.weight": shared.copy()}
    np.testing.assert_array_equal(_convert(path, config, both)["text_encoder"]["embed"], shared)
    only = {k: v for k, v in both.items() if k != "text_encoder.shared.weight"}
    np.testing.assert_array_equal(_convert(path, config, only)["text_encoder"]["embed"], shared)
    # Both spellings, different: refused.
    with pytest.raises(CheckpointError, match="tied tensors .*differ"):
        _convert(path, config, {**both, "text_encoder.encoder.embed_tokens.weight": shared + 1})


def test_converter_names_missing_and_misshapen_tensors(tmp_path):
    path, _ = save_hf_melody(tmp_path, text={"feed_forward_proj": "gated-gelu"})
    config = MusicgenMelodyConfig.from_pretrained(path)
    tensors = dict(read_checkpoint(path))
    key = "text_encoder.encoder.block.1.layer.1.DenseReluDense.wi_1.weight"
    with pytest.raises(CheckpointError, match=f"missing tensor '{key}'"):
        _convert(path, config, {k: v for k, v in tensors.items() if k != key})
    bias = "text_encoder.encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    with pytest.raises(CheckpointError, match=f"missing tensor '{bias}'"):
        _convert(path, config, {k: v for k, v in tensors.items() if k != bias})
    q = "text_encoder.encoder.block.0.layer.0.SelfAttention.q.weight"
    with pytest.raises(CheckpointError, match=rf"tensor '{q}' has shape \(12, 15\), expected \(12, 16\)"):
        _convert(path, config, {**tensors, q: tensors[q][:, :15]})
    # A relu FFN weight in a gated checkpoint, and a bias table outside block 0, are not T5 encoder tensors.
    for extra in (
        "text_encoder.encoder.block.0.layer.1.DenseReluDense.wi.weight",
        "text_encoder.encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight",
    ):
        with pytest.raises(CheckpointError, match=f"unexpected tensor '{extra}'"):
            _convert(path, config, {**tensors, extra: np.zeros((1,), np.float32)})
