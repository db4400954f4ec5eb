"""The batch job runner (issue 19): job files, static-shape batches, per-job reproducibility, manifests, resume after
SIGKILL, and a real two-process run on localhost.

The reference for a job's codes is ``generate`` for that job alone (its text padded to the runner's text length, its
duration, seed and knobs), and for a greedy job HF's ``generate`` itself; a batch must give each row exactly those
codes whatever its neighbours. The tiny checkpoints' codec runs at 8000 frames/s, so jobs last milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

from musicgen_jax import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration, jobs, sampling
from musicgen_jax.cli import main
from musicgen_jax.tokenizer import T5TextTokenizer
from tests.helpers import hf_generate, save_hf_melody_with_processor, save_hf_musicgen, save_tiny_tokenizer
from tests.test_chroma import hf_module  # noqa: F401  (a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FR, SR = 8000, 32000
TEXT_LENGTH = 12
WINDOW, STRIDE = 0.005, 0.003  # 40 and 24 frames
BUCKETS = (0.001, 0.002, 0.004)  # 8, 16, 32 frames (and the window's 40)
SAMPLE = dict(do_sample=True, guidance_scale=3.0)  # the tiny checkpoints' generation config is greedy, unguided
SETTINGS = jobs.Settings(
    batch_size=3, text_length=TEXT_LENGTH, buckets=BUCKETS, window_duration=WINDOW, extend_stride=STRIDE
)
FLAGS = [
    "--text-length",
    str(TEXT_LENGTH),
    "--buckets",
    ",".join(map(str, BUCKETS)),
    "--window",
    str(WINDOW),
    "--stride",
    str(STRIDE),
]


@pytest.fixture(scope="module")
def melody_dir(tmp_path_factory):
    return save_hf_melody_with_processor(tmp_path_factory.mktemp("jobs_melody"))


@pytest.fixture(scope="module")
def melody_model(melody_dir):
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(melody_dir)
    # codec windows of 32 + 2 x 16 frames, so that long-form pieces (past 64 frames) decode in fixed-size calls
    model.audio_chunk_seconds, model.audio_overlap_seconds = 0.004, 0.002
    return model


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    path, _ = save_hf_musicgen(tmp_path_factory.mktemp("jobs_plain"))
    save_tiny_tokenizer(path)
    return path


def _tune(path, seconds=0.3, rate=44100, channels=2):
    t = np.arange(int(seconds * rate)) / rate
    wave = np.stack([np.sin(2 * np.pi * f * t) for f in (220.0, 330.0)[:channels]], axis=1) * 0.4
    soundfile.write(path, wave, rate)
    return path


def _job(**fields):
    return jobs.Job(**{"line": 1, "seed": 0, **fields})


def _alone(model, tokenizer, job, melody=None):
    """The job generated alone by ``generate``: text padded to the runner's length, its duration, seed, knobs."""
    enc = tokenizer([job.text], padding="max_length", max_length=TEXT_LENGTH, return_tensors="np")
    out = model.generate(
        enc["input_ids"],
        enc["attention_mask"],
        melody=melody,
        duration=job.duration,
        window_duration=WINDOW if job.duration > WINDOW else None,
        extend_stride=STRIDE if job.duration > WINDOW else None,
        seed=job.seed,
        do_sample=job.do_sample,
        guidance_scale=job.guidance_scale,
        top_k=job.top_k,
        top_p=job.top_p,
        temperature=job.temperature,
        return_dict_in_generate=True,
    )
    return out.audio_codes[0], out.sequences[0]


def test_each_row_of_a_batch_gets_the_codes_of_its_job_alone(melody_dir, melody_model, tmp_path):
    """Rows of one bucket with different durations, seeds, knobs, melodies or none: each equals generate alone."""
    tokenizer = T5TextTokenizer.from_pretrained(melody_dir)
    runner = jobs.Runner(melody_model, tokenizer, SETTINGS)
    tune_a, tune_b = _tune(tmp_path / "a.wav"), _tune(tmp_path / "b.wav", seconds=0.5, rate=32000, channels=1)
    batch = [
        _job(id="a", text="a calm piano melody", duration=0.0030, seed=1, melody=str(tune_a), temperature=0.8),
        _job(id="b", text="rock", duration=0.0024, seed=2, top_p=0.9, guidance_scale=2.0),  # text only
        _job(id="c", text="jazz trio", duration=0.0040, seed=3, melody=str(tune_a), temperature=1.3, top_p=0.97),
    ]
    batch = [
        dataclass_replace(
            job, do_sample=True, top_k=8, top_p=job.top_p or 0.95, guidance_scale=job.guidance_scale or 3.0
        )
        for job in batch
    ]
    # the bucket of 32 frames; top-p, temperature and guidance are per-row knobs, top-k and top-p on/off are not
    assert len({runner.group(job) for job in batch}) == 1 and runner.group(batch[0]).frames == 32
    assert runner.group(dataclass_replace(batch[0], top_k=5)) != runner.group(batch[0])
    assert runner.group(dataclass_replace(batch[0], top_p=1.0)) != runner.group(batch[0])
    assert runner.group(dataclass_replace(batch[0], guidance_scale=1.0)) != runner.group(batch[0])
    assert runner.group(dataclass_replace(batch[1], melody=str(tune_b))) == runner.group(batch[0])
    same = batch
    clips = [None if job.melody is None else runner.melody(job) for job in same]
    results = runner.run_batch(same, clips)
    for job, clip, (codes, wave) in zip(same, clips, results, strict=True):
        ref_codes, ref_wave = _alone(melody_model, tokenizer, job, melody=clip)
        assert codes.shape == (4, runner.frames(job))
        np.testing.assert_array_equal(codes, ref_codes, err_msg=job.id)
        # the codec decoded the bucket's frames (the row padded with its last frame): the audio agrees but for the
        # last frames' reach of the codec's non-causal convolutions
        assert wave.shape == ref_wave.shape
        np.testing.assert_allclose(wave[:, : wave.shape[-1] // 2], ref_wave[:, : wave.shape[-1] // 2], atol=1e-5)
    # the same job in another batch position with other neighbours: the same codes
    again = runner.run_batch([same[2], same[0]], [clips[2], clips[0]])
    np.testing.assert_array_equal(again[0][0], results[2][0])
    np.testing.assert_array_equal(again[1][0], results[0][0])


def dataclass_replace(job, **changes):
    import dataclasses

    return dataclasses.replace(job, **changes)


def test_a_greedy_job_matches_hf_generate(melody_dir, melody_model, hf_module, tmp_path):  # noqa: F811
    """HF itself, for a greedy guided job with a melody: HF's tokenizer padded to the text length, HF's chroma."""
    from transformers import AutoTokenizer
    from transformers import MusicgenMelodyForConditionalGeneration as HFModel

    hf = HFModel.from_pretrained(melody_dir).eval()
    runner = jobs.Runner(melody_model, T5TextTokenizer.from_pretrained(melody_dir), SETTINGS)
    tune = str(_tune(tmp_path / "t.wav", rate=32000))
    job = _job(id="g", text="rock anthem", duration=0.0025, melody=tune, do_sample=False, guidance_scale=3.0)
    other = _job(id="o", text="dark techno", duration=0.002, seed=9, melody=tune, do_sample=False, guidance_scale=3.0)
    clip = runner.melody(job)
    (codes, _), _ = runner.run_batch([job, other], [clip, runner.melody(other)])
    text = AutoTokenizer.from_pretrained(melody_dir)(
        [job.text], padding="max_length", max_length=TEXT_LENGTH, return_tensors="np"
    )
    chroma = hf_module.MusicgenMelodyFeatureExtractor()([clip], sampling_rate=SR, return_tensors="pt")
    _, hf_codes = hf_generate(
        hf,
        input_ids=text["input_ids"],
        attention_mask=text["attention_mask"],
        input_features=chroma["input_features"].numpy(),
        do_sample=False,
        guidance_scale=3.0,
        max_new_tokens=runner.frames(job) + 3,
    )
    np.testing.assert_array_equal(codes, hf_codes[0])
    print(f"[parity] batch runner greedy job vs HF generate: {codes.size} codes, 100% equal")


def test_plain_musicgen_and_long_form_jobs(plain_dir):
    model = MusicgenForConditionalGeneration.from_pretrained(plain_dir)
    tokenizer = T5TextTokenizer.from_pretrained(plain_dir)
    runner = jobs.Runner(model, tokenizer, SETTINGS)
    short = [
        _job(id="s1", text="lofi hip hop", duration=0.0015, seed=4, **SAMPLE),
        _job(id="s2", text="reggae groove", duration=0.0009, seed=5, **SAMPLE),
    ]
    assert runner.group(short[0]) != runner.group(short[1])  # buckets of 16 and 8 frames
    long = [
        _job(id="l1", text="ambient drone", duration=0.0102, seed=6, **SAMPLE),
        _job(id="l2", text="funky bass line", duration=0.0102, seed=7, temperature=0.7, **SAMPLE),
    ]
    assert runner.group(long[0]).long_form and runner.group(long[0]) == runner.group(long[1])
    for batch in ([short[0]], [short[1]], long):
        for job, (codes, wave) in zip(batch, runner.run_batch(batch, [None] * len(batch)), strict=True):
            ref_codes, ref_wave = _alone(model, tokenizer, job)
            np.testing.assert_array_equal(codes, ref_codes, err_msg=job.id)
            assert wave.shape == ref_wave.shape


def test_a_job_file_compiles_a_bounded_set_of_programs(melody_dir, melody_model, tmp_path):
    """A second job file with new durations in the same buckets (and a new long-form length) compiles nothing."""
    tokenizer = T5TextTokenizer.from_pretrained(melody_dir)

    def write(name, durations):
        path = tmp_path / f"{name}.jsonl"
        rows = [
            {"id": f"{name}{i}", "text": "rock", "duration": d, "seed": i, "do_sample": True}
            for i, d in enumerate(durations)
        ]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return str(path)

    def run(path):
        before = sampling.compile_clock()
        summary = jobs.run(lambda: (melody_model, tokenizer), path, str(tmp_path / "out"), SETTINGS, progress=False)
        assert summary.failed == 0
        return sampling.compile_clock() - before

    first = run(write("first", [0.0011, 0.0018, 0.0093]))  # a bucket of 16 frames, a long piece of 75
    again = run(write("again", [0.0013, 0.0019, 0.0016, 0.0101, 0.0110]))  # the same bucket; 81 and 88 frames
    print(f"[compile] first job file {first:.1f} s, a second with new durations {again:.2f} s")
    assert first > 0 and again == 0


def _write_jobs(folder, lines):
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def _cli(*argv):
    return subprocess.run(
        [sys.executable, "-c", "import sys; from musicgen_jax.cli import main; sys.exit(main())", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


def _manifest(folder):
    entries = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("manifest") and name.endswith(".jsonl"):
            for line in open(folder / name):
                entry = json.loads(line)
                entries[entry["id"] or f"line {entry['line']}"] = entry
    return entries


def test_bad_lines_are_errors_and_a_rerun_resumes(melody_dir, tmp_path, capsys):
    _tune(tmp_path / "tune.wav")
    (tmp_path / "mine.wav").write_bytes(b"not ours")
    lines = [
        {"id": "ok1", "text": "a calm piano melody", "duration": 0.002, "seed": 1, "melody": "tune.wav", **SAMPLE},
        '{"id": "broken", "text": ',
        {"id": "ok2", "text": "rock anthem", "duration": 0.003, "guidance_scale": 1.0},
        {"id": "extra", "text": "rock", "duration": 0.002, "speed": 2},
        {"id": "nomel", "text": "rock", "duration": 0.002, "melody": "missing.wav"},
        {"id": "neg", "text": "rock", "duration": -1},
        {"id": "ok1", "text": "again", "duration": 0.002},
        {"id": "long", "text": "a calm piano melody " * 10, "duration": 0.002},
        {"id": "mine", "text": "rock", "duration": 0.002},
        {"id": "ok3", "text": "jazz", "duration": 0.0071, "seed": 3, "top_p": 0.9, **SAMPLE},
    ]
    path = _write_jobs(tmp_path, lines)
    out = tmp_path / "out"
    argv = ["batch", "--model", melody_dir, "--jobs", str(path), "--out", str(out), "--batch-size", "2", *FLAGS]
    # 'mine' is a file we did not write, in the output folder: it is never replaced
    os.makedirs(out)
    os.replace(tmp_path / "mine.wav", out / "mine.wav")
    code = main(argv + ["--quiet"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    entries = _manifest(out)
    assert {k for k, e in entries.items() if e["status"] == "ok"} == {"ok1", "ok2", "ok3"}
    errors = {k: e["error"] for k, e in entries.items() if e["status"] == "error"}
    assert "invalid JSON" in errors["line 2"]
    assert "unknown key(s) 'speed'" in errors["extra"]
    assert "missing.wav does not exist" in errors["nomel"]
    assert "duration must be a positive" in errors["neg"]
    assert "duplicate id 'ok1' (first on line 1)" in errors["line 7"]
    assert "prompt too long" in errors["long"] and "--text-length 12" in errors["long"]
    assert "not written by musicgen-jax" in errors["mine"]
    assert (out / "mine.wav").read_bytes() == b"not ours"
    for key in ("ok1", "ok2", "ok3"):
        info = soundfile.info(out / f"{key}.wav")
        assert info.samplerate == SR and info.frames == entries[key]["audio_seconds"] * SR
    assert entries["ok3"]["audio_seconds"] == pytest.approx(57 * 4 / SR)  # long-form: 57 frames of 4 samples
    assert "3 done, 7 failed" in captured.out

    # a rerun: finished jobs are skipped and nothing of theirs is rewritten; failed ones are retried (and fail)
    stamps = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}
    manifest_bytes = (out / "manifest.jsonl").read_bytes()
    code = main(argv + ["--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and "0 done, 7 failed, 3 already done" in captured.out
    assert {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)} == stamps
    assert (out / "manifest.jsonl").read_bytes() == manifest_bytes

    # a deleted WAV is generated again, sample for sample
    before = soundfile.read(out / "ok1.wav", dtype="float32")[0]
    os.remove(out / "ok1.wav")
    assert main(argv + ["--quiet"]) == 1
    assert "1 done" in capsys.readouterr().out
    np.testing.assert_array_equal(soundfile.read(out / "ok1.wav", dtype="float32")[0], before)


def _good_jobs(folder, count, tune=True):
    if tune:
        _tune(folder / "tune.wav")
    lines = [
        {
            "id": f"j{i:02d}",
            "text": ["rock", "jazz trio", "a calm piano melody"][i % 3],
            "duration": 0.001 + 0.0004 * i,
            "seed": i,
            **SAMPLE,
            **({"melody": "tune.wav"} if tune and i % 2 else {}),
        }
        for i in range(count)
    ]
    return _write_jobs(folder, lines)


def _wavs(folder):
    return {p: soundfile.read(folder / p, dtype="float32")[0] for p in sorted(os.listdir(folder)) if p.endswith(".wav")}


def test_a_killed_run_resumes_to_the_same_audio(melody_dir, tmp_path):
    path = _good_jobs(tmp_path, 8)
    argv = ["batch", "--model", melody_dir, "--jobs", str(path), "--batch-size", "1", "--quiet", *FLAGS]
    whole = _cli(*argv, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", "from musicgen_jax.cli import main; main()", *argv, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and child.poll() is None:
            if (out / "manifest.jsonl").exists() and len(_manifest(out)) >= 2:
                break
            time.sleep(0.02)
        assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read()!r}"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    done_before = {k for k, e in _manifest(out).items() if e["status"] == "ok"}
    assert 2 <= len(done_before) < 8
    resumed = _cli(*argv, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{8 - len(done_before)} done, 0 failed, {len(done_before)} already done" in resumed.stdout
    ours, ref = _wavs(out), _wavs(tmp_path / "whole")
    assert ours.keys() == ref.keys() and len(ref) == 8
    for name in ref:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_share_a_job_file(melody_dir, tmp_path):
    """Two real processes joined by jax.distributed on localhost: each runs the jobs that hash to it, once."""
    path = _good_jobs(tmp_path, 6)
    argv = ["batch", "--model", melody_dir, "--jobs", str(path), "--batch-size", "2", "--quiet", *FLAGS]
    single = _cli(*argv, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr

    port = _free_port()
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
    }
    out = tmp_path / "multi"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from musicgen_jax.cli import main; sys.exit(main())",
                *argv,
                "--out",
                str(out),
                "--coordinator-address",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for i in range(2)
    ]
    results = [child.communicate(timeout=600) for child in children]
    for child, (_stdout, stderr) in zip(children, results, strict=True):
        assert child.returncode == 0, stderr
    assert "process 0 of 2" in results[0][0] and "process 1 of 2" in results[1][0]
    names = sorted(n for n in os.listdir(out) if n.startswith("manifest"))
    assert names == ["manifest-00000-of-00002.jsonl", "manifest-00001-of-00002.jsonl"]
    shares = [{json.loads(line)["id"] for line in open(out / n)} for n in names]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == {f"j{i:02d}" for i in range(6)}
    assert shares[0] and shares[1]  # both did work (the ids hash to both processes)
    ours, ref = _wavs(out), _wavs(tmp_path / "single")
    assert ours.keys() == ref.keys()
    for name in ref:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--buckets", "1,x"], "--buckets must be positive seconds"),
        (["--num-processes", "2"], "go together"),
        (["--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "--process-id 2"),
    ],
)
def test_bad_batch_flags_fail_in_one_line(melody_dir, tmp_path, capsys, extra, match):
    path = _write_jobs(tmp_path, [{"id": "a", "text": "rock", "duration": 0.001}])
    code = main(["batch", "--model", melody_dir, "--jobs", str(path), "--out", str(tmp_path / "o"), *FLAGS, *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_missing_job_file_and_an_unfit_window_fail_in_one_line(melody_dir, tmp_path, capsys):
    code = main(["batch", "--model", melody_dir, "--jobs", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "none.jsonl: cannot read" in err and len(err.strip().splitlines()) == 1
    path = _write_jobs(tmp_path, [{"id": "a", "text": "rock", "duration": 0.001}])
    # the default 30 s window does not fit the tiny position table: said before any job runs
    code = main(["batch", "--model", melody_dir, "--jobs", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "the default window_duration 30 s does not fit" in err and "--text-length 64" in err


def test_generate_takes_a_key_and_knobs_per_row(melody_model):
    """``generate(rng=(B, 2) keys, temperature=[...], ...)``: each row samples as a batch of one with its key."""
    import jax

    text = np.array([[5, 9, 13, 1], [7, 3, 1, 0]])
    mask = (text != 0).astype(np.int64)
    keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in (5, 7)])
    knobs = dict(do_sample=True, top_k=8, max_new_tokens=12, return_dict_in_generate=True)
    both = melody_model.generate(text, mask, rng=keys, temperature=[0.7, 1.3], guidance_scale=[2.0, 3.5], **knobs)
    for b, (seed, temperature, scale) in enumerate(((5, 0.7, 2.0), (7, 1.3, 3.5))):
        alone = melody_model.generate(
            text[b : b + 1], mask[b : b + 1], seed=seed, temperature=temperature, guidance_scale=scale, **knobs
        )
        np.testing.assert_array_equal(both.audio_codes[b], alone.audio_codes[0])
    with pytest.raises(ValueError, match="guidance_scale per row must be all > 1"):
        melody_model.generate(text, mask, guidance_scale=[3.0, 1.0], max_new_tokens=8)
    with pytest.raises(ValueError, match="temperature holds 3 values"):
        melody_model.generate(text, mask, temperature=[1.0, 1.0, 1.0], max_new_tokens=8)
    with pytest.raises(ValueError, match="rng must be one PRNG key"):
        melody_model.generate(text, mask, rng=keys[:1], do_sample=True, max_new_tokens=8)


def test_a_plain_musicgen_job_file(plain_dir, tmp_path, capsys):
    _tune(tmp_path / "tune.wav")
    path = _write_jobs(
        tmp_path,
        [
            {"id": "p1", "text": "lofi hip hop", "duration": 0.002, "seed": 1, **SAMPLE},
            {"id": "p2", "text": "rock", "duration": 0.0071, "seed": 2, **SAMPLE},
            {"id": "p3", "text": "rock", "duration": 0.002, "melody": "tune.wav"},
        ],
    )
    out = tmp_path / "out"
    code = main(["batch", "--model", plain_dir, "--jobs", str(path), "--out", str(out), "--quiet", *FLAGS])
    assert code == 1, capsys.readouterr().err
    entries = _manifest(out)
    assert entries["p1"]["status"] == entries["p2"]["status"] == "ok"
    assert "melody needs a MusicGen Melody checkpoint" in entries["p3"]["error"]
    assert soundfile.info(out / "p2.wav").frames == 57 * 4
