"""The product surface: conversion round trips, the CLI end to end, the Hub error, and one-line errors."""

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import soundfile

from musicgen_jax import (
    MusicgenMelodyForConditionalGeneration,
    MusicgenMelodyProcessor,
    checkpoint,
)
from musicgen_jax.cli import main
from musicgen_jax.demo import write_random_checkpoint
from tests.helpers import save_hf_melody_with_processor


def _leaves(params):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_hf_melody_with_processor(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("noise"))


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code, err, match):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("musicgen-jax: error:") and match in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_convert_round_trips_bit_exactly(hf_dir, tmp_path, capsys, dtype):
    code, out, _ = _run(capsys, "convert", "--src", hf_dir, "--dst", str(tmp_path / "conv"), "--dtype", dtype)
    assert code == 0 and "converted" in out
    src = MusicgenMelodyForConditionalGeneration.from_pretrained(hf_dir, dtype=dtype)
    t0 = time.perf_counter()
    conv = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "conv", dtype="auto")
    print(f"[load] converted directory loaded in {time.perf_counter() - t0:.2f} s")
    a, b = _leaves(src.params), _leaves(conv.params)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert conv.config == src.config and conv.generation_config == src.generation_config
    # tokenizer and preprocessor files travel with the converted checkpoint
    texts = ["a calm piano melody", "rock"]
    np.testing.assert_array_equal(
        MusicgenMelodyProcessor.from_pretrained(tmp_path / "conv")(text=texts, padding=True)["input_ids"],
        MusicgenMelodyProcessor.from_pretrained(hf_dir)(text=texts, padding=True)["input_ids"],
    )


def test_save_pretrained_and_python_m_convert_write_the_same_format(hf_dir, tmp_path):
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(hf_dir)
    model.save_pretrained(tmp_path / "saved")
    subprocess.run(
        [sys.executable, "-m", "convert", "--src", hf_dir, "--dst", str(tmp_path / "cli")],
        check=True,
        capture_output=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    a = _leaves(MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "saved").params)
    b = _leaves(MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "cli").params)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    saved, cli = (os.path.join(checkpoint.resolve(tmp_path / name), "config.json") for name in ("saved", "cli"))
    assert json.load(open(saved)) == json.load(open(cli))


def test_generate_cli_writes_one_wav_per_text(noise_dir, tmp_path, capsys):
    out = tmp_path / "music.wav"
    code, stdout, _ = _run(
        capsys,
        "generate",
        "--model",
        noise_dir,
        "--text",
        "a calm piano melody",
        "--text",
        "dark techno",
        "--duration",
        "0.5",
        "--out",
        str(out),
        "--seed",
        "1",
    )
    assert code == 0
    for path in (out, tmp_path / "music_1.wav"):
        wave, rate = soundfile.read(path)
        assert rate == 32000 and len(wave) == 32000 // 2 and np.isfinite(wave).all()
    assert "compile" in stdout and "steps/s" in stdout and "real-time factor" in stdout


def test_generate_cli_with_a_stereo_melody_at_another_rate(noise_dir, tmp_path, capsys):
    melody = tmp_path / "melody.flac"
    t = np.arange(44100) / 44100
    soundfile.write(melody, np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 330 * t)], 1) * 0.3, 44100)
    code, _, err = _run(
        capsys,
        "generate",
        "--model",
        noise_dir,
        "--text",
        "piano",
        "--melody",
        str(melody),
        "--max-new-tokens",
        "12",
        "--out",
        str(tmp_path / "m.wav"),
        "--greedy",
        "--quiet",
    )
    assert code == 0, err
    assert soundfile.info(tmp_path / "m.wav").frames == (12 + 1 - 4) * 640


def test_same_seed_same_audio_from_the_cli(noise_dir, tmp_path, capsys):
    for name in ("a.wav", "b.wav"):
        assert (
            _run(
                capsys,
                "generate",
                "--model",
                noise_dir,
                "--text",
                "jazz",
                "--max-new-tokens",
                "10",
                "--seed",
                "5",
                "--out",
                str(tmp_path / name),
                "--quiet",
            )[0]
            == 0
        )
    np.testing.assert_array_equal(soundfile.read(tmp_path / "a.wav")[0], soundfile.read(tmp_path / "b.wav")[0])


def test_hub_unreachable_suggests_a_local_path(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="pass its local path"):
        MusicgenMelodyForConditionalGeneration.from_pretrained("facebook/musicgen-melody")


def _corrupt_weights(src, dst):
    import shutil

    shutil.copytree(src, dst)
    with open(os.path.join(dst, "model.safetensors"), "r+b") as f:
        f.truncate(100)
    return dst


def _wrong_shape(src, dst):
    import shutil

    from safetensors.numpy import save_file

    from convert import read_checkpoint

    shutil.copytree(src, dst)
    tensors = {k: np.array(v) for k, v in read_checkpoint(src).items()}
    tensors["decoder.model.decoder.layers.0.fc1.weight"] = np.zeros((3, 20), np.float32)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    return dst


def _other_type(src, dst):
    import shutil

    shutil.copytree(src, dst)
    config = json.load(open(os.path.join(dst, "config.json")))
    config["model_type"] = "musicgen_unknown"
    json.dump(config, open(os.path.join(dst, "config.json"), "w"))
    return dst


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda src, dst: str(dst / "missing"), "no such checkpoint directory"),
        (_corrupt_weights, "model.safetensors"),
        (_wrong_shape, "'decoder.model.decoder.layers.0.fc1.weight' has shape (3, 20), expected (20, 20)"),
        (_other_type, "model_type is 'musicgen_unknown'; musicgen-jax reads 'musicgen_melody' and 'musicgen'"),
    ],
    ids=["missing", "corrupt", "wrong-shape", "other-model-type"],
)
def test_bad_checkpoints_fail_in_one_line(hf_dir, tmp_path, capsys, make, match):
    model = make(hf_dir, tmp_path / "bad")
    code, _, err = _run(capsys, "generate", "--model", str(model), "--text", "x", "--out", str(tmp_path / "o.wav"))
    _assert_one_line_error(code, err, match)


def _melody_file(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "unreadable":
        path.write_bytes(b"this is not audio at all" * 10)
    elif kind == "empty":
        soundfile.write(path, np.zeros((0,), np.float32), 32000)
    elif kind == "nan":
        soundfile.write(path, np.full((1000,), np.nan, np.float32), 32000, subtype="FLOAT")
    return str(path)


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--melody", "unreadable"], "unreadable.wav"),
        (["--melody", "empty"], "empty.wav"),
        (["--melody", "nan"], "nan.wav"),
        (["--text", ""], "--text must not be empty"),
        (["--max-new-tokens", "5000"], "max_position_embeddings"),
        (["--top-k", "-1"], "top_k"),
        (["--top-p", "1.5"], "top_p"),
        (["--temperature", "0"], "temperature"),
        (["--out", "/nonexistent-folder/x.wav"], "does not exist"),
        (["--out", "{tmp}"], "is a directory"),
    ],
)
def test_bad_generate_inputs_fail_in_one_line(noise_dir, tmp_path, capsys, extra, match):
    extra = [
        _melody_file(tmp_path, e) if e in ("unreadable", "empty", "nan") else e.format(tmp=tmp_path) for e in extra
    ]
    argv = [
        "generate",
        "--model",
        noise_dir,
        "--text",
        "piano",
        "--max-new-tokens",
        "8",
        "--out",
        str(tmp_path / "o.wav"),
        *extra,
    ]
    code, _, err = _run(capsys, *argv)
    _assert_one_line_error(code, err, match)


def test_no_text_at_all_fails_in_one_line(noise_dir, tmp_path, capsys):
    code, _, err = _run(capsys, "generate", "--model", noise_dir, "--out", str(tmp_path / "o.wav"))
    _assert_one_line_error(code, err, "--text")


def test_empty_text_list_is_refused_by_the_processor(noise_dir):
    with pytest.raises(ValueError, match="non-empty list"):
        MusicgenMelodyProcessor.from_pretrained(noise_dir)(text=[])


def test_unwritable_output_fails_before_any_work(noise_dir, capsys):
    # /proc refuses new files even to root; the CLI probes the path before loading anything.
    code, _, err = _run(capsys, "generate", "--model", noise_dir, "--text", "x", "--out", "/proc/musicgen.wav")
    _assert_one_line_error(code, err, "cannot write in")


# -- long-form generation (issue 18) -----------------------------------------------------------------------------------


def test_long_form_cli_writes_the_output_as_it_grows(noise_dir, tmp_path, capsys, monkeypatch):
    from musicgen_jax import audio

    melody = tmp_path / "tune.wav"
    t = np.arange(32000 * 7) / 32000  # 7 s: shorter than the piece, so it is tiled
    soundfile.write(melody, np.sin(2 * np.pi * 440 * t * (1 + t)) * 0.3, 32000)
    grown = []  # the partial file's readable frames after each append
    append = audio.WavWriter.append

    def spy(self, wave):
        append(self, wave)
        grown.append(soundfile.info(self.partial_path).frames)

    monkeypatch.setattr(audio.WavWriter, "append", spy)
    out = tmp_path / "long.wav"
    argv = ["generate", "--model", noise_dir, "--text", "piano", "--melody", str(melody), "--greedy"]
    code, stdout, err = _run(capsys, *argv, "--duration", "30", "--window", "10", "--stride", "6", "--out", str(out))
    assert code == 0, err
    assert "5 windows; the audio grows in " in err and ".partial-" in err
    wave, rate = soundfile.read(out, dtype="float32")
    assert rate == 32000 and len(wave) == 1500 * 640  # 30 s at 50 frames/s, decoded 10 s at a time
    assert len(grown) >= 3 and grown == sorted(grown) and grown[-1] == len(wave) and grown[0] < len(wave)
    assert not list(tmp_path.glob("*.partial-*.wav"))
    # the CLI's file is what generate returns for the processor's inputs
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(noise_dir)
    processor = MusicgenMelodyProcessor.from_pretrained(noise_dir)
    from musicgen_jax import audio as audio_module

    clip, clip_rate = audio_module.load(melody)
    inputs = processor(text=["piano"], audio=[clip], sampling_rate=clip_rate, padding=True)
    ref = model.generate(**inputs, duration=30.0, window_duration=10.0, extend_stride=6.0, do_sample=False, seed=0)
    np.testing.assert_array_equal(wave, ref[0, 0])


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--max-new-tokens", "8", "--window", "10"], "--window and --stride apply to --duration"),
        (["--duration", "40", "--stride", "30"], "--stride 30 s must be shorter than the window (30 s)"),
        (["--duration", "40", "--window", "10", "--stride", "12"], "--stride 12 s must be shorter than the window"),
        (["--duration", "40", "--stride", "0"], "--stride must be a positive finite number"),
        (["--duration", "4000"], "--duration 4000 s is past the cap of 3600 s"),
    ],
)
def test_bad_long_form_flags_fail_in_one_line(noise_dir, tmp_path, capsys, extra, match):
    code, _, err = _run(
        capsys, "generate", "--model", noise_dir, "--text", "piano", "--out", str(tmp_path / "o.wav"), *extra
    )
    _assert_one_line_error(code, err, match)


def test_killed_long_form_run_leaves_a_playable_partial_and_no_output(noise_dir, tmp_path):
    import signal

    out = tmp_path / "long.wav"
    argv = ["generate", "--model", noise_dir, "--text", "piano", "--duration", "600", "--window", "2", "--stride", "1"]
    child = subprocess.Popen(
        [sys.executable, "-c", "from musicgen_jax.cli import main; main()", *argv, "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        partial = []
        while time.monotonic() < deadline and child.poll() is None:
            partial = [p for p in tmp_path.glob("long.partial-*.wav") if p.stat().st_size > 4096]
            if partial:
                break
            time.sleep(0.05)
        assert partial and child.poll() is None, f"no growing output before the end: {child.stderr.read()!r}"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists()
    info = soundfile.info(partial[0])  # what was written so far plays
    assert info.samplerate == 32000 and info.frames > 0 and info.frames % 640 == 0
    wave, _ = soundfile.read(partial[0], dtype="float32")
    assert np.isfinite(wave).all()
