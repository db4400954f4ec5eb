"""The persistent compilation cache: a second fresh ``generate`` process loads its programs instead of compiling
them, the off switches leave no folder behind, and an unusable folder changes nothing but the speed."""

import json
import os
import re
import subprocess
import sys

import pytest

from musicgen_jax import compilation_cache
from musicgen_jax.demo import write_random_checkpoint

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs the CLI in a fresh process and prints, as the last stdout line, jax's compilation-cache events and the
# seconds spent in XLA's backend compile (the part a cache hit skips; tracing and lowering still run).
_PROBE = """
import json, sys
from jax import monitoring
from musicgen_jax.cli import main
events, seconds = {}, {"backend_compile": 0.0}
def on_event(name, **_):
    events[name] = events.get(name, 0) + 1
def on_duration(name, duration, **_):
    if name == "/jax/core/compile/backend_compile_duration":
        seconds["backend_compile"] += duration
monitoring.register_event_listener(on_event)
monitoring.register_event_duration_secs_listener(on_duration)
code = main(sys.argv[1:], exiting=False)
print(json.dumps({"code": code, **seconds, **{k.rsplit("/", 1)[1]: v for k, v in events.items() if "cache" in k}}))
"""


@pytest.fixture(scope="module")
def noise_dir(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("noise"))


def _generate(model, out, cache_dir, *flags, probe=False, **env):
    """One ``generate`` run in a fresh process with ``MUSICGEN_JAX_CACHE_DIR=cache_dir``; returns the finished
    process (stdout, stderr as text)."""
    argv = ["generate", "--model", model, "--text", "x", "--max-new-tokens", "8", "--quiet", "--out", str(out), *flags]
    command = [sys.executable, "-c", _PROBE, *argv] if probe else [sys.executable, "-m", "musicgen_jax.cli", *argv]
    environment = {**os.environ, "MUSICGEN_JAX_CACHE_DIR": str(cache_dir), **env}
    return subprocess.run(command, capture_output=True, text=True, cwd=_ROOT, env=environment, timeout=300)


def _compile_seconds(stdout: str) -> float:
    return float(re.search(r"\| compile ([0-9.]+) s \|", stdout).group(1))


@pytest.fixture(scope="module")
def uncached_run(noise_dir, tmp_path_factory):
    """A run with ``--no-compilation-cache``: what a run prints without the cache."""
    folder = tmp_path_factory.mktemp("uncached")
    run = _generate(noise_dir, folder / "out.wav", folder / "cache", "--no-compilation-cache")
    return run, folder / "cache"


def test_a_second_fresh_process_loads_every_program_from_the_cache(noise_dir, tmp_path):
    cache = tmp_path / "cache"
    first = _generate(noise_dir, tmp_path / "a.wav", cache, probe=True)
    assert first.returncode == 0, first.stderr
    entries = os.listdir(cache)
    second = _generate(noise_dir, tmp_path / "b.wav", cache, probe=True)
    assert second.returncode == 0, second.stderr
    a, b = (json.loads(run.stdout.strip().splitlines()[-1]) for run in (first, second))
    ca, cb = _compile_seconds(first.stdout), _compile_seconds(second.stdout)
    print(f"[cache] {len(entries)} entries after run 1; run 1: {a}, run 2: {b}")
    print(
        f"[cache] compile (trace + lower + backend) {ca:.1f} s -> {cb:.1f} s; backend compile "
        f"{a['backend_compile']:.2f} s -> {b['backend_compile']:.2f} s"
    )
    assert a.get("cache_misses", 0) > 0 and len(entries) >= a["cache_misses"] and a.get("cache_hits", 0) == 0
    assert b.get("cache_misses", 0) == 0 and b.get("cache_hits", 0) == a["cache_misses"]
    assert b["backend_compile"] <= 0.35 * a["backend_compile"]
    assert cb < ca
    assert sorted(os.listdir(cache)) == sorted(entries)


def test_no_compilation_cache_flag_writes_no_folder(uncached_run):
    run, cache = uncached_run
    assert run.returncode == 0, run.stderr
    assert not cache.exists()


def test_the_environment_switch_turns_the_cache_off(noise_dir, tmp_path):
    run = _generate(noise_dir, tmp_path / "out.wav", tmp_path / "cache", MUSICGEN_JAX_COMPILATION_CACHE="0")
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("value", ["false", " Off ", "NO"])
def test_the_switch_spellings(monkeypatch, tmp_path, value):
    monkeypatch.setenv(compilation_cache.ENV_SWITCH, value)
    assert compilation_cache.enable(str(tmp_path / "cache")) is None  # returns before touching jax's config
    assert not (tmp_path / "cache").exists()


def test_an_unwritable_cache_folder_is_silently_off(noise_dir, uncached_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = _generate(noise_dir, tmp_path / "out.wav", blocker / "cache")
    assert run.returncode == 0, run.stderr
    assert run.stderr == uncached_run[0].stderr


def test_enable_is_idempotent_and_keeps_a_folder_given_to_jax(tmp_path):
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    code = (
        "import json, sys, jax\nfrom musicgen_jax import compilation_cache as c\n"
        "calls = [c.enable(sys.argv[1]), c.enable(sys.argv[1]), c.enable()]\n"
        "jax.config.update('jax_compilation_cache_dir', sys.argv[2])\n"
        "print(json.dumps(calls + [c.enable(sys.argv[1])]))"
    )
    run = subprocess.run([sys.executable, "-c", code, ours, theirs], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == [ours, ours, ours, theirs]


def test_default_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(compilation_cache.ENV_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache.default_dir() == os.path.join(str(tmp_path), "musicgen-jax", "xla")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compilation_cache.default_dir() == os.path.join(str(tmp_path), "home", ".cache", "musicgen-jax", "xla")
    monkeypatch.setenv(compilation_cache.ENV_DIR, str(tmp_path / "mine"))
    assert compilation_cache.default_dir() == str(tmp_path / "mine")
