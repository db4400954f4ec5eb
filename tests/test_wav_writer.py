"""``audio.WavWriter``: the partial file is a valid WAV after every append, the final file is what ``save_wav`` writes
and carries the tag, nothing is left or overwritten on abort, and a process killed mid-stream leaves a readable file."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile

from musicgen_jax import audio as audio_module
from musicgen_jax.audio import SOFTWARE_TAG, AudioError, WavWriter, save_wav, written_by_musicgen_jax

RATE = 32000


def read(path):
    """(channels, samples) float32 exactly as stored, and the file's info."""
    with soundfile.SoundFile(path) as f:
        data = f.read(dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), (f.samplerate, f.channels, f.subtype, f.software)


def assert_bits_equal(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def awkward_samples(channels, n, seed=0):
    """Random float32 with -0.0, a subnormal, values past +-1 and the largest finite float: stored bit for bit."""
    x = np.random.default_rng(seed).standard_normal((channels, n)).astype(np.float32)
    special = np.array([-0.0, 1e-45, 3.5, -7.25, np.finfo(np.float32).max], np.float32)
    x.flat[: min(special.size, x.size)] = special[: x.size]
    return x


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_partial_is_valid_after_every_append_and_final_matches_save_wav(tmp_path, channels):
    path = tmp_path / "song.wav"
    writer = WavWriter(path, RATE, channels)
    partial = writer.partial_path
    assert os.path.dirname(partial) == str(tmp_path) and os.path.basename(partial).startswith("song.partial-")
    assert partial.endswith(".wav") and len(os.path.basename(partial)) == len("song.partial-") + 8 + len(".wav")
    data, info = read(partial)
    assert data.shape == (channels, 0) and info == (RATE, channels, "FLOAT", SOFTWARE_TAG)
    pieces = []
    for i, n in enumerate([1, 0, 100, 7, 3000]):
        piece = awkward_samples(channels, n, seed=i)
        writer.append(piece[0] if channels == 1 and i % 2 else piece)  # mono also as (samples,)
        pieces.append(piece)
        data, info = read(partial)
        assert_bits_equal(data, np.concatenate(pieces, axis=1))
        assert info == (RATE, channels, "FLOAT", SOFTWARE_TAG)
        assert not path.exists()
    writer.close()
    assert not os.path.exists(partial) and os.listdir(tmp_path) == ["song.wav"]
    everything = np.concatenate(pieces, axis=1)
    assert_bits_equal(read(path)[0], everything)
    assert written_by_musicgen_jax(path)
    save_wav(tmp_path / "reference.wav", everything, RATE)
    reference, reference_info = read(tmp_path / "reference.wav")
    assert_bits_equal(read(path)[0], reference)
    assert reference_info[:3] == info[:3]


def test_context_manager_closes_and_replaces_an_older_file(tmp_path):
    path = tmp_path / "song.wav"
    save_wav(path, np.zeros((2, 10), np.float32), RATE)
    with WavWriter(path, RATE, 2) as writer:
        writer.append(np.ones((2, 5), np.float32))
    assert writer.closed and sorted(os.listdir(tmp_path)) == ["song.wav"]
    assert_bits_equal(read(path)[0], np.ones((2, 5), np.float32))


def test_abort_and_exceptions_leave_nothing_and_keep_the_old_file(tmp_path):
    path = tmp_path / "song.wav"
    save_wav(path, np.full((1, 10), 0.5, np.float32), RATE)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="generation failed"):
        with WavWriter(path, RATE, 1) as writer:
            writer.append(np.zeros(100, np.float32))
            raise RuntimeError("generation failed")
    assert writer.closed and os.listdir(tmp_path) == ["song.wav"] and path.read_bytes() == before
    writer = WavWriter(path, RATE, 1)
    writer.append(np.zeros(100, np.float32))
    writer.abort()
    writer.abort()  # idempotent
    assert os.listdir(tmp_path) == ["song.wav"] and path.read_bytes() == before
    with pytest.raises(AudioError, match="closed"):
        writer.append(np.zeros(1, np.float32))


def test_never_overwrites_a_file_at_the_partial_name(tmp_path, monkeypatch):
    path = tmp_path / "song.wav"
    theirs = tmp_path / "song.partial-deadbeef.wav"
    theirs.write_bytes(b"someone else's file")
    names = iter(["deadbeef", "deadbeef", "0badf00d"])
    monkeypatch.setattr(audio_module.secrets, "token_hex", lambda n: next(names))
    writer = WavWriter(path, RATE, 1)
    assert writer.partial_path == str(tmp_path / "song.partial-0badf00d.wav")
    writer.abort()
    monkeypatch.setattr(audio_module.secrets, "token_hex", lambda n: "deadbeef")
    with pytest.raises(AudioError, match="every name tried exists"):
        WavWriter(path, RATE, 1)
    assert theirs.read_bytes() == b"someone else's file" and os.listdir(tmp_path) == [theirs.name]


def test_refusals_are_one_line_and_name_the_path(tmp_path):
    path = tmp_path / "song.wav"
    errors = []
    for rate, channels in [(0, 1), (44100.0, 1), (True, 1), (RATE, 0), (RATE, 33)]:
        with pytest.raises(AudioError) as e:
            WavWriter(path, rate, channels)
        errors.append(e)
    with pytest.raises(AudioError, match="is a directory") as e:
        WavWriter(tmp_path, RATE, 1)
    errors.append(e)
    writer = WavWriter(path, RATE, 2)
    for bad, match in [
        (np.array([[0.0, np.nan], [0.0, 0.0]]), "NaN or infinite"),
        (np.array([[0.0, 1e39], [0.0, 0.0]]), "NaN or infinite"),  # finite in float64, inf in float32
        (np.zeros((1, 4)), r"must be \(2, samples\)"),
        (np.zeros(4), r"must be \(2, samples\)"),
        (np.zeros((1, 2, 4)), r"must be \(2, samples\)"),
    ]:
        with pytest.raises(AudioError, match=match) as e:
            writer.append(bad)
        errors.append(e)
    assert writer.frames_written == 0 and read(writer.partial_path)[0].shape == (2, 0)
    with pytest.raises(AudioError, match="no audio samples") as e:
        writer.close()  # nothing appended: refused, and the partial file is removed
    errors.append(e)
    assert os.listdir(tmp_path) == []
    for e in errors:
        assert str(path) in str(e.value) or str(tmp_path) in str(e.value)
        assert "\n" not in str(e.value)


def test_samples_written_before_the_header_update_are_ignored(tmp_path):
    """A kill between an append's samples and its header update leaves bytes past the data chunk: still valid."""
    writer = WavWriter(tmp_path / "song.wav", RATE, 2)
    writer.append(np.ones((2, 50), np.float32))
    with open(writer.partial_path, "ab") as f:
        f.write(np.full(2 * 7 + 1, 0.25, np.float32).tobytes()[:-2])  # 7.5 frames, as cut mid-write
    assert_bits_equal(read(writer.partial_path)[0], np.ones((2, 50), np.float32))
    writer.abort()


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from musicgen_jax.audio import WavWriter

    writer = WavWriter(sys.argv[1], 32000, 2)
    print(writer.partial_path, flush=True)
    for i in range(3000):
        t = np.arange(i * 1000, (i + 1) * 1000)
        writer.append(np.stack([np.sin(0.01 * t), np.cos(0.01 * t)]).astype(np.float32))
        print(i + 1, flush=True)
    time.sleep(600)
    """
)


def expected_stream(frames):
    t = np.arange(frames)
    return np.stack([np.sin(0.01 * t), np.cos(0.01 * t)]).astype(np.float32)


@pytest.mark.parametrize("existing", [False, True])
def test_killed_mid_stream_leaves_a_readable_partial_and_no_final_file(tmp_path, existing):
    path = tmp_path / "song.wav"
    if existing:
        save_wav(path, np.full((2, 10), 0.5, np.float32), RATE)
    before = path.read_bytes() if existing else None
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        partial = child.stdout.readline().strip()
        appended = 0
        while appended < 20:
            line = child.stdout.readline()
            assert line, f"the writer process ended early (rc {child.poll()})"
            appended = int(line)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert (path.read_bytes() == before) if existing else not path.exists()
    data, info = read(partial)
    assert info == (RATE, 2, "FLOAT", SOFTWARE_TAG)
    assert data.shape[1] >= 20 * 1000 and data.shape[1] % 1000 == 0  # whole appends only
    assert_bits_equal(data, expected_stream(data.shape[1]))
    print(f"[wav] killed after {data.shape[1] // 1000} appends; the partial file reads back whole")
