"""The full conditional forward pass (T5 + chroma + decoder) and `encode_text`, against HF in float32."""

import numpy as np
import pytest
import torch

from musicgen_jax import MusicgenMelodyForConditionalGeneration, core
from tests.helpers import report, save_hf_melody

# (name, text encoder overrides, decoder overrides, top-level overrides)
CONFIGS = [
    # t5-base-shaped encoder (fewer layers for CI) feeding a decoder of another width: both projections exist
    (
        "t5-base-shaped",
        dict(
            vocab_size=96,
            d_model=768,
            d_kv=64,
            d_ff=3072,
            num_layers=2,
            num_heads=12,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
        ),
        dict(hidden_size=32, num_attention_heads=4),
        dict(chroma_length=12),
    ),
    (
        "gated-gelu, d_kv*heads != d_model",
        dict(feed_forward_proj="gated-gelu", d_kv=6, num_heads=3, num_layers=3),
        dict(hidden_size=20, num_attention_heads=5, num_hidden_layers=3),
        dict(chroma_length=10),
    ),
    # decoder width == T5 width == 16: HF creates no text projection; chroma 12 -> 16 is projected
    ("no text projection", dict(), dict(hidden_size=16, num_attention_heads=2), dict(chroma_length=7)),
]


@pytest.fixture(scope="module", params=CONFIGS, ids=[c[0] for c in CONFIGS])
def pair(request, tmp_path_factory):
    name, text, decoder, top = request.param
    path, hf = save_hf_melody(tmp_path_factory.mktemp("fwd"), text=text, decoder=decoder, **top)
    return name, hf, MusicgenMelodyForConditionalGeneration.from_pretrained(path)


def _inputs(model, batch=3, seq=9, frames=None, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 96, (batch, seq))
    mask = np.ones((batch, seq), np.int64)
    mask[1, seq - 3 :] = 0  # a padded row
    mask[2, seq - 1 :] = 0
    feats = None if frames is None else np.eye(12, dtype=np.float32)[rng.integers(0, 12, (batch, frames))]
    dec = rng.integers(0, 17, (batch * model.config.decoder.num_codebooks, 4))
    return ids, mask, feats, dec


def _hf(hf, **kwargs):
    with torch.no_grad():
        return hf(**{k: torch.from_numpy(v) for k, v in kwargs.items() if v is not None})


def test_encode_text_matches_hf(pair):
    name, hf, ours = pair
    ids, mask, _, _ = _inputs(ours)
    with torch.no_grad():
        ref = hf.text_encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    ref = ref.last_hidden_state.numpy()
    got = ours.encode_text(ids, mask)
    assert got.shape == (3, 9, ours.config.text_encoder.d_model)
    err = report(f"encode_text {name}", got, ref)
    assert err <= 1e-4 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize(
    "case,frames,text",
    [
        ("text only (null chroma)", None, True),
        ("text + short chroma (tiled)", 3, True),
        ("text + long chroma (truncated)", 40, True),
        ("chroma only", 5, False),
    ],
)
def test_forward_matches_hf(pair, case, frames, text):
    name, hf, ours = pair
    ids, mask, feats, dec = _inputs(ours, frames=frames)
    kwargs = dict(
        input_ids=ids if text else None,
        attention_mask=mask if text else None,
        input_features=feats,
        decoder_input_ids=dec,
    )
    ref = _hf(hf, **kwargs)
    got = ours(**kwargs)
    assert got.logits.shape == tuple(ref.logits.shape)
    err = report(f"forward logits {name}, {case}", got.logits, ref.logits.numpy())
    assert err <= 1e-4 * max(1.0, np.abs(ref.logits.numpy()).max())
    err = report(f"forward prefix {name}, {case}", got.encoder_hidden_states, ref.encoder_hidden_states.numpy())
    assert err <= 1e-4 * max(1.0, np.abs(ref.encoder_hidden_states.numpy()).max())


def test_same_shapes_do_not_recompile(pair):
    _, _, ours = pair
    ids, mask, feats, dec = _inputs(ours, frames=4, seed=1)
    ours.encode_text(ids, mask)
    ours(input_ids=ids, attention_mask=mask, input_features=feats, decoder_input_ids=dec)
    sizes = core.encode_text_jit._cache_size(), core.forward_jit._cache_size()
    ids2, mask2, feats2, dec2 = _inputs(ours, frames=4, seed=2)  # same shapes, other values
    ours.encode_text(ids2, mask2)
    ours(input_ids=ids2, attention_mask=mask2, input_features=feats2, decoder_input_ids=dec2)
    assert (core.encode_text_jit._cache_size(), core.forward_jit._cache_size()) == sizes


def test_labels_give_hf_loss(pair):
    name, hf, ours = pair
    ids, mask, feats, _ = _inputs(ours, frames=5, seed=3)
    labels = np.random.default_rng(4).integers(0, 16, (3, 6, ours.config.decoder.num_codebooks))
    labels[0, -2:] = 16  # pad ids are ignored, as in HF
    ref = _hf(hf, input_ids=ids, attention_mask=mask, input_features=feats, labels=labels).loss.item()
    got = float(ours(input_ids=ids, attention_mask=mask, input_features=feats, labels=labels).loss)
    print(f"[parity] loss {name}: ours {got:.7f} HF {ref:.7f} abs err {abs(got - ref):.2e}")
    assert abs(got - ref) <= 1e-5 * max(1.0, abs(ref))
