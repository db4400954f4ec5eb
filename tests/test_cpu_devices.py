"""One JAX CPU device per core (musicgen_jax.cpu_devices, opt-in): what ``import musicgen_jax`` asks JAX for, when
it leaves the user's choice alone, and that the tensor-parallel model it then loads (``mesh="auto"``) gives one
device's numbers. Each case is a fresh interpreter: the device count is fixed when JAX starts its backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from musicgen_jax import cpu_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, **env) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cpu_devices.ENV, "JAX_NUM_CPU_DEVICES")}
    base.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **env)
    done = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


COUNT = """
import json, jax
import musicgen_jax
from musicgen_jax import sharding
mesh = sharding.cpu_mesh()
print(json.dumps({"devices": len(jax.devices()), "chosen": musicgen_jax.cpu_devices.chosen(),
                  "mesh": None if mesh is None else dict(mesh.shape)}))
"""


@pytest.mark.parametrize("cores, want", [(1, 1), (2, 2), (3, 2), (6, 4), (64, 8)])
def test_default_count_is_a_power_of_two_up_to_eight(cores, want):
    assert cpu_devices.default_count(cores) == want


def test_import_asks_for_the_requested_devices_and_auto_mesh_spans_them():
    got = _run(COUNT, **{cpu_devices.ENV: "2"})
    assert got == {"devices": 2, "chosen": 2, "mesh": {"data": 1, "model": 2}}
    want = cpu_devices.default_count()
    got = _run(COUNT, **{cpu_devices.ENV: "auto"})
    assert got["devices"] == want and got["chosen"] == (want if want > 1 else None)


@pytest.mark.parametrize(
    "env, prelude",
    [
        ({}, ""),  # off unless asked for
        ({cpu_devices.ENV: "1"}, ""),
        ({cpu_devices.ENV: "off"}, ""),
        ({cpu_devices.ENV: "4", "XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, ""),  # the user's flag
        ({cpu_devices.ENV: "4"}, "import jax; jax.config.update('jax_num_cpu_devices', 3)\n"),  # the user's config
        ({cpu_devices.ENV: "4"}, "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready()\n"),  # too late
    ],
)
def test_the_users_choice_or_a_running_backend_is_left_alone(env, prelude):
    got = _run(prelude + COUNT, **env)
    assert got["chosen"] is None and got["mesh"] is None
    want = 3 if "3" in env.get("XLA_FLAGS", "") or "3)" in prelude else 1
    assert got["devices"] == want


PARITY = """
import json, sys
import jax, numpy as np
from musicgen_jax import MusicgenMelodyForConditionalGeneration as M
from musicgen_jax.demo import write_random_checkpoint
path = write_random_checkpoint(sys.argv[1], seed=3)
auto = M.from_pretrained(path)
one = M.from_pretrained(path, mesh=None)
leaf = auto.params["decoder"]["layers_0"]["mlp"]["up"]
ids = np.array([[5, 9, 11, 2]]); mask = np.ones_like(ids)
kw = dict(do_sample=False, guidance_scale=3.0, max_new_tokens=12, return_dict_in_generate=True)
a = auto.generate(input_ids=ids, attention_mask=mask, **kw)
b = one.generate(input_ids=ids, attention_mask=mask, **kw)
dec = np.random.default_rng(0).integers(0, one.config.decoder.vocab_size, (one.config.decoder.num_codebooks, 6))
la = np.asarray(auto(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits)
lb = np.asarray(one(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits)
print(json.dumps({"devices": len(leaf.sharding.device_set), "one": len(one.params["decoder"]["layers_0"]["mlp"]["up"]
                  .sharding.device_set), "codes_equal": bool((np.asarray(a.audio_codes) == np.asarray(b.audio_codes))
                  .all()), "logits_max_diff": float(np.abs(la - lb).max()), "logits_max": float(np.abs(lb).max()),
                  "audio_max_diff": float(np.abs(np.asarray(a.sequences) - np.asarray(b.sequences)).max())}))
"""


def test_the_default_tensor_parallel_model_gives_one_devices_numbers(tmp_path):
    got = _run(PARITY.replace("sys.argv[1]", repr(str(tmp_path / "ckpt"))), **{cpu_devices.ENV: "2"})
    print(f"[parity] 2 CPU devices (mesh='auto') vs one: {got}")
    assert got["devices"] == 2 and got["one"] == 1
    assert got["codes_equal"]
    assert got["logits_max_diff"] <= 1e-5 * max(got["logits_max"], 1.0)
    assert got["audio_max_diff"] <= 1e-5
