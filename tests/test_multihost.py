"""Two real processes on this machine, joined by ``jax.distributed`` (gloo collectives, 2 virtual CPU devices each),
form one 4-device mesh: a converted checkpoint loaded with ``mesh=`` on both, then greedy CFG generate and a
data-parallel train step (each process feeding its half of the batch), compared with one device in this process.

Both kinds of mesh users build: ``jax.make_mesh`` (Explicit axes) and ``sharding.make_mesh`` (Auto axes).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.test_sharding import tiny_batch, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 4  # generate rows: split over the data axis of 2 (8 rows under CFG)
TRAIN_BATCH = 8  # 4 per process


def _text():
    text = np.random.default_rng(2).integers(2, 90, (BATCH, 5))
    mask = np.ones_like(text)
    mask[1::2, 4:] = 0
    return text, mask


def _worker(process_id: int, port: int, checkpoint: str, kind: str) -> None:
    """One host of the job: prints ``RESULT {json}``."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    import jax.numpy as jnp

    from musicgen_jax import MusicgenMelodyForConditionalGeneration, sharding, training

    assert (jax.device_count(), jax.local_device_count(), jax.process_count()) == (4, 2, 2)
    mesh = jax.make_mesh((2, 2), ("data", "model")) if kind == "jax.make_mesh" else sharding.make_mesh(2, 2)
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(checkpoint, mesh=mesh)
    text, mask = _text()
    out = model.generate(
        text, mask, max_new_tokens=10, guidance_scale=3.0, do_sample=False, return_dict_in_generate=True
    )

    config = model.config
    optimizer = training.make_optimizer(1e-2, warmup_steps=1, total_steps=10)
    trainable = training.default_trainable(config)
    step = training.make_train_step(config, optimizer, trainable=trainable)
    params = training.init_params(config, seed=0)
    state = sharding.shard_params(training.init_train_state(params, optimizer, trainable, seed=3), mesh)
    batch = tiny_batch(config, TRAIN_BATCH)
    half = TRAIN_BATCH // 2
    local = {k: v[process_id * half : (process_id + 1) * half] for k, v in batch.items()}
    _, metrics = step(state, sharding.shard_host_batch(local, mesh))
    del jnp
    result = {
        "codes": np.asarray(out.audio_codes).tolist(),
        "audio_max": float(np.max(np.abs(out.sequences))),
        "loss": float(metrics["loss"]),
        "qkv_spec": str(model.params["decoder"]["layers_0"]["attn"]["qkv"].sharding.spec),
        "process": jax.process_index(),
    }
    print("RESULT " + json.dumps(result), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    import jax.numpy as jnp

    from musicgen_jax import MusicgenMelodyForConditionalGeneration, training

    config = tiny_config()
    params = training.init_params(config, seed=0)
    model = MusicgenMelodyForConditionalGeneration(config, params)
    path = tmp_path_factory.mktemp("multihost") / "model"
    model.save_pretrained(path)
    text, mask = _text()
    out = model.generate(
        text, mask, max_new_tokens=10, guidance_scale=3.0, do_sample=False, return_dict_in_generate=True
    )
    optimizer = training.make_optimizer(1e-2, warmup_steps=1, total_steps=10)
    trainable = training.default_trainable(config)
    step = training.make_train_step(config, optimizer, trainable=trainable)
    state = training.init_train_state(training.init_params(config, seed=0), optimizer, trainable, seed=3)
    _, metrics = step(state, {k: jnp.asarray(v) for k, v in tiny_batch(config, TRAIN_BATCH).items()})
    return str(path), out.audio_codes, float(metrics["loss"])


@pytest.mark.parametrize("kind", ["jax.make_mesh", "sharding.make_mesh"])
def test_two_processes_one_mesh_equal_one_device(reference, kind):
    checkpoint, ref_codes, ref_loss = reference
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    code = "import sys; from tests.test_multihost import _worker; _worker(int(sys.argv[1]), {port}, {ckpt!r}, {kind!r})"
    code = code.format(port=port, ckpt=checkpoint, kind=kind)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"process failed:\n{out[-2000:]}\n{err[-4000:]}"
            line = next(line for line in out.splitlines() if line.startswith("RESULT "))
            results.append(json.loads(line[len("RESULT ") :]))
    finally:
        for proc in procs:
            proc.kill()
    assert sorted(r["process"] for r in results) == [0, 1]
    for r in results:
        assert np.array_equal(np.asarray(r["codes"]), ref_codes), f"process {r['process']}: codes differ"
        assert abs(r["loss"] - ref_loss) <= 1e-5, (r["loss"], ref_loss)
        assert r["qkv_spec"] == "P(None, 'model')"  # (3, N, H, D): heads split over the model axis (within a host)
    print(
        f"\n[multihost] {kind}, 2 processes x 2 devices: greedy codes identical to one device on both; train loss "
        f"diff {max(abs(r['loss'] - ref_loss) for r in results):.1e}"
    )
