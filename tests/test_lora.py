"""LoRA adapters: a fresh adapter changes nothing, the merged weights give the logits of transformers' model with the
adapters applied on the activations (``x W + scale (x a) b`` in torch forward hooks, independent of our merge), the
adapters alone round-trip through disk, a train step moves only the adapters and keeps optimizer state for them
alone, and ``musicgen-jax finetune --lora-rank`` trains, exports, generates and resumes exactly after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musicgen_jax import MusicgenMelodyFeatureExtractor, MusicgenMelodyForConditionalGeneration, cli, lora, training
from tests.helpers import report, save_hf_melody, save_hf_musicgen, save_tiny_tokenizer
from tests.test_sharding import tiny_batch, tiny_config


@pytest.fixture(scope="module")
def melody(tmp_path_factory):
    return save_hf_melody(tmp_path_factory.mktemp("lora_melody"), decoder={"hidden_size": 20, "num_attention_heads": 4})


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return save_hf_musicgen(tmp_path_factory.mktemp("lora_plain"))


def _inputs(config, seed=1):
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


def _random_adapters(decoder_params, config, seed=0):
    """Adapters with a nonzero ``b`` (a fresh one is zero), so the update shows in the logits."""
    adapters = lora.init(jax.random.PRNGKey(seed), decoder_params, config)
    rng = np.random.default_rng(seed)
    return {
        name: {"a": np.asarray(ab["a"]), "b": (0.3 * rng.standard_normal(ab["b"].shape)).astype(np.float32)}
        for name, ab in adapters.items()
    }


# HF module of each target in one decoder layer
_HF_MODULES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "out": "self_attn.out_proj",
    "up": "fc1",
    "down": "fc2",
    "cross_q": "encoder_attn.q_proj",
    "cross_k": "encoder_attn.k_proj",
    "cross_v": "encoder_attn.v_proj",
    "cross_out": "encoder_attn.out_proj",
}


def _hf_logits(hf, inputs, adapters=None, scale=1.0):
    """transformers' logits; with ``adapters``, each targeted nn.Linear's output gets ``scale * (x @ a) @ b``."""
    handles = []
    for name, ab in (adapters or {}).items():
        for i, layer in enumerate(hf.decoder.model.decoder.layers):
            module = layer.get_submodule(_HF_MODULES[name])
            a, b = torch.from_numpy(np.array(ab["a"][i])), torch.from_numpy(np.array(ab["b"][i]))

            def hook(module, args, output, a=a, b=b):
                return output + scale * ((args[0] @ a) @ b)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return hf(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    finally:
        for handle in handles:
            handle.remove()


def test_fresh_adapters_leave_the_forward_unchanged(melody):
    path, _ = melody
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(path, scan_layers=True)
    config = lora.LoraConfig(4, alpha=16.0)
    adapters = lora.init(jax.random.PRNGKey(0), model.params["decoder"], config)
    for name, ab in adapters.items():
        fan_in = ab["a"].shape[1]
        assert not np.any(ab["b"]) and np.abs(ab["a"]).max() <= fan_in**-0.5 and np.abs(ab["a"]).max() > 0, name
    merged = lora.merge({**model.params, lora.PART: adapters}, config)
    inputs = _inputs(model.config)
    base = model(**inputs).logits
    assert np.array_equal(type(model)(model.config, merged)(**inputs).logits, base)


@pytest.mark.parametrize(
    "family,scan_layers,targets",
    [
        ("melody", True, lora.DEFAULT_TARGETS),
        ("melody", False, ("q", "v", "down")),
        ("plain", False, tuple(lora.TARGETS)),
    ],
)
def test_merged_weights_equal_the_adapters_on_the_activations(melody, plain, family, scan_layers, targets):
    path, hf = melody if family == "melody" else plain
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(path, scan_layers=scan_layers)
    config = lora.LoraConfig(3, alpha=6.0, targets=targets)  # scale 2
    adapters = _random_adapters(model.params["decoder"], config)
    inputs = _inputs(model.config)
    reference = _hf_logits(hf, inputs, adapters, scale=config.scale)
    assert np.abs(reference - _hf_logits(hf, inputs)).max() > 1e-2  # the adapters do change the logits
    model.merge_lora(adapters, config)
    err = report(
        f"LoRA merged vs on the activations ({family}, scan_layers={scan_layers})", model(**inputs).logits, reference
    )
    assert err <= 1e-4


def test_adapters_round_trip_through_disk(melody, tmp_path):
    path, _ = melody
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(path)
    config = lora.LoraConfig(2, targets=("q", "up"))
    adapters = _random_adapters(model.params["decoder"], config, seed=3)
    folder = lora.save(tmp_path / "adapters", adapters, config, {"model": path, "step": 7})
    loaded, loaded_config = lora.load(folder)
    assert loaded_config == config and json.load(open(os.path.join(folder, "lora.json")))["step"] == 7
    for name in adapters:
        for leaf in ("a", "b"):
            np.testing.assert_array_equal(loaded[name][leaf], adapters[name][leaf])
    # from_pretrained(lora=) merges them: the same weights as merging the tree by hand
    merged = MusicgenMelodyForConditionalGeneration.from_pretrained(path, lora=folder)
    model.merge_lora(adapters, config)
    for x, y in zip(jax.tree_util.tree_leaves(merged.params), jax.tree_util.tree_leaves(model.params), strict=True):
        np.testing.assert_array_equal(x, y)
    # a second save replaces ours; a folder of someone else's files is refused and left alone
    lora.save(folder, adapters, config)
    assert sorted(os.listdir(tmp_path)) == ["adapters"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(lora.LoraError, match="not a musicgen-jax LoRA folder"):
        lora.save(theirs, adapters, config)
    assert os.listdir(theirs) == ["notes.txt"]
    with pytest.raises(lora.LoraError, match="no lora.json"):
        lora.load(theirs)


def test_a_lora_step_moves_only_the_adapters_and_keeps_a_small_optimizer_state():
    config = tiny_config()
    params = training.init_params(config, seed=0)
    batch = jax.tree_util.tree_map(jnp.asarray, tiny_batch(config, 2))
    lora_config = lora.LoraConfig(2, alpha=4.0)
    adapters = lora.init(jax.random.PRNGKey(1), params["decoder"], lora_config)
    optimizer = training.make_optimizer(1e-2)
    tree = {**params, lora.PART: adapters}
    state = training.init_train_state(jax.tree_util.tree_map(jnp.copy, tree), optimizer, (lora.PART,))
    step = training.make_train_step(config, optimizer, lora=lora_config)
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    for part in params:  # the base weights are bit for bit the same
        for x, y in zip(
            jax.tree_util.tree_leaves(state.params[part]), jax.tree_util.tree_leaves(params[part]), strict=True
        ):
            np.testing.assert_array_equal(x, y)
    moved = state.params[lora.PART]
    assert all(np.any(moved[n]["b"]) for n in adapters)  # b leaves zero: a's gradient is zero at the first step
    state, _ = step(state, batch)
    assert all(not np.array_equal(state.params[lora.PART][n]["a"], adapters[n]["a"]) for n in adapters)

    # Adam's two moments over the adapters, and nothing over the base weights
    opt_leaves = [x for x in jax.tree_util.tree_leaves(state.opt_state) if np.ndim(x) > 0]
    adapter_shapes = sorted(np.shape(x) for x in jax.tree_util.tree_leaves(adapters))
    assert sorted(np.shape(x) for x in opt_leaves) == sorted(adapter_shapes * 2)
    full = training.init_train_state(params, optimizer, training.default_trainable(config)).opt_state
    full_size = sum(np.size(x) for x in jax.tree_util.tree_leaves(full))
    lora_size = sum(np.size(x) for x in jax.tree_util.tree_leaves(state.opt_state))
    print(f"[lora] optimizer state {lora_size} numbers with LoRA rank 2 vs {full_size} for full fine-tuning")
    assert sum(np.size(x) for x in opt_leaves) == 2 * lora.count(adapters)
    assert lora_size < full_size / 4


def test_bad_lora_settings_are_refused():
    for kwargs, match in [
        ({"rank": 0}, "rank must be"),
        ({"rank": 2, "targets": ("q", "nope")}, "targets must be"),
        ({"rank": 2, "targets": ()}, "targets must be"),
        ({"rank": 2, "alpha": float("nan")}, "alpha must be"),
    ]:
        with pytest.raises(lora.LoraError, match=match):
            lora.LoraConfig(**kwargs)
    with pytest.raises(lora.LoraError, match="no cross-attention"):
        lora.LoraConfig(2, targets=("cross_q",)).check(tiny_config())


# ---------------------------------------------------------------------------------------------------------------
# `musicgen-jax finetune --lora-rank`.


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path, _ = save_hf_melody(tmp_path_factory.mktemp("lora_ft_model"), chroma_length=4)
    save_tiny_tokenizer(path)
    MusicgenMelodyFeatureExtractor(n_fft=512, hop_length=128).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from tests.test_training import _write_data

    return _write_data(tmp_path_factory.mktemp("lora_data"))


def _argv(model_dir, data_dir, out, steps, *extra):
    argv = ["finetune", "--model", model_dir, "--data", str(data_dir), "--out", str(out), "--duration", "0.04"]
    return [*argv, "--steps", str(steps), "--batch-size", "2", "--lr", "3e-2", "--log-every", "1", *extra]


def test_finetune_with_lora_trains_exports_and_generates(model_dir, data_dir, tmp_path, capsys):
    from tests.test_export import check_logits

    out = tmp_path / "out"
    argv = _argv(model_dir, data_dir, out, 12, "--lora-rank", "4", "--lora-alpha", "8", "--save-every", "12", "--remat")
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "training lora for 12 steps" in printed and "LoRA adapters:" in printed, printed
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    with capsys.disabled():
        print(f"\n[finetune] LoRA rank 4: loss {records[0]['loss']:.3f} -> {records[-1]['loss']:.3f} over 12 steps")
    assert records[-1]["loss"] < records[0]["loss"]
    adapters, config = lora.load(out / "lora")
    assert config == lora.LoraConfig(4, 8.0) and json.load(open(out / "lora" / "lora.json"))["step"] == 12

    # the training checkpoint keeps the base weights as they were, beside the adapters it trained
    params = training.restore_params(out / "checkpoints")
    base = MusicgenMelodyForConditionalGeneration.from_pretrained(model_dir, scan_layers=True)
    np.testing.assert_array_equal(
        params["decoder"]["layers"]["attn"]["qkv"], base.params["decoder"]["layers"]["attn"]["qkv"]
    )
    for name in adapters:
        np.testing.assert_array_equal(params[lora.PART][name]["b"], adapters[name]["b"])

    # export merges the adapters: transformers' logits are those of the base model merged with them
    assert cli.main(["export", "--src", str(out / "checkpoints"), "--dst", str(tmp_path / "hf")]) == 0
    base.merge_lora(out / "lora")
    with capsys.disabled():
        check_logits(tmp_path / "hf", "melody", base.params, base.config, "LoRA export after 12 steps: HF vs ours")

    wav = tmp_path / "lora.wav"
    args = ["generate", "--model", model_dir, "--text", "calm piano", "--max-new-tokens", "4", "--quiet"]
    assert cli.main([*args, "--lora", str(out / "lora"), "--out", str(wav)]) == 0 and wav.exists()
    capsys.readouterr()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--lora-rank", "0"], "rank must be an integer >= 1"),
        (["--lora-alpha", "4"], "--lora-alpha and --lora-targets need --lora-rank"),
        (["--lora-rank", "2", "--lora-targets", "q,zz"], "targets must be distinct names"),
    ],
)
def test_bad_lora_flags_are_one_line_before_any_work(tmp_path, capsys, flags, message):
    argv = ["finetune", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]
    assert cli.main([*argv, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not os.path.exists(tmp_path / "o"), err


def test_cross_attention_targets_on_melody_are_one_line(model_dir, data_dir, tmp_path, capsys):
    argv = _argv(model_dir, data_dir, tmp_path / "out", 1, "--lora-rank", "2", "--lora-targets", "q,cross_q")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no cross-attention" in err, err


def test_generate_with_a_missing_lora_folder_is_one_line(model_dir, tmp_path, capsys):
    argv = ["generate", "--model", model_dir, "--text", "x", "--max-new-tokens", "2", "--quiet"]
    assert cli.main([*argv, "--lora", str(tmp_path / "nope"), "--out", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a LoRA adapter folder" in err, err


def _env():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def test_lora_finetune_killed_then_resumed_ends_where_an_unbroken_run_does(model_dir, data_dir, tmp_path):
    """SIGKILL once the step-2 checkpoint is on disk; the rerun resumes there and its adapters, optimizer state
    and last loss equal those of a run that was never interrupted (dropout on: the rng resumes too)."""
    steps, lora_flags = 6, ["--lora-rank", "2", "--save-every", "2", "--keep", "5"]
    command = [sys.executable, "-m", "musicgen_jax.cli"]
    unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
    subprocess.run(
        [*command, *_argv(model_dir, data_dir, unbroken, steps, *lora_flags)],
        env=_env(),
        check=True,
        capture_output=True,
    )
    child = subprocess.Popen(
        [*command, *_argv(model_dir, data_dir, killed, steps, *lora_flags)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not os.path.isdir(killed / "checkpoints" / "2") and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL  # killed before the run could finish
    done_before = sorted(int(s) for s in os.listdir(killed / "checkpoints") if s.isdigit())
    assert done_before and max(done_before) < steps, done_before
    result = subprocess.run(
        [*command, *_argv(model_dir, data_dir, killed, steps, *lora_flags)], env=_env(), capture_output=True, text=True
    )
    assert result.returncode == 0 and "resuming from" in result.stdout, result.stderr
    print(f"[kill] LoRA finetune killed after checkpoints {done_before}, resumed to step {steps}")

    def final(out):
        manager = training.checkpoint_manager(out / "checkpoints")
        params, metadata, step = training.restore_run(out / "checkpoints")
        manager.close()
        return params, step, [json.loads(line) for line in open(out / "metrics.jsonl")][-1]

    (a, step_a, last_a), (b, step_b, last_b) = final(unbroken), final(killed)
    assert step_a == step_b == steps and last_a["loss"] == last_b["loss"] and last_a["step"] == steps
    for x, y in zip(jax.tree_util.tree_leaves(a[lora.PART]), jax.tree_util.tree_leaves(b[lora.PART]), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(lora.load(unbroken / "lora")[0]["q"]["a"], lora.load(killed / "lora")[0]["q"]["a"])
