"""`musicgen-jax generate`: bad flags and inputs fail in one line naming the flag or file (issue 14, items 5 and 6).

Flags are checked before anything loads; lengths that do not fit say what to change, in the unit asked; a melody file
is one clip (a mono file gives no warning, a stereo one exactly one).
"""

import re

import numpy as np
import pytest
import soundfile

from musicgen_jax import (
    MusicgenMelodyForConditionalGeneration,
    MusicgenMelodyProcessor,
    chroma,
)
from musicgen_jax.cli import main
from tests.helpers import save_hf_melody_with_processor


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_hf_melody_with_processor(tmp_path_factory.mktemp("hf"))


def _generate(capsys, hf_dir, tmp_path, *extra):
    length = [] if {"--duration", "--max-new-tokens"} & set(extra) else ["--max-new-tokens", "8"]
    code = main(["generate", "--model", hf_dir, "--out", str(tmp_path / "o.wav"), "--quiet", *length, *extra])
    return code, capsys.readouterr().err


def _one_line_error(code, err) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("musicgen-jax: error: ") and "Traceback" not in err
    return lines[0][len("musicgen-jax: error: ") :]


@pytest.fixture
def loads(monkeypatch):
    """Records which of the processor and the model were loaded."""
    loaded = []
    for cls in (MusicgenMelodyProcessor, MusicgenMelodyForConditionalGeneration):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            loaded.append(klass.__name__)
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    return loaded


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--duration", "nan"], "--duration must be a positive finite number of seconds, got nan"),
        (["--duration", "inf"], "--duration must be a positive finite number of seconds, got inf"),
        (["--duration", "-1"], "--duration must be a positive finite number of seconds, got -1.0"),
        (
            ["--seed", str(2**64)],
            "--seed must be an integer in [0, 2**32 - 1 = 4294967295] (jax.random.PRNGKey keeps 32 bits of it), "
            "got 18446744073709551616",
        ),
        (["--seed", "-1"], "--seed must be an integer in [0, 2**32 - 1 = 4294967295] (jax.random.PRNGKey keeps"),
        (["--temperature", "nan"], "--temperature must be a finite number > 0, got nan"),
        (["--temperature", "inf"], "--temperature must be a finite number > 0, got inf"),
        (
            ["--greedy", "--temperature", "-1"],
            "--temperature must be a finite number > 0, got -1.0 (refused with --greedy too, which does not use it)",
        ),
        (
            ["--greedy", "--top-p", "1.5"],
            "--top-p must be a number in (0, 1] (1 turns top_p off), got 1.5 (refused with --greedy too, which does "
            "not use it)",
        ),
        (["--top-p", "nan"], "--top-p must be a number in (0, 1] (1 turns top_p off), got nan"),
        (["--greedy", "--top-k", "-1"], "--top-k must be an integer >= 0 (0 turns top_k off), got -1 (refused with"),
        (
            ["--guidance-scale", "nan"],
            "--guidance-scale must be a finite number (> 1 turns classifier-free guidance on), got nan",
        ),
        (["--guidance-scale=-inf"], "--guidance-scale must be a finite number"),
    ],
)
def test_bad_flags_fail_in_one_line_before_anything_loads(hf_dir, tmp_path, capsys, loads, extra, message):
    code, err = _generate(capsys, hf_dir, tmp_path, "--text", "piano", *extra)
    assert _one_line_error(code, err).startswith(message)
    assert loads == []


def test_a_melody_shorter_than_one_chroma_frame_is_refused(hf_dir, tmp_path, capsys, loads):
    for samples, rate in ((1, 32000), (4095, 32000), (5644, 44100)):  # 4096 samples at 32 kHz = 0.128 s
        path = tmp_path / f"short_{samples}.wav"
        soundfile.write(path, np.full(samples, 0.1), rate)
        code, err = _generate(capsys, hf_dir, tmp_path, "--text", "piano", "--melody", str(path))
        line = _one_line_error(code, err)
        assert line.startswith(f"--melody {path}: {samples / rate:.6g} s of audio is shorter than one chroma frame")
        assert line.endswith("(4096 samples at 32000 Hz); give at least 0.128 s")
    assert "MusicgenMelodyForConditionalGeneration" not in loads
    path = tmp_path / "just_enough.wav"  # 5645 samples at 44.1 kHz >= 0.128 s
    soundfile.write(path, np.full(5645, 0.1), 44100)
    code, err = _generate(capsys, hf_dir, tmp_path, "--text", "piano", "--melody", str(path))
    assert code == 0, err


def test_a_prompt_too_long_says_by_how_many_tokens(hf_dir, tmp_path, capsys):
    text = " ".join(["piano"] * 3000)
    tokens = MusicgenMelodyProcessor.from_pretrained(hf_dir)(text=[text])["input_ids"].shape[1]
    code, err = _generate(capsys, hf_dir, tmp_path, "--text", text, "--max-new-tokens", "53")
    line = _one_line_error(code, err)
    # the decoder's 2048 positions hold the text tokens, 235 chroma frames, the start token and the 53 steps
    excess = tokens + 235 + 1 + 53 - 2048
    assert line.startswith(f"text prompt too long: it is {tokens} tokens and the decoder's position table")
    assert line.endswith(f"; shorten the text prompt by {excess} tokens") and "-" not in line.split(";")[-1]


def test_a_length_too_large_says_the_most_that_fits(hf_dir, tmp_path, capsys):
    code, err = _generate(capsys, hf_dir, tmp_path, "--text", "piano", "--duration", "40", "--window", "40")
    line = _one_line_error(code, err)
    assert line.startswith("duration 40.0 s does not fit: ") and "max_position_embeddings 2048" in line
    assert float(re.fullmatch(r".*; at most (\d+\.\d+) s fits", line).group(1)) > 0
    # past one window it is long-form: the window must fit (this checkpoint's codec runs at 8000 frames/s)
    code, err = _generate(capsys, hf_dir, tmp_path, "--text", "piano", "--duration", "40")
    line = _one_line_error(code, err)
    assert line.startswith("the default --window 30 s does not fit: ") and "max_position_embeddings 2048" in line
    assert float(re.fullmatch(r".*; at most (\d+\.\d+) s fits", line).group(1)) > 0
    assert not list(tmp_path.glob("*.partial-*.wav"))  # the growing output files are gone
    code, err = _generate(capsys, hf_dir, tmp_path, "--text", "piano", "--max-new-tokens", "5000")
    line = _one_line_error(code, err)
    assert line.startswith("max_new_tokens 5000 does not fit: ")
    assert int(re.search(r"ask for at most (\d+) new tokens", line).group(1)) > 0


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= 30 and r.name.startswith("musicgen_jax")]


def test_a_mono_melody_file_gives_no_warning_and_a_stereo_one_exactly_one(
    hf_dir, tmp_path, capsys, caplog, monkeypatch
):
    monkeypatch.setattr(chroma, "_WARNED", set())  # warnings are once per process: start afresh
    t = np.arange(22050) / 44100
    soundfile.write(tmp_path / "mono.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 44100)
    soundfile.write(tmp_path / "stereo.wav", 0.3 * np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1), 44100)
    with caplog.at_level("WARNING"):
        code, err = _generate(
            capsys, hf_dir, tmp_path, "--text", "a", "--text", "b", "--melody", str(tmp_path / "mono.wav")
        )
    assert code == 0, err
    assert _warnings(caplog) == []
    with caplog.at_level("WARNING"):
        code, err = _generate(capsys, hf_dir, tmp_path, "--text", "a", "--melody", str(tmp_path / "stereo.wav"))
    assert code == 0, err
    assert _warnings(caplog) == [
        "melody `audio` with 2 channels was mixed to mono (channels averaged, as HF does) before computing chroma"
    ]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["generate", "--model", "m", "--guidance-scale", "-inf"], "argument --guidance-scale: expected one argument"),
        (["generate", "--model", "m", "--top-k", "many"], "argument --top-k: invalid int value: 'many'"),
        (["convert", "--src", "a"], "the following arguments are required: --dst"),
        (["no-such-command"], "argument command: invalid choice: 'no-such-command'"),
    ],
)
def test_argparse_errors_are_one_line_too(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1, err
    assert message in lines[0] and "usage:" not in err, lines[0]
    print(f"[error] {lines[0]}")


@pytest.mark.parametrize("name,value", [("max_new_tokens", float("nan")), ("max_new_tokens", 0), ("max_length", -5)])
def test_generate_length_arguments_must_be_positive_integers(hf_dir, name, value):
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(hf_dir)
    with pytest.raises(ValueError, match=f"^{name} must be a positive integer, got {value!r}$"):
        model.generate(**{name: value})
