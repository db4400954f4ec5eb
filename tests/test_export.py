"""Exporting to transformers: the converter's tables run backwards give a HF checkpoint back bit for bit (both
families), a fine-tuned checkpoint exported with ``musicgen-jax export`` loads in transformers with the logits of our
forward pass, and bad input is one line and exit status 2."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from musicgen_jax import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration, cli, training
from tests.helpers import report, save_hf_melody, save_hf_musicgen, save_tiny_tokenizer


def _hf_class(family: str):
    import transformers

    return getattr(
        transformers,
        {"melody": "MusicgenMelodyForConditionalGeneration"}.get(family, "MusicgenForConditionalGeneration"),
    )


def _load_hf(family: str, path):
    model, info = _hf_class(family).from_pretrained(os.fspath(path), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


@pytest.fixture(scope="module")
def melody_dir(tmp_path_factory):
    path, hf = save_hf_melody(
        tmp_path_factory.mktemp("hf_melody"), decoder={"hidden_size": 20, "num_attention_heads": 4}
    )
    save_tiny_tokenizer(path)
    return path, hf


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    path, hf = save_hf_musicgen(tmp_path_factory.mktemp("hf_plain"))
    return path, hf


@pytest.mark.parametrize("family,scan_layers", [("melody", False), ("plain", True)])
def test_load_then_export_gives_the_hf_tensors_back_bit_for_bit(melody_dir, plain_dir, tmp_path, family, scan_layers):
    path, hf = melody_dir if family == "melody" else plain_dir
    ours = MusicgenMelodyForConditionalGeneration.from_pretrained(path, scan_layers=scan_layers)
    out = ours.save_pretrained(tmp_path / "export", format="hf")
    exported = load_file(os.path.join(out, "model.safetensors"))
    written = load_file(os.path.join(path, "model.safetensors"))  # what transformers' save_pretrained wrote
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    assert set(exported) == set(written)
    assert set(state) - set(exported) == {"text_encoder.encoder.embed_tokens.weight"}  # tied to `shared`, as HF
    for key, value in exported.items():
        assert value.shape == state[key].shape and value.dtype == state[key].dtype, key
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    print(f"[export] {family}: {len(exported)} tensors bit-identical to the HF state dict")
    files = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "generation_config.json"} <= files
    assert family == "plain" or {"spiece.model", "tokenizer_config.json"} <= files  # copied from the base folder

    loaded = _load_hf(family, out)
    for key, value in loaded.state_dict().items():  # the tied copy too
        np.testing.assert_array_equal(value.numpy(), state[key], err_msg=key)


def test_export_without_the_base_weights_fills_the_codec_buffers_as_hf_inits_them(melody_dir, tmp_path):
    path, hf = melody_dir
    converted = MusicgenMelodyForConditionalGeneration.from_pretrained(path).save_pretrained(tmp_path / "conv")
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(converted)  # no HF weights to copy buffers from
    out = model.save_pretrained(tmp_path / "export", format="hf")
    loaded = _load_hf("melody", out)
    codebook = loaded.audio_encoder.quantizer.layers[0].codebook
    reference = hf.audio_encoder.quantizer.layers[0].codebook  # HF's own init: inited 1, zeros, embed_avg = embed
    for name in ("inited", "cluster_size", "embed_avg", "embed"):
        np.testing.assert_array_equal(getattr(codebook, name).numpy(), getattr(reference, name).numpy(), err_msg=name)


def _train(model, steps=3, seed=0):
    """A few full fine-tuning steps on a random batch (lr large enough to move every decoder weight)."""
    rng = np.random.default_rng(seed)
    dec = model.config.decoder
    B, T, W = 2, 6, 5
    batch = {
        "input_ids": rng.integers(2, 90, (B, W)).astype(np.int32),
        "attention_mask": np.ones((B, W), np.int32),
        "labels": rng.integers(0, dec.vocab_size, (B, T, dec.num_codebooks)).astype(np.int32),
    }
    if not dec.cross_attention:
        batch["input_features"] = np.eye(12, dtype=np.float32)[rng.integers(0, 12, (B, 3))]
    optimizer = training.make_optimizer(1e-2)
    trainable = training.default_trainable(model.params)
    state = training.init_train_state(jax.tree_util.tree_map(jnp.copy, model.params), optimizer, trainable, seed)
    step = training.make_train_step(model.config, optimizer, trainable=trainable)
    batch = jax.tree_util.tree_map(jnp.asarray, batch)
    for _ in range(steps):
        state, _ = step(state, batch)
    return state


def _logits_inputs(config, seed=1):
    rng = np.random.default_rng(seed)
    B, W, T = 2, 5, 7
    mask = np.ones((B, W), np.int64)
    mask[1, 3:] = 0
    inputs = {
        "input_ids": rng.integers(2, 90, (B, W)),
        "attention_mask": mask,
        "decoder_input_ids": rng.integers(0, config.decoder.vocab_size, (B * config.decoder.num_codebooks, T)),
    }
    if not config.decoder.cross_attention:
        inputs["input_features"] = np.eye(12, dtype=np.float32)[rng.integers(0, 12, (B, 4))]
    return inputs


def check_logits(hf_dir, family, params, config, name):
    """transformers' logits of the export in ``hf_dir`` vs our forward pass over ``params``; returns the error."""
    loaded = _load_hf(family, hf_dir)
    inputs = _logits_inputs(config)
    with torch.no_grad():
        ref = loaded(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    cls = MusicgenMelodyForConditionalGeneration if family == "melody" else MusicgenForConditionalGeneration
    ours = cls(config, params)(**inputs).logits
    err = report(name, ours, ref)
    assert err <= 1e-4, err
    return err


def test_a_finetuned_checkpoint_exports_to_transformers_with_our_logits(melody_dir, tmp_path, capsys):
    path, _ = melody_dir
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(path, scan_layers=True)
    state = _train(model)
    assert not np.array_equal(state.params["decoder"]["lm_heads"], model.params["decoder"]["lm_heads"])
    manager = training.checkpoint_manager(tmp_path / "run" / "checkpoints")
    training.save_checkpoint(manager, state, {"model": os.path.abspath(path), "trainable": ["decoder"]})
    manager.close()

    dst = tmp_path / "hf"
    code = cli.main(["export", "--src", str(tmp_path / "run" / "checkpoints"), "--dst", str(dst)])
    printed = capsys.readouterr().out
    assert code == 0 and "step 3" in printed, printed
    with open(dst / "musicgen_jax_export.json") as f:
        assert json.load(f)["step"] == 3
    with capsys.disabled():
        check_logits(dst, "melody", state.params, model.config, "export after 3 fine-tuning steps: HF vs ours")

    # a second export replaces the first (ours); the run folder itself is accepted too
    assert cli.main(["export", "--src", str(tmp_path / "run"), "--dst", str(dst)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["hf", "run"]  # no temporary or old folder left beside it


def test_plain_musicgen_export_has_our_logits(plain_dir, tmp_path):
    path, _ = plain_dir
    model = MusicgenForConditionalGeneration.from_pretrained(path, scan_layers=True)
    state = _train(model, steps=2)
    out = MusicgenForConditionalGeneration(model.config, state.params).save_pretrained(tmp_path / "hf", format="hf")
    check_logits(out, "plain", state.params, model.config, "plain MusicGen export after 2 steps: HF vs ours")


def _error(capsys, argv, match):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("musicgen-jax: error: ") and match in err, err
    assert "Traceback" not in err
    return err


def test_export_bad_inputs_are_one_line(melody_dir, tmp_path, capsys):
    path, _ = melody_dir
    _error(capsys, ["export", "--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "a")], "no such directory")
    _error(capsys, ["export", "--src", path, "--dst", str(tmp_path / "a")], "neither a training checkpoint")
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    converted = MusicgenMelodyForConditionalGeneration.from_pretrained(path).save_pretrained(tmp_path / "conv")
    _error(capsys, ["export", "--src", converted, "--dst", str(foreign)], "not a musicgen-jax export")
    assert os.listdir(foreign) == ["notes.txt"] and (foreign / "notes.txt").read_text() == "mine"
    _error(capsys, ["export", "--src", converted, "--dst", str(tmp_path / "no" / "such")], "parent folder")
    # a training checkpoint whose recorded base model is gone, and a step it does not hold
    manager = training.checkpoint_manager(tmp_path / "ckpt")
    params = {"w": jnp.zeros(2)}
    training.save_checkpoint(
        manager,
        training.TrainState(jnp.int32(4), params, {}, jnp.zeros(2, jnp.uint32)),
        {"model": str(tmp_path / "gone")},
    )
    manager.close()
    _error(capsys, ["export", "--src", str(tmp_path / "ckpt"), "--dst", str(tmp_path / "b")], "no such model directory")
    _error(
        capsys,
        ["export", "--src", str(tmp_path / "ckpt"), "--dst", str(tmp_path / "b"), "--step", "9"],
        "holds steps 4",
    )
    _error(
        capsys,
        ["export", "--src", str(tmp_path / "ckpt"), "--dst", str(tmp_path / "b"), "--model", path],
        "parameter",  # the tree does not fit the model: named, not a traceback
    )
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
