"""Training: HF's loss and torch autograd's gradients on tiny random checkpoints (float32), the optimizer and train
step (freezing, dropout, bf16, accumulation), orbax resume, and the ``finetune`` command end to end."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from musicgen_jax import MusicgenMelodyFeatureExtractor, MusicgenMelodyForConditionalGeneration, sampling, training
from tests.helpers import report, save_hf_melody, save_tiny_tokenizer
from tests.test_sharding import _max_diff, tiny_batch, tiny_config

# ---------------------------------------------------------------------------------------------------------------
# Parity with HF's `model(..., labels=...).loss` and its gradients.


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    # decoder width 20: both projections exist (T5 16 -> 20, chroma 12 -> 20)
    path, hf = save_hf_melody(
        tmp_path_factory.mktemp("train"), decoder={"hidden_size": 20, "num_attention_heads": 4}, chroma_length=5
    )
    return hf, MusicgenMelodyForConditionalGeneration.from_pretrained(
        path, scan_layers=True
    )  # the layout fine-tuning uses


def _case(name: str, batch=3, seq=7, length=6, seed=0):
    rng = np.random.default_rng(seed)
    K, V = 4, 16
    ids = rng.integers(2, 90, (batch, seq))
    mask = np.ones((batch, seq), np.int64)
    mask[1, 4:] = 0  # padded text
    mask[2, 6:] = 0
    labels = rng.integers(0, V, (batch, length, K))
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if "pad" in name:  # pad ids (= V) inside the labels are ignored, like the delay pattern's triangles
        labels[0, 0, 1:] = V
        labels[1, -2:, :] = V
        labels[2, 3, 2] = -100
    if "melody" in name:
        inputs["input_features"] = np.eye(12, dtype=np.float32)[rng.integers(0, 12, (batch, 3))]
    if "melody only" in name:
        del inputs["input_ids"], inputs["attention_mask"]
    if "decoder mask" in name:
        dmask = np.ones((batch, length), np.int64)
        dmask[0, -2:] = 0
        inputs["decoder_attention_mask"] = dmask
    return inputs


CASES = [
    "padded text",
    "padded text + pad labels",
    "padded text + melody + pad labels",
    "melody only",
    "padded text + decoder mask",
]


def _hf_loss(hf, inputs, backward=False):
    hf.zero_grad()
    with torch.set_grad_enabled(backward):
        out = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    if backward:
        out.loss.backward()
    return out.loss.item()


_STATIC = ("config", "deterministic", "trainable", "compute_dtype")
_jit_loss = jax.jit(training.loss_fn, static_argnames=_STATIC)
_jit_grad = jax.jit(jax.grad(training.loss_fn), static_argnames=_STATIC)


@pytest.mark.parametrize("case", CASES)
def test_loss_matches_hf(pair, case):
    hf, ours = pair
    inputs = _case(case)
    ref = _hf_loss(hf, inputs)
    got = _jit_loss(ours.params, ours.config, jax.tree_util.tree_map(jnp.asarray, inputs))
    err = report(f"loss {case}", got, ref)
    assert err <= 1e-5 * max(1.0, abs(ref))
    # The front door: model(..., labels=...) gives the same loss, and HF's logits.
    out = ours(**inputs)
    assert abs(float(out.loss) - ref) <= 1e-5 * max(1.0, abs(ref))
    assert out.logits.shape[0] == inputs["labels"].shape[0] * 4


def test_shift_tokens_right_matches_hf():
    from transformers.models.musicgen_melody.modeling_musicgen_melody import shift_tokens_right

    labels = np.random.default_rng(0).integers(0, 17, (2, 5, 4))
    labels[0, 2, 1] = -100
    ref = shift_tokens_right(torch.from_numpy(labels), 16, 16).numpy()
    np.testing.assert_array_equal(training.shift_tokens_right(labels, 16, 16), ref)
    np.testing.assert_array_equal(np.asarray(training.shift_tokens_right(jnp.asarray(labels), 16, 16)), ref)


def test_codebook_without_labels_is_nan_like_hf(pair):
    hf, ours = pair
    inputs = _case("padded text")
    inputs["labels"][:, :, 3] = 16  # every label of codebook 3 is pad: torch's mean over nothing is NaN
    assert np.isnan(_hf_loss(hf, inputs))
    assert np.isnan(float(_jit_loss(ours.params, ours.config, jax.tree_util.tree_map(jnp.asarray, inputs))))


def _grad_errors(hf, ours, inputs, parts):
    """Max relative error per parameter leaf between our gradient and torch autograd's, after converting HF's
    gradients with our own conversion tables (they are linear: transposes, reshapes, stacking)."""
    from convert import convert_tensors

    _hf_loss(hf, inputs, backward=True)
    prefixes = {
        "decoder": ("decoder.", "enc_to_dec_proj.", "audio_enc_to_dec_proj."),
        "text_encoder": ("text_encoder.",),
    }
    wanted = tuple(p for part in parts for p in prefixes[part])
    grads = {n: p.grad.numpy() for n, p in hf.named_parameters() if n.startswith(wanted) and p.grad is not None}
    ref = convert_tensors(grads, ours.config, parts=parts)
    trainable = tuple(ref)
    got = _jit_grad(ours.params, ours.config, jax.tree_util.tree_map(jnp.asarray, inputs), trainable=trainable)
    errors = {}
    for path, r in jax.tree_util.tree_flatten_with_path(ref)[0]:
        g = got
        for entry in path:
            g = g[entry.key]
        errors[jax.tree_util.keystr(path)] = float(np.max(np.abs(np.asarray(g) - r)) / max(np.max(np.abs(r)), 1e-30))
    return errors, got


def test_decoder_gradients_match_torch(pair):
    hf, ours = pair
    errors, got = _grad_errors(hf, ours, _case("padded text + melody + pad labels"), ("decoder",))
    for name, err in errors.items():
        print(f"[parity] grad {name}: max rel err {err:.2e}")
    expected = {k: v for k, v in ours.params.items() if k in ("decoder", "text_proj", "chroma_proj")}
    assert len(errors) == len(jax.tree_util.tree_leaves(expected)) == 16  # 12 decoder leaves + both projections
    assert max(errors.values()) <= 1e-4
    # The frozen parts (stop_gradient) get exact zeros.
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree_util.tree_leaves(got["text_encoder"]))


def test_text_encoder_gradients_match_torch(pair):
    hf, ours = pair
    errors, _ = _grad_errors(hf, ours, _case("padded text + pad labels"), ("decoder", "text_encoder"))
    t5 = {k: v for k, v in errors.items() if k.startswith("['text_encoder']")}
    print(f"[parity] grad text encoder: max rel err {max(t5.values()):.2e} over {len(t5)} leaves")
    assert len(t5) == len(jax.tree_util.tree_leaves(ours.params["text_encoder"]))
    assert max(errors.values()) <= 1e-4


def test_model_loss_rejects_bad_labels(pair):
    _, ours = pair
    inputs = _case("padded text")
    with pytest.raises(ValueError, match="num_codebooks=4"):
        ours(input_ids=inputs["input_ids"], labels=inputs["labels"][..., :3])
    bad = inputs["labels"].copy()
    bad[0, 0, 0] = 17
    with pytest.raises(ValueError, match=r"-100 or lie in \[0, 16\]"):
        ours(input_ids=inputs["input_ids"], labels=bad)


def test_delay_labels_follow_the_generation_layout():
    codes = np.random.default_rng(0).integers(0, 16, (2, 4, 5))
    labels = training.delay_labels(codes, 16)
    assert labels.shape == (2, 5 + 3, 4)
    # Reverting the delay pattern (dropping pads, as generate does) gives the codes back.
    np.testing.assert_array_equal(sampling.revert_delay_pattern(np.swapaxes(labels, 1, 2), 16), codes)
    # Codebook k starts k positions late; the decoder reads BOS and then the labels shifted by one.
    assert (labels[:, 0, 1:] == 16).all() and (labels[:, -1, :3] == 16).all()
    ids = training.shift_tokens_right(labels, 16, 16)
    assert (ids[:, :, 0] == 16).all()
    stereo = training.delay_labels(np.random.default_rng(1).integers(0, 16, (1, 8, 5)), 16, audio_channels=2)
    assert stereo.shape == (1, 5 + 3, 8) and (stereo[0, 0, 2:] == 16).all() and (stereo[0, 0, :2] != 16).all()


# ---------------------------------------------------------------------------------------------------------------
# The optimizer and the train step, on a tiny random model (no torch).


@pytest.fixture(scope="module")
def tiny():
    config = tiny_config()
    return config, training.init_params(config, seed=0), tiny_batch(config, 4)


def _copy(tree):
    return jax.tree_util.tree_map(jnp.copy, tree)


def _state(params, optimizer, trainable, seed=0):
    return training.init_train_state(_copy(params), optimizer, trainable, seed=seed)


@pytest.fixture(scope="module")
def default_step(tiny):
    """The default setup (decoder + projections train, dropout on), compiled once for the tests that share it."""
    config = tiny[0]
    optimizer = training.make_optimizer(1e-2, warmup_steps=2, total_steps=10)
    trainable = training.default_trainable(config)
    return optimizer, trainable, training.make_train_step(config, optimizer, trainable=trainable)


def _unchanged(a, b) -> bool:
    return _max_diff(a, b) == 0.0


def test_train_step_updates_only_the_trainable_parts(tiny, default_step):
    config, params, batch = tiny
    batch = jax.tree_util.tree_map(jnp.asarray, batch)
    optimizer, trainable, step = default_step
    assert trainable == ("chroma_proj", "decoder", "text_proj")
    state, _ = step(_state(params, optimizer, trainable), batch)  # warmup: the learning rate starts at 0
    assert _unchanged(state.params, params)
    state, metrics = step(state, batch)
    assert int(state.step) == 2 and np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    for part in params:
        assert _unchanged(state.params[part], params[part]) == (part not in trainable), part
    assert set(state.opt_state[1][0].mu) == set(trainable)  # Adam keeps no state for frozen parts

    # --train-text-encoder: T5 trains too; the codec never does.
    trainable = training.default_trainable(config, train_text_encoder=True)
    assert trainable == ("chroma_proj", "decoder", "text_encoder", "text_proj")
    optimizer = training.make_optimizer(1e-2)  # no warmup
    state, _ = training.make_train_step(config, optimizer, trainable=trainable)(
        _state(params, optimizer, trainable), batch
    )
    assert not _unchanged(state.params["text_encoder"], params["text_encoder"])
    assert _unchanged(state.params["audio_encoder"], params["audio_encoder"])


def test_dropout_uses_the_state_rng(tiny):
    config, params, batch = tiny
    batch = jax.tree_util.tree_map(jnp.asarray, batch)
    key = jax.random.PRNGKey(5)
    clean = _jit_loss(params, config, batch)
    noisy = _jit_loss(params, config, batch, rng=key, deterministic=False)
    again = _jit_loss(params, config, batch, rng=key, deterministic=False)
    other = _jit_loss(params, config, batch, rng=jax.random.PRNGKey(6), deterministic=False)
    assert float(noisy) == float(again) and float(noisy) != float(clean) and float(noisy) != float(other)
    with pytest.raises(ValueError, match="needs an rng"):
        training.loss_fn(params, config, batch, deterministic=False)


def test_bf16_compute_keeps_float32_masters(tiny):
    config, params, batch = tiny
    batch = jax.tree_util.tree_map(jnp.asarray, batch)
    f32 = float(_jit_loss(params, config, batch))
    bf16 = float(_jit_loss(params, config, batch, compute_dtype=jnp.bfloat16))
    print(f"[parity] bf16 loss {bf16:.5f} vs float32 {f32:.5f} (rel {abs(bf16 - f32) / f32:.1e})")
    assert abs(bf16 - f32) <= 1e-2 * f32
    optimizer = training.make_optimizer(1e-3)
    trainable = training.default_trainable(config)
    step = training.make_train_step(config, optimizer, trainable=trainable, compute_dtype=jnp.bfloat16)
    state, metrics = step(_state(params, optimizer, trainable), batch)
    assert np.isfinite(float(metrics["loss"]))
    assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {jnp.dtype(jnp.float32)}


def test_accumulation_equals_one_big_batch(tiny):
    config, params, _ = tiny
    batch = tiny_batch(config, 4, seed=3)
    batch["labels"] = np.random.default_rng(3).integers(0, 32, batch["labels"].shape).astype(np.int32)  # no ignored
    del batch["input_ids"], batch["attention_mask"]  # melody only: a smaller program to compile
    halves = [jax.tree_util.tree_map(lambda x, i=i: jnp.asarray(x[2 * i : 2 * i + 2]), batch) for i in range(2)]
    trainable = training.default_trainable(config)

    # A large Adam eps keeps the update proportional to the gradient, so roundoff in tiny gradient entries is not
    # amplified to the learning rate's scale (at eps=1e-8 the first update is ~lr * sign(g)).
    whole_opt = training.make_optimizer(1e-2, eps=1e-3)
    whole, _ = training.make_train_step(config, whole_opt, trainable=trainable, dropout=False)(
        _state(params, whole_opt, trainable), jax.tree_util.tree_map(jnp.asarray, batch)
    )
    accum_opt = training.make_optimizer(1e-2, eps=1e-3, accumulation_steps=2)
    step = training.make_train_step(config, accum_opt, trainable=trainable, dropout=False)
    state, _ = step(_state(params, accum_opt, trainable), halves[0])
    np.testing.assert_array_equal(state.params["decoder"]["lm_heads"], params["decoder"]["lm_heads"])  # not yet
    state, _ = step(state, halves[1])
    err = _max_diff(state.params, whole.params)
    print(f"[parity] 2 accumulated half batches vs 1 batch: max param diff {err:.1e}")
    assert err <= 1e-6


def test_schedule_warms_up_then_decays():
    schedule = training.make_schedule(1e-3, warmup_steps=10, total_steps=100)
    assert float(schedule(0)) == 0.0 and abs(float(schedule(10)) - 1e-3) < 1e-9
    assert float(schedule(55)) < 1e-3 and float(schedule(100)) < 1e-6


def test_resume_gives_the_identical_next_loss(tiny, default_step, tmp_path):
    _, params, batch = tiny
    batch = jax.tree_util.tree_map(jnp.asarray, batch)
    optimizer, trainable, step = default_step  # dropout on: the rng must resume too
    state = _state(params, optimizer, trainable, seed=7)
    for _ in range(3):
        state, _ = step(state, batch)
    manager = training.checkpoint_manager(tmp_path / "ckpt")
    training.save_checkpoint(manager, state, {"note": "three steps"})
    target = training.abstract_state(state)
    _, expected = step(state, batch)  # donates `state`

    restored, metadata = training.restore_checkpoint(training.checkpoint_manager(tmp_path / "ckpt"), target)
    assert metadata == {"note": "three steps"} and int(restored.step) == 3
    _, got = step(restored, batch)
    assert float(got["loss"]) == float(expected["loss"])
    params_only = training.restore_params(tmp_path / "ckpt")
    assert set(params_only) == set(params)


# ---------------------------------------------------------------------------------------------------------------
# `musicgen-jax finetune`.


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path, _ = save_hf_melody(tmp_path_factory.mktemp("ft_model"), chroma_length=4)
    save_tiny_tokenizer(path)
    MusicgenMelodyFeatureExtractor(n_fft=512, hop_length=128).save_pretrained(path)
    return path


def _write_data(folder, captions=True):
    import soundfile

    os.makedirs(folder, exist_ok=True)
    t = np.arange(4000)
    clips = {
        "piano.wav": (np.sin(2 * np.pi * 440 * t[:1200] / 32000), 32000),  # 37.5 ms: padded to the duration
        "drums.flac": (np.stack([np.sin(t[:900] * 0.3), np.cos(t[:900] * 0.1)], 1) * 0.5, 16000),  # stereo, resampled
        "synth.wav": (0.3 * np.sign(np.sin(2 * np.pi * 220 * t[:2000] / 44100)), 44100),
    }
    for i, (name, (wave, rate)) in enumerate(clips.items()):
        soundfile.write(os.path.join(folder, name), wave.astype(np.float32), rate)
        if captions:
            with open(os.path.join(folder, os.path.splitext(name)[0] + ".txt"), "w") as f:
                f.write(["a calm piano melody", "funky drums", "dark techno with synthesizers"][i])
    return folder


def test_finetune_overfits_a_fixed_batch(model_dir, tmp_path, capsys):
    from musicgen_jax import cli

    data = _write_data(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["finetune", "--model", model_dir, "--data", str(data), "--out", str(out), "--duration", "0.04"]
    argv += ["--steps", "30", "--batch-size", "3", "--lr", "1e-2", "--log-every", "5", "--save-every", "15"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 encoded now" in printed and "tokens/s" in printed
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    first, last = records[0]["loss"], records[-1]["loss"]
    with capsys.disabled():
        print(f"\n[finetune] loss {first:.3f} -> {last:.3f} over 30 steps on one batch of 3 clips")
    assert records[-1]["step"] == 30 and last < 0.8 * first
    assert sorted(os.listdir(out / "checkpoints")) == ["15", "30"]
    assert len([n for n in os.listdir(out / "cache") if n.endswith(".codes.npy")]) == 3
    # The trained parameters load into the model and differ from the base model's.
    params = training.restore_params(out / "checkpoints")
    base = MusicgenMelodyForConditionalGeneration.from_pretrained(model_dir)
    assert not np.array_equal(params["decoder"]["lm_heads"], base.params["decoder"]["lm_heads"])
    np.testing.assert_array_equal(params["text_encoder"]["embed"], base.params["text_encoder"]["embed"])

    # A second run with more steps reads the cached codes and resumes from step 30.
    argv[argv.index("--steps") + 1] = "32"
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 encoded now, 3 from" in printed and "resuming from" in printed and "step 32/32" in printed


def test_finetune_labels_match_the_codec(model_dir, tmp_path):
    from musicgen_jax import data as data_pipeline
    from musicgen_jax import finetune

    data = _write_data(tmp_path / "data")
    model, tokenizer, fe = finetune._load(model_dir)
    examples = data_pipeline.find_examples(data)
    dataset = data_pipeline.prepare_dataset(
        model, examples, tokenizer, fe, duration=0.04, cache_dir=str(tmp_path / "cache"), model_path=model_dir
    )
    frames = round(0.04 * 32000) // 4  # hop 4
    assert dataset.labels.shape == (3, frames + 3, 4) and dataset.input_features.shape[0] == 3
    # drums.flac: 900 samples at 16 kHz -> 1800 at 32 kHz, longer than the 1280 of a crop: encoded whole (450
    # frames, all scored); the dataset's fixed crop is its first 320 frames.
    codes, _ = data_pipeline.encode_clip(model, fe, examples[0].audio, 0.04)
    assert codes.shape == (4, 450) and (codes >= 0).all()
    np.testing.assert_array_equal(dataset.labels[0, :frames, 0], codes[0, :frames])
    # piano.wav: 1200 samples, shorter than a crop: padded, the 20 frames past its end ignored (-100).
    codes, _ = data_pipeline.encode_clip(model, fe, examples[1].audio, 0.04)
    assert codes.shape == (4, frames) and (codes[:, :300] >= 0).all() and (codes[:, 300:] == -100).all()


@pytest.mark.parametrize(
    "problem,message",
    [
        ("empty", "no audio files"),
        ("caption", "no caption file"),
        ("unreadable", "cannot read audio"),
        ("model", "no such model directory"),
        ("steps", "--steps must be >= 1"),
    ],
)
def test_finetune_bad_input_is_one_line(model_dir, tmp_path, capsys, problem, message):
    from musicgen_jax import cli

    data = tmp_path / "data"
    os.makedirs(data)
    model = model_dir
    steps = "1"
    if problem == "caption":
        _write_data(data, captions=False)
    elif problem == "unreadable":
        _write_data(data)
        (data / "broken.wav").write_bytes(b"not audio at all")
        (data / "broken.txt").write_text("noise")
    elif problem == "model":
        _write_data(data)
        model = str(tmp_path / "missing")
    elif problem == "steps":
        _write_data(data)
        steps = "0"
    argv = ["finetune", "--model", model, "--data", str(data), "--out", str(tmp_path / "out"), "--steps", steps]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("musicgen-jax: error: ") and message in err, err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "out" / "checkpoints"), err


def test_finetune_help_lists_its_flags(capsys):
    from musicgen_jax import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["finetune", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: musicgen-jax finetune"), out
    for flag in ("--model", "--data", "--out", "--steps", "--batch-size", "--lr", "--duration", "--mesh", "--keep"):
        assert flag in out, flag
    assert "--lora-rank" in out and "--remat" in out and "(default 1000)" in out


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--steps", "x"], "musicgen-jax finetune: error: argument --steps: invalid int value: 'x'"),
        (["--batch-size", "2.5"], "musicgen-jax finetune: error: argument --batch-size: invalid int value: '2.5'"),
        (["--no-such-flag"], "musicgen-jax: error: unrecognized arguments: --no-such-flag"),
    ],
)
def test_finetune_bad_flag_is_one_line_from_argparse(tmp_path, capsys, flags, message):
    from musicgen_jax import cli

    argv = ["finetune", "--model", "m", "--data", str(tmp_path), "--out", str(tmp_path / "out"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith(message), err
    assert "usage:" not in err and not os.path.exists(tmp_path / "out"), err


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--lr", "nan"], "--lr must be > 0, got nan"),
        (["--clip-norm", "-1"], "--warmup, --weight-decay and --clip-norm must be >= 0"),
    ],
)
def test_finetune_bad_value_is_one_line_before_any_work(tmp_path, capsys, flags, message):
    from musicgen_jax import cli

    argv = ["finetune", "--model", str(tmp_path / "missing"), "--data", str(tmp_path / "missing")]
    argv += ["--out", str(tmp_path / "out"), *flags]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"musicgen-jax: error: {message}\n" and not os.path.exists(tmp_path / "out"), err


def test_finetune_runs_on_the_plain_family(tmp_path, capsys):
    """Plain MusicGen (text through cross-attention): the same command trains it, with no chroma computed."""
    from musicgen_jax import MusicgenForConditionalGeneration, cli
    from tests.helpers import save_hf_musicgen

    path, _ = save_hf_musicgen(tmp_path / "plain")
    save_tiny_tokenizer(path)
    data = _write_data(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["finetune", "--model", path, "--data", str(data), "--out", str(out), "--duration", "0.04"]
    argv += ["--steps", "20", "--batch-size", "3", "--lr", "1e-2", "--log-every", "5", "--save-every", "20"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 encoded now" in printed and "chroma" not in printed
    assert not [n for n in os.listdir(out / "cache") if n.endswith(".chroma.npy")]
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    first, last = records[0]["loss"], records[-1]["loss"]
    with capsys.disabled():
        print(f"\n[finetune] plain MusicGen: loss {first:.3f} -> {last:.3f} over 20 steps")
    assert last < 0.8 * first
    trained = training.restore_params(out / "checkpoints")
    base = MusicgenForConditionalGeneration.from_pretrained(path, scan_layers=True)
    assert not np.array_equal(
        trained["decoder"]["layers"]["cross_attn"]["kv"], base.params["decoder"]["layers"]["cross_attn"]["kv"]
    )
