"""Nothing lost: checkpoint and WAV writes are atomic and never touch what musicgen-jax did not write; a corrupt
checkpoint is one line on stderr. Kills are real: subprocesses SIGKILLed at each named point of a save and at random
moments, then the folder is loaded."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import soundfile

from musicgen_jax import MusicgenMelodyForConditionalGeneration, audio, checkpoint
from musicgen_jax.cli import main
from musicgen_jax.demo import random_params, tiny_config, write_random_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-c", "import sys; from musicgen_jax.cli import main; sys.exit(main())"]

# A small tree saved with checkpoint.save; its values and its config.json both carry the seed, so a loaded folder
# shows whether parameters and side files come from the same save.
SAVE_SCRIPT = """
import sys
import numpy as np
from musicgen_jax import checkpoint
dst, seed = sys.argv[1], int(sys.argv[2])
params = {"a": {"w": np.full((64, 64), seed, np.float32)}, "b": np.arange(4096, dtype=np.float32) + seed}
checkpoint.save(dst, params, {"seed": seed}, {"seed": seed})
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != checkpoint.KILL_AT_ENV}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def _small_abstract():
    return {
        "a": {"w": jax.ShapeDtypeStruct((64, 64), np.float32)},
        "b": jax.ShapeDtypeStruct((4096,), np.float32),
    }


def _load_small(dst) -> int:
    """The seed of the checkpoint at ``dst``; asserts parameters and side files agree."""
    params = checkpoint.restore(dst, _small_abstract())
    seed = int(np.asarray(params["a"]["w"])[0, 0])
    np.testing.assert_array_equal(np.asarray(params["a"]["w"]), np.full((64, 64), seed, np.float32))
    np.testing.assert_array_equal(np.asarray(params["b"]), np.arange(4096, dtype=np.float32) + seed)
    folder = checkpoint.resolve(dst)
    for name in ("config.json", "generation_config.json"):
        with open(os.path.join(folder, name)) as f:
            assert json.load(f) == {"seed": seed}, name
    return seed


def _save_small(dst, seed, kill_at=None) -> subprocess.CompletedProcess:
    env = _env(**({checkpoint.KILL_AT_ENV: kill_at} if kill_at else {}))
    return subprocess.run(
        [sys.executable, "-c", SAVE_SCRIPT, str(dst), str(seed)], env=env, capture_output=True, text=True
    )


def _ours(dst) -> list[str]:
    return sorted(n for n in os.listdir(dst) if n.startswith(checkpoint.VERSION_PREFIX) or n.startswith("."))


@pytest.mark.parametrize("point", checkpoint.SAVE_POINTS)
def test_a_save_killed_at_each_point_leaves_the_old_or_the_new(tmp_path, point):
    dst = tmp_path / "ckpt"
    assert _save_small(dst, 1).returncode == 0
    (dst / "notes.txt").write_text("mine")  # a user's file beside the checkpoint
    killed = _save_small(dst, 2, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    seed = _load_small(dst)
    before_switch = checkpoint.SAVE_POINTS.index(point) < checkpoint.SAVE_POINTS.index("pointer-switched")
    assert seed == (1 if before_switch else 2), point
    print(f"[kill] at {point}: loads seed {seed}; entries {_ours(dst)}")
    # The next save completes and removes what the killed one left; the user's file is untouched.
    assert _save_small(dst, 3).returncode == 0
    assert _load_small(dst) == 3
    assert (dst / "notes.txt").read_text() == "mine"
    assert _ours(dst) == [checkpoint.VERSION_PREFIX + str(int(_current_number(dst)))]


def _current_number(dst) -> int:
    with open(os.path.join(dst, checkpoint.MARKER)) as f:
        return int(json.load(f)["current"][len(checkpoint.VERSION_PREFIX) :])


def test_a_first_save_killed_before_the_switch_is_not_a_checkpoint_and_a_rerun_succeeds(tmp_path):
    dst = tmp_path / "new"
    assert _save_small(dst, 1, kill_at="version-complete").returncode == -signal.SIGKILL
    assert not checkpoint.is_converted(dst)
    assert _save_small(dst, 2).returncode == 0  # the leftover is ours (stamped): no --overwrite needed
    assert _load_small(dst) == 2
    assert len(_ours(dst)) == 1


def test_random_checkpoint_killed_at_random_moments_always_loads(tmp_path):
    """The real command, SIGKILLed at random moments over its run, onto an existing checkpoint of another seed."""
    dst = tmp_path / "ckpt"
    seeds = {s: np.asarray(random_params(tiny_config(), s)["decoder"]["embed"]) for s in (0, 1)}
    started = time.perf_counter()
    subprocess.run([*CLI, "random-checkpoint", str(dst), "--seed", "0"], env=_env(), check=True, capture_output=True)
    duration = time.perf_counter() - started
    rng = random.Random(0)
    current, outcomes = 0, []
    for _ in range(5):
        new = 1 - current
        process = subprocess.Popen(
            [*CLI, "random-checkpoint", str(dst), "--seed", str(new)],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        delay = rng.uniform(0.6, 1.1) * duration
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        model = MusicgenMelodyForConditionalGeneration.from_pretrained(dst, scan_layers=True)
        embed = np.asarray(model.params["decoder"]["embed"])
        which = [s for s, e in seeds.items() if np.array_equal(e, embed)]
        assert len(which) == 1, "the loaded weights are neither the old nor the new checkpoint"
        outcomes.append(
            (round(delay, 1), "killed" if process.returncode else "finished", "new" if which[0] == new else "old")
        )
        current = which[0]
    print(f"[kill] random-checkpoint run {duration:.1f} s; (delay s, process, checkpoint loaded): {outcomes}")


def _tree(root) -> dict[str, bytes]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


@pytest.fixture
def users_folder(tmp_path):
    """A folder of someone else's files, with names a conversion writes (config.json, params/, spiece.model)."""
    folder = tmp_path / "mine"
    (folder / "params").mkdir(parents=True)
    (folder / "params" / "notes.txt").write_text("my notes")
    (folder / "config.json").write_text('{"mine": true}')
    (folder / "spiece.model").write_bytes(b"not a tokenizer")
    return folder


def _one_line(capsys, code, match):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("musicgen-jax: error:") and match in lines[0], lines[0]
    return lines[0]


def test_writes_refuse_a_folder_that_is_not_a_checkpoint(users_folder, tmp_path, capsys):
    before = _tree(users_folder)
    line = _one_line(capsys, main(["random-checkpoint", str(users_folder)]), "not empty and not a musicgen-jax")
    print(f"[error] {line}")
    write_random_checkpoint(tmp_path / "src")
    _one_line(capsys, main(["convert", "--src", str(tmp_path / "src"), "--dst", str(users_folder)]), "--dst")
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "src")
    with pytest.raises(checkpoint.CheckpointError, match="not empty"):
        model.save_pretrained(users_folder)
    assert _tree(users_folder) == before


def test_overwrite_adds_the_checkpoint_and_keeps_every_user_file(users_folder, capsys):
    before = _tree(users_folder)
    assert main(["random-checkpoint", str(users_folder), "--overwrite"]) == 0
    after = _tree(users_folder)
    assert {k: after[k] for k in before} == before  # nothing of the user's changed
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(users_folder)
    assert model.config == tiny_config()
    # Replacing it later needs no flag (it is a checkpoint now) and still keeps the user's files.
    assert main(["random-checkpoint", str(users_folder), "--seed", "1"]) == 0
    after = _tree(users_folder)
    assert {k: after[k] for k in before} == before
    capsys.readouterr()


def test_a_foreign_marker_is_never_replaced(tmp_path, capsys):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / checkpoint.MARKER).write_text("my own json file")
    line = _one_line(capsys, main(["random-checkpoint", str(folder), "--overwrite"]), checkpoint.MARKER)
    print(f"[error] {line}")
    assert (folder / checkpoint.MARKER).read_text() == "my own json file"


def test_a_version_1_checkpoint_loads_and_is_replaced_without_touching_its_json(tmp_path):
    """Directories written before the pointer layout (params/ and json at the top), and before the decoder stored
    its kernels (out, in) (theirs are (in, out)), load as before, kernels turned to today's layout; a new save
    switches them to the pointer layout, removes only the old params/ and leaves the json files alone."""
    import orbax.checkpoint as ocp

    dst = tmp_path / "v1"
    dst.mkdir()
    config = tiny_config()
    params = random_params(config, 0)
    layers = params["decoder"]["layers"]
    old_layers = {  # the (in, out) kernels musicgen-jax 0.1 wrote, from today's (L, ...) kernels
        **layers,
        "attn": {
            "qkv": layers["attn"]["qkv"].transpose(0, 4, 1, 2, 3),
            "out": layers["attn"]["out"].transpose(0, 2, 3, 1),
        },
        "mlp": {"up": layers["mlp"]["up"].transpose(0, 2, 1), "down": layers["mlp"]["down"].transpose(0, 2, 1)},
    }
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(dst / "params", {**params, "decoder": {**params["decoder"], "layers": old_layers}})
    checkpointer.wait_until_finished()
    (dst / "config.json").write_text(json.dumps(config.to_hf()))
    (dst / checkpoint.MARKER).write_text(json.dumps({"format": "musicgen-jax", "version": 1, "dtype": ["float32"]}))
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(dst, scan_layers=True)
    np.testing.assert_array_equal(np.asarray(model.params["decoder"]["embed"]), params["decoder"]["embed"])
    for part, name in (("attn", "qkv"), ("attn", "out"), ("mlp", "up"), ("mlp", "down")):
        got = np.asarray(model.params["decoder"]["layers"][part][name])
        np.testing.assert_array_equal(got, layers[part][name], err_msg=name)
    model.save_pretrained(dst)
    assert not (dst / "params").exists() and (dst / "config.json").exists()
    again = MusicgenMelodyForConditionalGeneration.from_pretrained(dst, scan_layers=True)
    np.testing.assert_array_equal(np.asarray(again.params["decoder"]["embed"]), params["decoder"]["embed"])
    np.testing.assert_array_equal(np.asarray(again.params["decoder"]["layers"]["attn"]["qkv"]), layers["attn"]["qkv"])


def _abstract_of(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)


def test_the_plain_layout_is_memory_mapped_and_reads_what_orbax_reads(tmp_path):
    """save() writes one plain chunk file per array; restore() maps the large ones into memory and reads the small
    ones itself, and gets exactly what orbax's own reader gets, as saved and cast to bfloat16."""
    import orbax.checkpoint as ocp

    rng = np.random.default_rng(0)
    params = {
        "big": rng.standard_normal((512, 1024)).astype(np.float32),  # 2 MiB: mapped
        "small": {"w": rng.standard_normal((3, 5, 7)).astype(np.float32), "zero": np.zeros((9,), np.float32)},
        "scalar": np.float32(-2.5),
    }
    checkpoint.save(tmp_path / "c", params, {}, None)
    target = os.path.join(checkpoint.resolve(tmp_path / "c"), "params")
    abstract = _abstract_of(params)
    views = checkpoint.mapped_arrays(target, abstract)
    assert isinstance(views["['big']"], np.memmap) and not isinstance(views["['small']['w']"], np.memmap)
    for dtype in (None, jax.numpy.bfloat16):
        ours = checkpoint.restore(tmp_path / "c", abstract, dtype=dtype)
        want = ocp.StandardCheckpointer().restore(
            target, jax.tree_util.tree_map(lambda s, d=dtype: jax.ShapeDtypeStruct(s.shape, d or s.dtype), abstract)
        )
        for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(want), strict=True):
            assert isinstance(a, jax.Array) and a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_mapped_parameter_updated_in_place_never_writes_the_checkpoint(tmp_path):
    """The maps are copy-on-write: a donated (reused) or updated parameter buffer leaves the files as saved."""
    params = {"w": np.ones((512, 1024), np.float32)}
    checkpoint.save(tmp_path / "c", params, {}, None)
    folder = checkpoint.resolve(tmp_path / "c")
    before = _tree(folder)
    loaded = checkpoint.restore(tmp_path / "c", _abstract_of(params))
    doubled = jax.jit(lambda tree: {"w": tree["w"] * 2}, donate_argnums=0)(loaded)
    np.testing.assert_array_equal(np.asarray(doubled["w"]), 2.0)
    assert _tree(folder) == before
    np.testing.assert_array_equal(np.asarray(checkpoint.restore(tmp_path / "c", _abstract_of(params))["w"]), 1.0)


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("noise") / "ckpt")


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _cli_stderr(*argv) -> tuple[int, list[str]]:
    """A real process, so that background threads' output (fd 2) is seen too."""
    result = subprocess.run([*CLI, *argv], env=_env(), capture_output=True, text=True, timeout=300)
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]


def _largest_data_file(folder) -> str:
    """The largest file of the parameters (a chunk file of the plain layout, or an OCDBT data file)."""
    params = os.sep + "params" + os.sep
    files = [os.path.join(r, n) for r, _, ns in os.walk(folder) for n in ns if params in os.path.join(r, "")]
    return max(files, key=os.path.getsize)


def _corrupt_cases(noise, root):
    cases = {}
    truncated = _copy(noise, root / "truncated")
    data = _largest_data_file(checkpoint.resolve(truncated))
    os.truncate(data, os.path.getsize(data) // 2)
    cases["truncated data file"] = (truncated, "bytes, the checkpoint wrote")
    missing = _copy(noise, root / "missing")
    os.remove(_largest_data_file(checkpoint.resolve(missing)))
    cases["missing data file"] = (missing, "missing from the checkpoint")
    garbage = _copy(noise, root / "garbage")
    (garbage / checkpoint.MARKER).write_text("garbage{")
    cases["garbage pointer"] = (garbage, f"{checkpoint.MARKER}: not a musicgen-jax marker")
    dangling = _copy(noise, root / "dangling")
    (dangling / checkpoint.MARKER).write_text(json.dumps({"format": "musicgen-jax", "version": 2, "current": "x"}))
    cases["pointer to nothing"] = (dangling, "bad 'current' entry")
    # The version-1 layout has no list of file sizes: the truncation reaches orbax/tensorstore itself.
    legacy = _copy(checkpoint.resolve(noise), root / "legacy")
    # (its arrays are today's, so the marker says so: "kernels" 2, the decoder's (out, in) kernels)
    marker = {"format": "musicgen-jax", "version": 1, "kernels": checkpoint.KERNELS, "dtype": ["float32"]}
    (legacy / checkpoint.MARKER).write_text(json.dumps(marker))
    data = _largest_data_file(legacy)
    os.truncate(data, os.path.getsize(data) // 2)
    cases["truncated data file, version-1 layout"] = (legacy, "cannot read the parameters")
    return cases


def test_a_corrupt_checkpoint_is_exactly_one_line_on_stderr(noise, tmp_path):
    for name, (folder, match) in _corrupt_cases(noise, tmp_path).items():
        for _ in range(3 if "version-1" in name else 1):  # tensorstore's thread noise came in some runs only
            code, lines = _cli_stderr(
                "generate", "--model", str(folder), "--text", "hi", "--max-new-tokens", "4", "--quiet",
                "--out", str(tmp_path / "x.wav"),
            )  # fmt: skip
            assert code == 2 and len(lines) == 1, (name, lines)
            assert lines[0].startswith("musicgen-jax: error:") and match in lines[0], (name, lines[0])
        print(f"[error] {name}: {lines[0]}")


def test_save_wav_replaces_atomically_and_tags_its_files(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    old = np.full((1, 800), 0.25, np.float32)
    audio.save_wav(path, old, 8000)
    assert audio.written_by_musicgen_jax(path)
    soundfile.write(tmp_path / "other.wav", old[0], 8000)
    assert not audio.written_by_musicgen_jax(tmp_path / "other.wav")

    class Boom(RuntimeError):
        pass

    def failing_write(self, data):
        raise Boom("disk full")

    monkeypatch.setattr(soundfile.SoundFile, "write", failing_write)
    with pytest.raises(audio.AudioError, match="disk full"):
        audio.save_wav(path, np.zeros((1, 1600), np.float32), 8000)
    monkeypatch.undo()
    np.testing.assert_array_equal(audio.load(path)[0], old)  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["a.wav", "other.wav"]  # and no temporary is left


WAV_SCRIPT = """
import sys
import numpy as np
from musicgen_jax import audio
wave = np.full((2, 32000 * 20), float(sys.argv[2]), np.float32)
print("ready", flush=True)
while True:
    audio.save_wav(sys.argv[1], wave, 32000)
"""


def test_a_wav_write_killed_at_random_moments_never_leaves_a_truncated_file(tmp_path):
    path = tmp_path / "long.wav"
    rng = random.Random(1)
    for attempt in range(5):
        process = subprocess.Popen(
            [sys.executable, "-c", WAV_SCRIPT, str(path), "0.5"], env=_env(), stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.6 if attempt else 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if path.exists():  # absent only when killed before the first rename
            data, rate = soundfile.read(path, dtype="float32", always_2d=True)
            assert data.shape == (32000 * 20, 2) and rate == 32000 and np.all(data == 0.5)


def test_generate_never_overwrites_a_file_it_did_not_write(noise, tmp_path, capsys):
    theirs = tmp_path / "theirs.wav"
    soundfile.write(theirs, np.zeros(100, np.float32), 8000)
    before = theirs.read_bytes()
    args = ["generate", "--model", str(noise), "--text", "hi", "--max-new-tokens", "4", "--quiet"]
    line = _one_line(capsys, main([*args, "--out", str(theirs)]), "not written by musicgen-jax")
    print(f"[error] {line}")
    assert theirs.read_bytes() == before
    ours = tmp_path / "ours.wav"
    assert main([*args, "--out", str(ours)]) == 0
    first = ours.read_bytes()
    assert main([*args, "--out", str(ours), "--seed", "1"]) == 0  # our own file: replaced without a flag
    assert ours.read_bytes() != first
    assert main([*args, "--out", str(theirs), "--overwrite"]) == 0
    assert audio.written_by_musicgen_jax(theirs)
    capsys.readouterr()


TRAIN_SCRIPT = """
import sys
import jax.numpy as jnp
from musicgen_jax import training
manager = training.checkpoint_manager(sys.argv[1], max_to_keep=2)
print("ready", flush=True)
step = manager.latest_step() or 0  # resumes, as finetune does
while True:
    step += 1
    state = training.TrainState(jnp.int32(step), {"w": jnp.full((256, 256), step, jnp.float32)}, {}, jnp.zeros(2))
    training.save_checkpoint(manager, state, {"step": step})
"""


def test_training_checkpoints_killed_at_random_moments_restore_the_latest_complete_step(tmp_path):
    """orbax's CheckpointManager writes each step under a temporary name and renames it when complete."""
    from musicgen_jax import training

    directory = tmp_path / "checkpoints"
    rng = random.Random(2)
    steps = []
    for _ in range(4):
        process = subprocess.Popen(
            [sys.executable, "-c", TRAIN_SCRIPT, str(directory)], env=_env(), stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.3, 1.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        manager = training.checkpoint_manager(directory, max_to_keep=2)
        step = manager.latest_step()
        if step is None:
            continue
        template = training.TrainState(np.int32(0), {"w": np.zeros((256, 256), np.float32)}, {}, np.zeros(2))
        state, metadata = training.restore_checkpoint(manager, template)
        manager.close()
        assert int(state.step) == step == metadata["step"]
        np.testing.assert_array_equal(np.asarray(state.params["w"]), np.full((256, 256), step, np.float32))
        steps.append(step)
    print(f"[kill] training checkpoints: latest step after each kill {steps}")
    assert steps and steps == sorted(steps)
