"""Fine-tuning data and condition dropout: audiocraft's dropouts (statistics, independence, determinism), a dropped
row conditioned as HF's unconditional input, random crops of long files, the cache, stereo/any-rate input,
validation splits and metadata.jsonl captions."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile
import torch

from musicgen_jax import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration, loss
from musicgen_jax import data as data_pipeline
from musicgen_jax.condition_dropout import ConditionDropout, draw, drop_words
from tests.helpers import report, save_hf_melody, save_hf_musicgen
from tests.test_chroma import hf_module  # noqa: F401  (a fixture: HF's extractor with torchaudio stand-ins)
from tests.test_training import _write_data, model_dir  # noqa: F401  (a fixture)

# ---------------------------------------------------------------------------------------------------------------
# The draws.


def _within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_dropout_rates_follow_their_probabilities_independently():
    dropout = ConditionDropout(cfg=0.2, melody=0.5, word=0.3)
    steps, rows = 500, 16
    captions = ["a calm piano melody with soft strings"] * rows
    uncond, no_melody, kept = [], [], 0
    for step in range(steps):
        draws = draw(dropout, 3, step, range(rows), captions)
        uncond.append(draws.uncond)
        no_melody.append(draws.no_melody)
        for caption in draws.captions:
            words = caption.split(" ") if caption else []
            assert words == [w for w in captions[0].split(" ") if w in words]  # kept words, in order
            kept += len(words)
    uncond, no_melody = np.concatenate(uncond), np.concatenate(no_melody)
    n, words = uncond.size, steps * rows * 7
    print(f"[dropout] joint {uncond.mean():.4f} melody {no_melody.mean():.4f} words {1 - kept / words:.4f} ({n} rows)")
    assert _within_binomial(int(uncond.sum()), n, 0.2)
    assert _within_binomial(int(no_melody.sum()), n, 0.5)
    assert _within_binomial(words - kept, words, 0.3)
    # Independence: both drops together as often as the product of their rates.
    assert _within_binomial(int((uncond & no_melody).sum()), n, 0.1)


def test_dropout_draws_are_a_function_of_seed_step_and_row():
    dropout = ConditionDropout(cfg=0.5, melody=0.5, word=0.5)
    captions = [f"word{i} and more words here" for i in range(8)]
    a = draw(dropout, 1, 7, range(8), captions)
    b = draw(dropout, 1, 7, range(8), captions)
    assert (a.uncond == b.uncond).all() and (a.no_melody == b.no_melody).all() and a.captions == b.captions
    # One process's share of the rows draws what the whole batch drew for them.
    half = draw(dropout, 1, 7, range(4, 8), captions[4:])
    assert (half.uncond == a.uncond[4:]).all() and half.captions == a.captions[4:]
    others = [draw(dropout, seed, step, range(8), captions) for seed, step in ((2, 7), (1, 8))]
    assert all((o.uncond != a.uncond).any() or o.captions != a.captions for o in others)
    # Turning word dropout off leaves the joint and melody draws as they were.
    plain = draw(ConditionDropout(cfg=0.5, melody=0.5), 1, 7, range(8), captions)
    assert (plain.uncond == a.uncond).all() and (plain.no_melody == a.no_melody).all()
    assert plain.captions == captions


def test_word_dropout_extremes():
    rng = np.random.default_rng(0)
    assert drop_words("funky drums", 0.0, rng) == "funky drums"
    assert drop_words("funky drums", 1.0, rng) == ""
    with pytest.raises(ValueError, match=r"cfg dropout must lie in \[0, 1\]"):
        ConditionDropout(cfg=1.5)


# ---------------------------------------------------------------------------------------------------------------
# A joint-dropped row is HF's unconditional input (as HF's generate builds it for guidance).


@pytest.fixture(scope="module")
def melody_pair(tmp_path_factory):
    path, hf = save_hf_melody(
        tmp_path_factory.mktemp("uncond"), decoder={"hidden_size": 20, "num_attention_heads": 4}, chroma_length=5
    )
    return hf, MusicgenMelodyForConditionalGeneration.from_pretrained(path, scan_layers=True)


@pytest.fixture(scope="module")
def plain_pair(tmp_path_factory):
    path, hf = save_hf_musicgen(tmp_path_factory.mktemp("uncond_plain"))
    return hf, MusicgenForConditionalGeneration.from_pretrained(path, scan_layers=True)


def _inputs(melody: bool, K: int, V: int):
    rng = np.random.default_rng(0)
    B, W, T = 3, 6, 5
    mask = np.ones((B, W), np.int64)
    mask[1, 3:] = 0
    inputs = {
        "input_ids": rng.integers(2, 90, (B, W)),
        "attention_mask": mask,
        "labels": rng.integers(0, V, (B, T, K)),
    }
    if melody:
        inputs["input_features"] = np.eye(12, dtype=np.float32)[rng.integers(1, 12, (B, 3))]
    return inputs


def _hf_logits(hf, inputs, uncond_rows):
    """HF's logits per row: a dropped row gets the unconditional half of what HF's ``generate`` builds under
    guidance (its own ``_prepare_*_kwargs_for_generation``: zero T5 states and mask, the null chroma), the others
    the conditional half."""
    from transformers import GenerationConfig
    from transformers.models.musicgen_melody.modeling_musicgen_melody import shift_tokens_right

    pad = hf.config.decoder.pad_token_id
    labels = torch.from_numpy(inputs["labels"])
    ids = shift_tokens_right(labels, pad, pad).reshape(-1, labels.shape[1])
    kwargs = {k: torch.from_numpy(inputs[k]) for k in ("attention_mask", "input_features") if k in inputs}
    text = torch.from_numpy(inputs["input_ids"])
    guidance = GenerationConfig(guidance_scale=3.0)
    B, drop = text.shape[0], torch.from_numpy(uncond_rows)

    def pick(both):  # [cond; uncond] -> per row
        return torch.where(drop.reshape(-1, *(1,) * (both.ndim - 1)), both[B:], both[:B])

    with torch.no_grad():
        if "input_features" in kwargs:  # MusicGen Melody: the prefix [chroma; text]
            built = hf._prepare_encoder_hidden_states_kwargs_for_generation(text, kwargs, None, guidance)
            return hf(encoder_hidden_states=pick(built["encoder_hidden_states"]), decoder_input_ids=ids).logits.numpy()
        built = hf._prepare_text_encoder_kwargs_for_generation(text, kwargs, None, guidance)
        states, mask = pick(built["encoder_outputs"].last_hidden_state), pick(built["attention_mask"])
        return hf(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=ids).logits.numpy()


@pytest.mark.parametrize("family", ["melody", "plain"])
def test_a_joint_dropped_row_is_conditioned_as_hf_generates_the_unconditional_row(melody_pair, plain_pair, family):
    hf, ours = melody_pair if family == "melody" else plain_pair
    dec = ours.config.decoder
    inputs = _inputs(family == "melody", dec.num_codebooks, dec.vocab_size)
    uncond = np.array([True, False, True])
    T = inputs["labels"].shape[1]
    ref = _hf_logits(hf, inputs, uncond)
    ref = ref.reshape(-1, *ref.shape[-2:])[:, -T:]
    batch = jax.tree_util.tree_map(jnp.asarray, {**inputs, "uncond": uncond})
    got = jax.jit(loss.training_logits, static_argnames=("config",))(ours.params, ours.config, batch)
    got = np.asarray(got).reshape(ref.shape[0], *got.shape[2:])[:, -T:]
    err = report(f"{family} logits with rows 0 and 2 unconditional vs HF", got, ref)
    assert err <= 1e-4 * max(1.0, float(np.abs(ref).max()))
    # And the dropped rows really differ from their conditioned selves.
    plain = np.asarray(
        jax.jit(loss.training_logits, static_argnames=("config",))(
            ours.params, ours.config, jax.tree_util.tree_map(jnp.asarray, inputs)
        )
    )
    plain = plain.reshape(ref.shape[0], *plain.shape[2:])[:, -T:]
    K = dec.num_codebooks
    assert np.abs(plain[0:K] - got[0:K]).max() > 1e-3 and np.abs(plain[K : 2 * K] - got[K : 2 * K]).max() < 1e-6


# ---------------------------------------------------------------------------------------------------------------
# Crops, the cache, stereo and any rate.


def _signal(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.05
    return (0.5 * np.sin(2 * np.pi * (220 + 2000 * t) * t) + noise).astype(np.float32)


def _write(folder, name: str, wave: np.ndarray, rate: int, caption: str) -> str:
    os.makedirs(folder, exist_ok=True)
    soundfile.write(os.path.join(folder, name), wave, rate, subtype="FLOAT" if name.endswith(".wav") else None)
    with open(os.path.join(folder, os.path.splitext(name)[0] + ".txt"), "w") as f:
        f.write(caption)
    return os.path.join(folder, name)


@pytest.fixture(scope="module")
def loaded(model_dir):  # noqa: F811
    from musicgen_jax import finetune

    return finetune._load(model_dir)


def _prepare(loaded, model_dir, folder, cache, logs=None, duration=0.04):  # noqa: F811
    model, tokenizer, fe = loaded
    examples = data_pipeline.find_examples(folder)
    log = logs.append if logs is not None else print
    return data_pipeline.prepare_dataset(
        model, examples, tokenizer, fe, duration=duration, cache_dir=str(cache), model_path=model_dir, log=log
    )


def test_long_files_get_a_new_seeded_crop_each_epoch(loaded, model_dir, hf_module, tmp_path):  # noqa: F811
    wave = _signal(0.3, 32000)
    _write(tmp_path / "data", "long.wav", wave, 32000, "a rising chirp")
    _write(tmp_path / "data", "short.wav", _signal(0.02, 32000, 1), 32000, "a short one")
    data = _prepare(loaded, model_dir, tmp_path / "data", tmp_path / "cache")
    model = loaded[0]
    hop = model.config.audio_encoder.hop_length  # 4 samples per codec frame; chroma hop 128
    assert data.frames == 320 and data.grid == 32 and data.chroma_grid == 1 and data.chroma_frames == 11
    assert data.codes[0].shape == (4, 2400) and data.codes[1].shape == (4, 320)  # long.wav whole; short.wav padded
    starts = [data.crop_start(0, epoch, seed=0) for epoch in range(12)]
    assert len(set(starts)) > 4 and all(s % 32 == 0 and 0 <= s <= 2400 - 320 for s in starts), starts
    assert starts == [data.crop_start(0, epoch, seed=0) for epoch in range(12)]  # a function of (seed, epoch, example)
    assert starts != [data.crop_start(0, epoch, seed=1) for epoch in range(12)]
    assert {data.crop_start(1, epoch, seed=0) for epoch in range(12)} == {0}  # a short clip is never cropped
    assert data.crop_start(0, None, seed=0) == 0  # validation's fixed crop

    hf_extractor = hf_module.MusicgenMelodyFeatureExtractor(n_fft=512, hop_length=128, sampling_rate=32000)
    for epoch in range(4):
        start = starts[epoch]
        batch = data.batch([0], epochs=[epoch])
        np.testing.assert_array_equal(batch["labels"][0, :320, 0], data.codes[0][0, start : start + 320])
        # The chroma of the same time span: HF's extractor on the cropped audio agrees on every frame whose STFT
        # window lies inside the crop (frames 2..8 of 11; the edge frames see the file around the crop instead of
        # the crop's reflected edge).
        crop = wave[start * hop : start * hop + 1280]
        ref = hf_extractor(crop, sampling_rate=32000, return_tensors="np")["input_features"][0]
        np.testing.assert_array_equal(batch["input_features"][0, 2:9], ref[2:9])


def test_a_changed_file_is_encoded_again(loaded, model_dir, tmp_path):  # noqa: F811
    path = _write(tmp_path / "data", "clip.wav", _signal(0.1, 32000), 32000, "piano")
    _write(tmp_path / "data", "other.wav", _signal(0.1, 32000, 2), 32000, "drums")
    logs = []
    first = _prepare(loaded, model_dir, tmp_path / "data", tmp_path / "cache", logs)
    again = _prepare(loaded, model_dir, tmp_path / "data", tmp_path / "cache", logs)
    soundfile.write(path, _signal(0.1, 32000, 5)[::-1].copy(), 32000)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = _prepare(loaded, model_dir, tmp_path / "data", tmp_path / "cache", logs)
    assert [line.split("(")[1].split(",")[0] for line in logs] == ["2 encoded now", "0 encoded now", "1 encoded now"]
    np.testing.assert_array_equal(again.chroma[0], first.chroma[0])
    # The new content's features (the tiny random codec maps both signals to the same codes; the chroma shows it).
    assert not np.array_equal(changed.chroma[0], first.chroma[0])
    np.testing.assert_array_equal(changed.chroma[1], first.chroma[1])
    assert len([n for n in os.listdir(tmp_path / "cache") if n.startswith("clip-")]) == 4  # old entry kept, unused


def test_a_stereo_44k_file_feeds_a_mono_32k_model(loaded, model_dir, tmp_path, monkeypatch):  # noqa: F811
    model = loaded[0]
    seen = {}
    encode = model.encode_audio
    monkeypatch.setattr(model, "encode_audio", lambda audio: seen.setdefault(len(seen), audio) is None or encode(audio))
    mono = _signal(0.06, 44100)
    _write(tmp_path / "mono", "a.wav", mono, 44100, "x")
    _write(tmp_path / "stereo", "a.wav", np.stack([mono, mono], axis=1), 44100, "x")  # both channels equal
    _write(tmp_path / "wide", "a.wav", np.stack([mono, 0.2 * mono], axis=1), 44100, "x")
    got = {k: _prepare(loaded, model_dir, tmp_path / k, tmp_path / f"cache-{k}") for k in ("mono", "stereo", "wide")}
    # What EnCodec was given: one channel at the model's 32 kHz, 0.06 s whole (longer than a 0.04 s crop); the
    # stereo file mixed down to the mono one's signal, the unequal one to (L + R) / 2.
    assert all(seen[i].shape == (1, 1, round(0.06 * 32000)) for i in range(3)), [seen[i].shape for i in seen]
    np.testing.assert_allclose(seen[1], seen[0], atol=1e-6)
    np.testing.assert_allclose(seen[2], 0.6 * seen[0], atol=1e-6)
    assert got["stereo"].codes[0].shape == (4, math.ceil(round(0.06 * 32000) / 4))
    np.testing.assert_array_equal(got["stereo"].chroma[0], got["mono"].chroma[0])


def test_a_batch_with_every_dropout_on(loaded, model_dir, tmp_path):  # noqa: F811
    folder = _write_data(tmp_path / "data")
    data = _prepare(loaded, model_dir, folder, tmp_path / "cache")
    plain = data.batch([0, 1, 2])
    dropped = data.batch([0, 1, 2], dropout=ConditionDropout(cfg=1.0, melody=1.0, word=1.0))
    assert dropped["uncond"].tolist() == [True] * 3
    assert dropped["input_ids"].shape == plain["input_ids"].shape  # word dropout keeps the width
    assert (dropped["attention_mask"] == 0).all()  # every word dropped: no caption, as audiocraft
    null = np.zeros_like(plain["input_features"])
    null[..., 0] = 1
    np.testing.assert_array_equal(dropped["input_features"], null)
    np.testing.assert_array_equal(dropped["labels"], plain["labels"])
    none = data.batch([0, 1, 2], dropout=ConditionDropout())
    assert "uncond" not in none and all(np.array_equal(none[k], plain[k]) for k in plain)


# ---------------------------------------------------------------------------------------------------------------
# Validation splits and metadata.jsonl.


def test_the_validation_split_is_deterministic_by_seed():
    examples = [data_pipeline.Example(f"{i}.wav", str(i)) for i in range(20)]
    train, val = data_pipeline.split_examples(examples, 0.25, seed=0)
    assert len(val) == 5 and len(train) == 15 and set(train).isdisjoint(val) and set(train) | set(val) == set(examples)
    assert data_pipeline.split_examples(examples, 0.25, seed=0) == (train, val)
    assert data_pipeline.split_examples(examples, 0.25, seed=1)[1] != val
    assert data_pipeline.split_examples(examples, 0.0, seed=0) == (examples, [])
    with pytest.raises(data_pipeline.FinetuneError, match="leaves no training clip"):
        data_pipeline.split_examples(examples[:1], 0.5, seed=0)


def test_metadata_jsonl_captions(tmp_path):
    folder = tmp_path / "data"
    os.makedirs(folder / "sub")
    for name in ("a.wav", "sub/b.flac"):
        soundfile.write(folder / name, np.zeros(100, np.float32), 32000)
    (folder / "a.txt").write_text("ignored: metadata.jsonl wins")
    lines = [{"path": "sub/b.flac", "caption": "  funky   drums "}, {"file_name": "a.wav", "text": "piano"}]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    examples = data_pipeline.find_examples(folder)
    assert [(os.path.relpath(e.audio, folder), e.caption) for e in examples] == [
        ("sub/b.flac", "funky drums"),
        ("a.wav", "piano"),
    ]


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", ":1: not JSON"),
        ("[1, 2]", ":1: expected a JSON object, got list"),
        ('{"caption": "x"}', ":1: no audio path (one of the keys path, audio"),
        ('{"path": "a.wav"}', ":1: no caption (one of the keys caption, text"),
        ('{"path": "a.wav", "caption": 3}', ":1: 'caption' must be a string, got int"),
        ('{"path": "missing.wav", "caption": "x"}', ":1: no such audio file 'missing.wav'"),
        ('{"path": "../a.wav", "caption": "x"}', ":1: '../a.wav' lies outside"),
        ('{"path": "/abs/a.wav", "caption": "x"}', ":1: 'path' must be a path relative to"),
    ],
)
def test_bad_metadata_lines_are_one_line_errors_naming_file_and_line(tmp_path, capsys, line, message):
    from musicgen_jax import cli

    folder = tmp_path / "data"
    os.makedirs(folder)
    soundfile.write(folder / "a.wav", np.zeros(100, np.float32), 32000)
    soundfile.write(tmp_path / "a.wav", np.zeros(100, np.float32), 32000)
    (folder / "metadata.jsonl").write_text(line + "\n")
    argv = ["finetune", "--model", str(tmp_path), "--data", str(folder), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"metadata.jsonl{message}" in err and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------------------------
# `musicgen-jax finetune`: validation, and exact resume with crops and condition dropout on.


def _long_data(folder):
    """Three clips longer than a 0.04 s crop (new crops each epoch) and one shorter (padded)."""
    for i, (seconds, rate) in enumerate(((0.2, 32000), (0.15, 44100), (0.12, 16000), (0.03, 32000))):
        wave = _signal(seconds, rate, i)
        wave = np.stack([wave, wave[::-1]], 1) if i == 1 else wave  # one stereo file
        _write(folder, f"clip{i}.wav", wave, rate, f"song {i} with words")
    return str(folder)


def test_finetune_logs_the_validation_loss(model_dir, tmp_path, capsys):  # noqa: F811
    from musicgen_jax import cli, finetune, training

    data, out = _long_data(tmp_path / "data"), tmp_path / "out"
    argv = ["finetune", "--model", model_dir, "--data", data, "--out", str(out), "--duration", "0.04"]
    argv += ["--steps", "6", "--batch-size", "2", "--lr", "1e-2", "--val-fraction", "0.25", "--val-every", "3"]
    assert cli.main([*argv, "--save-every", "6"]) == 0
    printed = capsys.readouterr().out
    assert "validation: 1 clips" in printed and "data: 3 clips" in printed and "val_loss" in printed
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val] == [3, 6]
    # The logged loss is HF's loss of the held-out clip's fixed crop (its first 0.04 s), without dropout.
    args = cli.build_parser().parse_args(argv)
    train_examples, val_examples = finetune._examples(args)
    assert len(val_examples) == 1 and val_examples[0] not in train_examples
    model, tokenizer, fe = finetune._load(model_dir)
    dataset = data_pipeline.prepare_dataset(
        model, val_examples, tokenizer, fe, duration=0.04, cache_dir=str(out / "cache"), model_path=model_dir
    )
    params = training.restore_params(out / "checkpoints")
    batch = jax.tree_util.tree_map(jnp.asarray, dataset.batch([0]))
    expected = float(jax.jit(loss.loss_fn, static_argnames=("config",))(params, model.config, batch))
    print(f"[finetune] val_loss {val[-1]['val_loss']:.6f} vs loss_fn {expected:.6f}")
    assert abs(val[-1]["val_loss"] - expected) <= 1e-6 * expected


def test_a_killed_finetune_resumes_with_bit_identical_losses(model_dir, tmp_path):  # noqa: F811
    """Crops of long files and condition dropout (audiocraft's defaults) on: SIGKILLed after a checkpoint, the
    rerun continues with the losses of an uninterrupted run, bit for bit."""
    import signal
    import subprocess
    import sys
    import time

    from musicgen_jax import cli

    data = _long_data(tmp_path / "data")
    base = ["finetune", "--model", model_dir, "--data", data, "--duration", "0.04", "--batch-size", "3"]
    base += ["--steps", "60", "--lr", "1e-2", "--log-every", "1", "--save-every", "3", "--seed", "4"]
    assert cli.main([*base, "--out", str(tmp_path / "whole")]) == 0
    whole = {r["step"]: r["loss"] for r in map(json.loads, open(tmp_path / "whole" / "metrics.jsonl"))}

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", "from musicgen_jax.cli import main; main()", *base, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and child.poll() is None and not (out / "checkpoints" / "6").is_dir():
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    killed_at = max(int(n) for n in os.listdir(out / "checkpoints") if n.isdigit())
    assert killed_at < 60
    assert cli.main([*base, "--out", str(out)]) == 0
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    rerun = [r for r in records if "loss" in r and r["step"] > killed_at]
    print(f"[resume] killed after checkpoint {killed_at}; {len(records)} records compared with the whole run")
    assert rerun and rerun[-1]["step"] == 60
    mismatched = [(r["step"], r["loss"], whole[r["step"]]) for r in records if r["loss"] != whole[r["step"]]]
    assert not mismatched, mismatched


# ---------------------------------------------------------------------------------------------------------------
# Many hosts: two real processes on localhost, joined by jax.distributed.


def test_two_processes_train_as_one_with_the_same_global_batch(model_dir, tmp_path):  # noqa: F811
    import socket
    import subprocess
    import sys

    data = _long_data(tmp_path / "data")
    argv = ["finetune", "--model", model_dir, "--data", data, "--duration", "0.04", "--batch-size", "4"]
    argv += ["--steps", "4", "--lr", "1e-2", "--log-every", "1", "--save-every", "2", "--seed", "2"]
    cli = [sys.executable, "-c", "import sys; from musicgen_jax.cli import main; sys.exit(main())", *argv]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
        "JAX_PLATFORMS": "cpu",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
    }
    single = subprocess.run(
        [*cli, "--out", str(tmp_path / "single"), "--mesh", "4x1"],
        env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "multi"
    flags = ["--out", str(out), "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2"]
    children = [
        subprocess.Popen(
            [*cli, *flags, "--process-id", str(i)],
            env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        results = [child.communicate(timeout=600) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, (_, stderr) in zip(children, results, strict=True):
        assert child.returncode == 0, stderr
    assert "step 4/4" in results[0][0] and "step" not in results[1][0]  # process 0 reports for the job

    def losses(folder):
        return [(r["step"], r["loss"]) for r in map(json.loads, open(folder / "metrics.jsonl"))]

    ref, got = losses(tmp_path / "single"), losses(out)
    errors = [abs(a[1] - b[1]) / abs(b[1]) for a, b in zip(got, ref, strict=True)]
    print(f"[multihost] 2 processes x 2 devices vs 1 process x 4 devices: losses {got}, max rel diff {max(errors):.1e}")
    assert [s for s, _ in got] == [s for s, _ in ref] == [1, 2, 3, 4]
    assert max(errors) <= 1e-6
    assert sorted(os.listdir(out / "checkpoints")) == ["2", "4"]  # written once, collectively
    from musicgen_jax import training

    a, b = training.restore_params(out / "checkpoints"), training.restore_params(tmp_path / "single" / "checkpoints")
    diff = max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(*map(jax.tree_util.tree_leaves, (a, b)), strict=True)
    )
    assert diff <= 1e-6, diff


# ---------------------------------------------------------------------------------------------------------------
# Samples during training.


def test_samples_are_written_at_their_steps_from_those_weights(model_dir, tmp_path, capsys):  # noqa: F811
    import soundfile

    from musicgen_jax import cli, training
    from musicgen_jax.tokenizer import T5TextTokenizer

    data, out = _long_data(tmp_path / "data"), tmp_path / "out"
    argv = ["finetune", "--model", model_dir, "--data", data, "--out", str(out), "--duration", "0.04"]
    argv += ["--steps", "5", "--batch-size", "2", "--lr", "1e-2", "--save-every", "2", "--sample-every", "2"]
    argv += ["--sample-prompts", "warm pads", "--sample-prompts", "funky drums", "--sample-seconds", "0.01"]
    assert cli.main(argv) == 0
    assert "samples: " in capsys.readouterr().out
    assert sorted(os.listdir(out / "samples")) == ["step-000002", "step-000004"]
    for step in ("step-000002", "step-000004"):
        assert sorted(os.listdir(out / "samples" / step)) == ["0.wav", "1.wav"]  # no temporary left
    # Each step's samples are what generate gives for that step's checkpoint, prompt i with seed i.
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(model_dir)
    text = T5TextTokenizer.from_pretrained(model_dir)(
        ["warm pads", "funky drums"], padding="longest", return_tensors="np"
    )
    for step in (2, 4):
        params = training.restore_params(out / "checkpoints", step=step)
        trained = type(model)(model.config, params, model.generation_config)
        for i in range(2):
            path = out / "samples" / f"step-{step:06d}" / f"{i}.wav"
            wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
            ids, mask = text["input_ids"][i : i + 1], text["attention_mask"][i : i + 1]
            ref = trained.generate(input_ids=ids, attention_mask=mask, duration=0.01, do_sample=True, seed=i)[0]
            assert rate == 32000 and wave.shape == ref.T.shape == (320, 1)
            np.testing.assert_array_equal(wave.T, ref)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--cfg-dropout", "1.5"], "--cfg-dropout must lie in [0, 1], got 1.5"),
        (["--word-dropout", "-0.1"], "--word-dropout must lie in [0, 1], got -0.1"),
        (["--val-fraction", "1"], "--val-fraction must lie in [0, 1), got 1.0"),
        (["--val-every", "0"], "--val-every must be >= 1, got 0"),
        (["--sample-every", "-1"], "--sample-every must be >= 0, got -1"),
        (["--num-processes", "2"], "--coordinator-address, --num-processes and --process-id go together"),
    ],
)
def test_bad_new_flags_are_one_line_before_any_work(tmp_path, capsys, flags, message):
    from musicgen_jax import cli

    argv = ["finetune", "--model", str(tmp_path / "missing"), "--data", str(tmp_path / "missing")]
    assert cli.main([*argv, "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"musicgen-jax: error: {message}\n" and not os.path.exists(tmp_path / "out"), err


def test_melody_dropout_on_a_text_only_model_is_refused(tmp_path, capsys):
    from musicgen_jax import cli
    from tests.helpers import save_tiny_tokenizer

    path, _ = save_hf_musicgen(tmp_path / "plain")
    save_tiny_tokenizer(path)
    data = _write_data(tmp_path / "data")
    argv = ["finetune", "--model", path, "--data", str(data), "--out", str(tmp_path / "out"), "--melody-dropout", "0.5"]
    capsys.readouterr()  # the HF checkpoint's own messages
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--melody-dropout applies to MusicGen Melody models" in err, err


def test_finetune_help_lists_the_new_flags(capsys):
    from musicgen_jax import cli

    with pytest.raises(SystemExit):
        cli.main(["finetune", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--cfg-dropout", "--melody-dropout", "--word-dropout", "--val-fraction", "--val-data", "--val-every"):
        assert flag in out, flag
    for flag in ("--sample-every", "--sample-prompts", "--sample-seconds", "--coordinator-address", "--process-id"):
        assert flag in out, flag
    assert "0.2 for melody models, 0.3 for text-only" in out and "metadata.jsonl" in out
