"""Checkpoint reading (safetensors single/sharded, .bin) and the strict converter's failure paths."""

import copy
import json
import os
import sys

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from convert import CheckpointError, convert_checkpoint, read_checkpoint
from musicgen_jax import ConfigError, MusicgenMelodyForConditionalGeneration
from tests.helpers import save_hf_melody


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_hf_melody(tmp_path_factory.mktemp("tiny"))


def _copy_with(src_dir, dst_dir, mutate):
    """A checkpoint dir like ``src_dir`` whose tensors went through ``mutate(dict) -> dict``."""
    os.makedirs(dst_dir, exist_ok=True)
    for name in ("config.json", "generation_config.json"):
        with open(os.path.join(src_dir, name)) as f, open(os.path.join(dst_dir, name), "w") as g:
            g.write(f.read())
    tensors = {k: np.array(v) for k, v in read_checkpoint(src_dir).items()}
    save_file(mutate(tensors), os.path.join(dst_dir, "model.safetensors"))
    return dst_dir


def _leaves(params):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}


def test_reader_matches_torch_state_dict(tiny):
    path, hf = tiny
    tensors = read_checkpoint(path)
    state = hf.state_dict()
    for key in tensors:
        np.testing.assert_array_equal(tensors[key], state[key].numpy(), err_msg=key)


def test_decoder_layout(tiny):
    path, hf = tiny
    _, params = convert_checkpoint(path, parts=("decoder",))
    dec = hf.decoder.model.decoder
    q = dec.layers[1].self_attn.q_proj.weight.detach().numpy()  # (N*H, D)
    got = params["decoder"]["layers"]["attn"]["qkv"][1, 0]  # (N, H, D): torch's (out, in) order, reshaped
    np.testing.assert_array_equal(got.reshape(-1, got.shape[-1]), q)
    np.testing.assert_array_equal(params["decoder"]["embed"][2], dec.embed_tokens[2].weight.detach().numpy())
    assert params["text_proj"]["kernel"].shape == (16, 12)  # T5 width 16 -> decoder width 12
    assert "chroma_proj" not in params  # num_chroma == hidden_size == 12: HF creates no projection either


def test_layer_layouts_hold_the_same_weights(tiny, tmp_path):
    """from_pretrained's default unrolled layout (one subtree per layer) and the scanned one hold the same tensors;
    save_pretrained writes the scanned layout from either, and the two layouts convert into each other exactly."""
    path, hf = tiny
    from musicgen_jax.decoder import is_scanned, stack_layers, unstack_layers

    unrolled = MusicgenMelodyForConditionalGeneration.from_pretrained(path)
    scanned = MusicgenMelodyForConditionalGeneration.from_pretrained(path, scan_layers=True)
    assert not is_scanned(unrolled.params["decoder"]) and is_scanned(scanned.params["decoder"])
    layers = hf.decoder.model.decoder.layers
    assert sorted(k for k in unrolled.params["decoder"] if k.startswith("layers_")) == [
        f"layers_{i}" for i in range(len(layers))
    ]
    fc1 = layers[1].fc1.weight.detach().numpy()  # (F, D)
    np.testing.assert_array_equal(np.asarray(unrolled.params["decoder"]["layers_1"]["mlp"]["up"]), fc1)  # (out, in)
    assert not is_scanned(unrolled.params["text_encoder"]) and is_scanned(scanned.params["text_encoder"])  # T5 too
    want = _leaves(scanned.params)
    restacked = {**unrolled.params, **{p: stack_layers(unrolled.params[p]) for p in ("decoder", "text_encoder")}}
    assert _leaves(restacked).keys() == want.keys()
    for key, value in _leaves(restacked).items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)
    back = unstack_layers(stack_layers(unrolled.params["decoder"]))
    for key, value in _leaves(back).items():
        np.testing.assert_array_equal(value, _leaves(unrolled.params["decoder"])[key], err_msg=key)
    unrolled.save_pretrained(tmp_path / "saved")
    reloaded = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "saved", scan_layers=True)
    for key, value in _leaves(reloaded.params).items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)


def test_chroma_projection_when_sizes_differ(tmp_path):
    path, hf = save_hf_melody(tmp_path, decoder={"hidden_size": 20, "num_attention_heads": 4})
    _, params = convert_checkpoint(path, parts=("decoder",))
    np.testing.assert_array_equal(params["chroma_proj"]["kernel"], hf.audio_enc_to_dec_proj.weight.detach().numpy().T)
    np.testing.assert_array_equal(params["chroma_proj"]["bias"], hf.audio_enc_to_dec_proj.bias.detach().numpy())


def test_sharded_equals_single(tiny, tmp_path):
    path, hf = tiny
    hf.save_pretrained(tmp_path, max_shard_size="8KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    assert len(json.load(open(tmp_path / "model.safetensors.index.json"))["weight_map"]) > 10
    single = _leaves(MusicgenMelodyForConditionalGeneration.from_pretrained(path).params)
    sharded = _leaves(MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path).params)
    assert single.keys() == sharded.keys()
    for k in single:
        np.testing.assert_array_equal(single[k], sharded[k], err_msg=k)


def test_pytorch_bin_through_weights_only_load(tiny, tmp_path):
    path, hf = tiny
    for name in ("config.json", "generation_config.json"):
        (tmp_path / name).write_text(open(os.path.join(path, name)).read())
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    single = _leaves(MusicgenMelodyForConditionalGeneration.from_pretrained(path).params)
    from_bin = _leaves(MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path).params)
    for k in single:
        np.testing.assert_array_equal(single[k], from_bin[k], err_msg=k)


def test_pytorch_bin_without_torch_is_a_clear_error(tiny, tmp_path, monkeypatch):
    torch.save({"a": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError, match="needs torch"):
        read_checkpoint(tmp_path)


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"a": torch.zeros(2), "evil": object()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(tmp_path)


def test_missing_tensor_is_named(tiny, tmp_path):
    key = "decoder.model.decoder.layers.1.self_attn.k_proj.weight"
    bad = _copy_with(tiny[0], tmp_path, lambda t: {k: v for k, v in t.items() if k != key})
    with pytest.raises(CheckpointError, match=f"missing tensor '{key}'"):
        MusicgenMelodyForConditionalGeneration.from_pretrained(bad)


def test_wrong_shape_names_key_and_shapes(tiny, tmp_path):
    key = "decoder.model.decoder.layers.0.fc1.weight"
    bad = _copy_with(tiny[0], tmp_path, lambda t: {**t, key: np.zeros((21, 12), np.float32)})
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape \(21, 12\), expected \(20, 12\)"):
        MusicgenMelodyForConditionalGeneration.from_pretrained(bad)


@pytest.mark.parametrize(
    "key",
    [
        "decoder.model.decoder.layers.0.self_attn.rotary.weight",  # no rule maps it
        "decoder.model.decoder.layers.2.fc1.weight",  # layer index beyond num_hidden_layers
        "decoder.lm_heads.4.weight",  # codebook index beyond num_codebooks
        "something_else.weight",  # not part of any network part
    ],
)
def test_unexpected_tensor_is_named(tiny, tmp_path, key):
    bad = _copy_with(tiny[0], tmp_path, lambda t: {**t, key: np.zeros((20, 12), np.float32)})
    with pytest.raises(CheckpointError, match=f"unexpected tensor '{key}'"):
        MusicgenMelodyForConditionalGeneration.from_pretrained(bad)


def test_shard_listed_twice_is_refused(tiny, tmp_path):
    path, hf = tiny
    hf.save_pretrained(tmp_path, max_shard_size="8KB")
    index = json.load(open(tmp_path / "model.safetensors.index.json"))
    key, file = next(iter(index["weight_map"].items()))
    other = next(f for f in sorted(set(index["weight_map"].values())) if f != file)
    index["weight_map"][key] = other
    json.dump(index, open(tmp_path / "model.safetensors.index.json", "w"))
    with pytest.raises(CheckpointError, match=f"'{key}'"):
        read_checkpoint(tmp_path)


def test_malformed_safetensors_names_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(CheckpointError, match="model.safetensors: malformed safetensors header"):
        read_checkpoint(tmp_path)


def test_no_weights_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no weights found"):
        read_checkpoint(tmp_path)


def test_other_model_type_is_refused_on_load(tiny, tmp_path):
    cfg = json.load(open(os.path.join(tiny[0], "config.json")))
    cfg["model_type"] = "musicgen_other"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="model_type is 'musicgen_other'; musicgen-jax reads 'musicgen_melody' and"):
        MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path)
    # a melody config relabelled as plain MusicGen: its melody fields are unknown to that family, and named
    cfg["model_type"] = "musicgen"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unknown config field 'chroma_length'"):
        MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path)


def test_bfloat16_safetensors_are_read(tiny, tmp_path):
    path, hf = tiny
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path)
    tensors = read_checkpoint(tmp_path)
    key = "decoder.lm_heads.0.weight"
    assert str(tensors[key].dtype) == "bfloat16"
    ref = hf.decoder.lm_heads[0].weight.detach().to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(tensors[key].astype(np.float32), ref)
