"""Sharding on 8 virtual CPU devices: parameters split by the logical-axis rules, greedy decoding and data-parallel
training on (data, model) meshes equal to one device.

The pytest process has already initialised jax with one CPU device, so every check runs in ONE subprocess started
with ``--xla_force_host_platform_device_count=8``; it prints its findings as JSON and the tests below assert on them.
The model is a tiny random one (no torch): 8 heads, ffn 64, vocab 32, so that meshes of 2, 4 and 8 split it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

MESHES = {"dp8": (8, 1), "dp2xtp4": (2, 4), "tp8": (1, 8)}
BATCH = 8  # divisible by every data axis; the decode batch is doubled to 16 by classifier-free guidance
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
    from musicgen_jax.config import DecoderConfig, EncodecConfig, MusicgenMelodyConfig, T5Config

    return MusicgenMelodyConfig(
        text_encoder=T5Config(
            vocab_size=96,
            d_model=16,
            d_kv=4,
            d_ff=24,
            num_layers=2,
            num_heads=4,  # 4 heads do not divide a model axis of 8: replicated there, split on 4
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
        ),
        audio_encoder=EncodecConfig(
            hidden_size=8,
            num_filters=4,
            codebook_size=32,  # = the decoder's vocab, so generate can decode its codes
            upsampling_ratios=(2, 2),
            num_lstm_layers=1,
            target_bandwidths=(160.0,),  # 4 quantizers at 8000 frames/s of 5-bit codes
            sampling_rate=32000,
            use_causal_conv=False,
            use_conv_shortcut=False,
        ),
        decoder=DecoderConfig(
            vocab_size=32,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=8,
            ffn_dim=64,
            num_codebooks=4,
            pad_token_id=32,
            bos_token_id=32,
            dropout=0.1,
        ),
        chroma_length=6,
    )


def tiny_batch(config, batch: int, seed: int = 0) -> dict:
    """A training batch: padded text, chroma, labels with pad/-100 entries (numpy)."""
    rng = np.random.default_rng(seed)
    S, T, K = 5, 9, config.decoder.num_codebooks
    mask = np.ones((batch, S), np.int32)
    mask[1::2, 3:] = 0
    labels = rng.integers(0, config.decoder.vocab_size, (batch, T, K))
    labels[:, :2, 3] = config.decoder.pad_token_id
    labels[0, 4, 1] = -100
    return {
        "input_ids": rng.integers(2, 90, (batch, S)).astype(np.int32),
        "attention_mask": mask,
        "input_features": np.eye(12, dtype=np.float32)[rng.integers(0, 12, (batch, 3))],
        "labels": labels.astype(np.int32),
    }


def _max_diff(a, b) -> float:
    import jax

    diffs = jax.tree_util.tree_map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
    return max(jax.tree_util.tree_leaves(diffs))


def _device_checks() -> None:
    """Runs in the 8-device subprocess; prints ``RESULTS {json}``."""
    import re
    import tempfile

    import jax
    import jax.numpy as jnp

    from musicgen_jax import MusicgenMelodyForConditionalGeneration, sampling, sharding, training
    from musicgen_jax import decoder as decoder_module

    assert jax.device_count() == 8, jax.devices()
    started = time.perf_counter()
    config = tiny_config()
    dec = config.decoder
    params = training.init_params(config, seed=0)
    results: dict = {"meshes": {}}

    # One-device references: greedy CFG decode, two train steps with dropout.
    rng = np.random.default_rng(1)
    prefix = jnp.asarray(rng.standard_normal((2 * BATCH, 7, dec.hidden_size)), jnp.float32)
    bos = np.full((BATCH, dec.num_codebooks, 1), dec.bos_token_id)
    fixed, pattern = sampling.build_delay_pattern(bos, dec.pad_token_id, 24)
    knobs = sampling.SamplingParams(jnp.float32(1.0), jnp.float32(1.0), jnp.float32(3.0))
    static = dict(config=dec, max_length=24, do_sample=False, top_k=0, use_top_p=False, use_cfg=True)
    key = jax.random.PRNGKey(0)
    ref_codes = np.asarray(
        sampling.decode(params["decoder"], prefix, jnp.asarray(fixed), jnp.asarray(pattern), key, knobs, **static)
    )

    optimizer = training.make_optimizer(1e-2, warmup_steps=1, total_steps=10)
    trainable = training.default_trainable(config)
    train_step = training.make_train_step(config, optimizer, trainable=trainable)
    batch = tiny_batch(config, BATCH)

    def fresh_state():
        return training.init_train_state(jax.tree_util.tree_map(jnp.copy, params), optimizer, trainable, seed=3)

    def two_steps(state, batch):
        losses = []
        for _ in range(2):
            state, metrics = train_step(state, batch)
            losses.append(float(metrics["loss"]))
        return state, losses

    ref_state, ref_losses = two_steps(fresh_state(), jax.tree_util.tree_map(jnp.asarray, batch))
    ref_params = jax.device_get(ref_state.params)

    for name, shape in MESHES.items():
        mesh = sharding.make_mesh(*shape)
        found: dict = {}
        sharded = sharding.shard_params(params, mesh)
        d = sharded["decoder"]
        for leaf_name, leaf in (
            ("qkv", d["layers"]["attn"]["qkv"]),
            ("out", d["layers"]["attn"]["out"]),
            ("up", d["layers"]["mlp"]["up"]),
            ("down", d["layers"]["mlp"]["down"]),
            ("lm_heads", d["lm_heads"]),
            ("embed", d["embed"]),
            ("t5_qkv", sharded["text_encoder"]["layers"]["attn"]["qkv"]),
            ("codec_conv", sharded["audio_encoder"]["encoder"]["conv_in"]["v"]),
        ):
            found[leaf_name] = {
                "spec": str(leaf.sharding.spec),
                "shard": list(leaf.addressable_shards[0].data.shape),
                "devices": len(leaf.sharding.device_set),
            }
        codes = sharding.decode(mesh, sharded["decoder"], prefix, fixed, pattern, key, knobs, **static)
        found["codes_equal"] = bool(np.array_equal(np.asarray(codes), ref_codes))
        found["codes_spec"] = str(codes.sharding.spec)

        state = sharding.shard_params(fresh_state(), mesh)
        state, losses = two_steps(state, sharding.shard_batch(batch, mesh))
        found["loss_diff"] = max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True))
        found["param_diff"] = _max_diff(state.params, ref_params)
        found["trained_qkv_spec"] = str(state.params["decoder"]["layers"]["attn"]["qkv"].sharding.spec)
        mu = state.opt_state[1][0].mu  # chain(clip, adamw): adamw's ScaleByAdamState
        found["adam_mu_qkv_spec"] = str(mu["decoder"]["layers"]["attn"]["qkv"].sharding.spec)
        found["seconds"] = time.perf_counter() - started
        results["meshes"][name] = found

    # On the 2x4 mesh: the KV cache inside the compiled loop is split over data (rows) and model (heads).
    mesh = sharding.make_mesh(2, 4)
    dp = sharding.shard_params({"decoder": params["decoder"]}, mesh)["decoder"]
    args = sharding.shard_batch((prefix, jnp.asarray(fixed), jnp.asarray(pattern)), mesh)
    hlo = sampling.decode.lower(dp, *args, key, knobs, **static).compile().as_text()
    capacity = prefix.shape[1] + 24
    # Scanned cache (L, B', N, S, H) and unrolled per-layer caches (B', N, S, H): rows over data, heads over model.
    per_device = f"f32[{dec.num_hidden_layers},{2 * BATCH // 2},{dec.num_attention_heads // 4},{capacity},"
    whole = f"f32[{dec.num_hidden_layers},{2 * BATCH},{dec.num_attention_heads},{capacity},"
    results["seconds_before_cache"] = time.perf_counter() - started
    results["cache_split"] = per_device in hlo and whole not in hlo
    results["cache_shapes"] = sorted(set(re.findall(rf"f32\[{dec.num_hidden_layers},\d+,\d+,{capacity},\d+\]", hlo)))
    unrolled = sharding.shard_params({"decoder": decoder_module.unstack_layers(params["decoder"])}, mesh)["decoder"]
    hlo = sampling.decode.lower(unrolled, *args, key, knobs, **static).compile().as_text()
    per_device = f"f32[{2 * BATCH // 2},{dec.num_attention_heads // 4},{capacity},{dec.head_dim}]"
    whole = f"f32[{2 * BATCH},{dec.num_attention_heads},{capacity},{dec.head_dim}]"
    results["unrolled_cache_split"] = per_device in hlo and whole not in hlo
    results["unrolled_cache_shapes"] = sorted(set(re.findall(rf"f32\[\d+,\d+,{capacity},\d+\]", hlo)))
    results["unrolled_codes_equal"] = bool(
        np.array_equal(
            np.asarray(sharding.decode(mesh, unrolled, prefix, fixed, pattern, key, knobs, **static)), ref_codes
        )
    )

    # The KV cache in phases (sampling.phase_ends; 24 positions in phases of ~8): each phase's buffer and the
    # sealed ones stay split over rows and heads, and the codes are the one-device codes of one buffer.
    phased = dict(static, phase_length=8)
    hlo = sampling.decode.lower(unrolled, *args, key, knobs, **phased).compile().as_text()
    B2, N = 2 * BATCH, dec.num_attention_heads
    lengths = sorted({prefix.shape[1] + 9, 7, 8})  # phase_ends(1, 24, 8) == (9, 16, 24), the prefix in the first
    assert sampling.phase_ends(1, 24, 8) == (9, 16, 24)
    split = [f"f32[{B2 // 2},{N // 4},{c},{dec.head_dim}]" for c in lengths]
    whole = [f"f32[{B2},{N},{c},{dec.head_dim}]" for c in lengths] + [
        f"f32[{B2},{N},{dec.head_dim},{c}]" for c in lengths
    ]
    results["phased_cache_split"] = all(s in hlo for s in split) and not any(w in hlo for w in whole)
    results["phased_cache_shapes"] = sorted(set(re.findall(r"f32\[\d+,\d+,\d+,\d+\]", hlo)))
    results["phased_codes_equal"] = bool(
        np.array_equal(
            np.asarray(sharding.decode(mesh, unrolled, prefix, fixed, pattern, key, knobs, **phased)), ref_codes
        )
    )

    # The front door: generate with sharded parameters gives the one-device codes.
    text = np.random.default_rng(2).integers(2, 90, (BATCH, 5))
    mask = np.ones_like(text)
    mask[::3, 4:] = 0
    kwargs = dict(max_new_tokens=12, guidance_scale=3.0, do_sample=False, return_dict_in_generate=True)
    single = MusicgenMelodyForConditionalGeneration(config, params).generate(text, mask, **kwargs)
    multi = MusicgenMelodyForConditionalGeneration(config, sharding.shard_params(params, mesh)).generate(
        text, mask, **kwargs
    )
    results["generate_codes_equal"] = bool(np.array_equal(single.audio_codes, multi.audio_codes))
    results["generate_audio_diff"] = float(np.max(np.abs(single.sequences - multi.sequences)))
    default_phase_length, sampling.PHASE_LENGTH = sampling.PHASE_LENGTH, 4  # the loop as host-run phases on the mesh
    phased = MusicgenMelodyForConditionalGeneration(config, sharding.shard_params(params, mesh)).generate(
        text, mask, **kwargs
    )
    sampling.PHASE_LENGTH = default_phase_length
    results["phased_generate_codes_equal"] = bool(np.array_equal(single.audio_codes, phased.audio_codes))
    # Long-form windows (issue 18) on the mesh: 100 frames in windows of 40 every 24, each reading its melody.
    melody = np.random.default_rng(3).standard_normal((BATCH, 300)).astype(np.float32)
    long = dict(kwargs, max_new_tokens=None, duration=0.0125, window_duration=0.005, extend_stride=0.003)
    single = MusicgenMelodyForConditionalGeneration(config, params).generate(text, mask, melody=melody, **long)
    multi = MusicgenMelodyForConditionalGeneration(config, sharding.shard_params(params, mesh)).generate(
        text, mask, melody=melody, **long
    )
    results["long_form_windows"] = multi.stats["windows"]
    results["long_form_codes_equal"] = bool(np.array_equal(single.audio_codes, multi.audio_codes))

    results["seconds_before_restore"] = time.perf_counter() - started
    # Orbax: a state saved from one device restores straight into the mesh's shardings.
    state = fresh_state()
    with tempfile.TemporaryDirectory() as tmp:
        manager = training.checkpoint_manager(tmp)
        training.save_checkpoint(manager, state)
        target = training.abstract_state(state, sharding.shardings_for(state, mesh))
        restored, _ = training.restore_checkpoint(manager, target)
        manager.close()
    results["restore_spec"] = str(restored.params["decoder"]["layers"]["mlp"]["up"].sharding.spec)
    results["restore_diff"] = _max_diff(restored, state)

    # The front door: from_pretrained(converted directory, mesh=...) restores straight into the rules' shardings.
    with tempfile.TemporaryDirectory() as tmp:
        MusicgenMelodyForConditionalGeneration(config, params).save_pretrained(tmp)
        loaded = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp, mesh=mesh)
    results["from_pretrained_spec"] = str(loaded.params["decoder"]["layers_1"]["mlp"]["up"].sharding.spec)
    results["from_pretrained_diff"] = _max_diff(
        {**loaded.params, **{p: decoder_module.stack_layers(loaded.params[p]) for p in ("decoder", "text_encoder")}},
        params,
    )
    results["any_mesh"] = _any_mesh_checks(config, params, batch, fresh_state, train_step, ref_losses)
    results["seconds"] = time.perf_counter() - started
    print("RESULTS " + json.dumps(results))


def _mesh_kinds(shape):
    """The meshes users build: jax.make_mesh (Explicit axes by default), jax.sharding.Mesh with Auto axes, ours, and
    jax.make_mesh with their own axis names (mapped through rules)."""
    import jax
    from jax.sharding import AxisType, Mesh

    from musicgen_jax import sharding

    devices = np.array(jax.devices()).reshape(shape)
    return {
        "jax.make_mesh": (jax.make_mesh(shape, ("data", "model")), None),
        "Mesh(Auto)": (Mesh(devices, ("data", "model"), axis_types=(AxisType.Auto,) * 2), None),
        "sharding.make_mesh": (sharding.make_mesh(*shape), None),
        "jax.make_mesh(dp, tp)": (jax.make_mesh(shape, ("dp", "tp")), sharding.rules_for(data="dp", model="tp")),
    }


def _any_mesh_checks(config, params, batch, fresh_state, train_step, ref_losses) -> dict:
    """generate, the forward pass and the train step on every kind of mesh, bare and inside ``jax.set_mesh``."""
    import contextlib
    import tempfile

    import jax
    import jax.numpy as jnp

    from musicgen_jax import MusicgenMelodyForConditionalGeneration, sharding

    text = np.random.default_rng(2).integers(2, 90, (BATCH, 5))
    mask = np.ones_like(text)
    mask[::3, 4:] = 0
    ids = np.random.default_rng(3).integers(0, config.decoder.vocab_size, (BATCH * config.decoder.num_codebooks, 6))
    kwargs = dict(max_new_tokens=8, guidance_scale=3.0, do_sample=False, return_dict_in_generate=True)
    single = MusicgenMelodyForConditionalGeneration(config, params)
    ref_codes = single.generate(text, mask, **kwargs).audio_codes
    ref_logits = np.asarray(single(input_ids=text, attention_mask=mask, decoder_input_ids=ids).logits)
    found = {}
    for shape in MESHES.values():
        for kind, (mesh, rules) in _mesh_kinds(shape).items():
            if shape != (2, 4) and kind != "jax.make_mesh":  # every kind on 2x4; what users build on every shape
                continue
            for ctx in ("bare", "set_mesh") if kind.startswith("jax.make_mesh") else ("bare",):
                scope = jax.set_mesh(mesh) if ctx == "set_mesh" else contextlib.nullcontext()
                with scope:
                    placed = sharding.shard_params(params, mesh, rules or sharding.RULES)
                    model = MusicgenMelodyForConditionalGeneration(config, placed, rules=rules)
                    codes = model.generate(text, mask, **kwargs).audio_codes
                    logits = model(input_ids=text, attention_mask=mask, decoder_input_ids=ids).logits
                    state = sharding.shard_params(fresh_state(), mesh, rules or sharding.RULES)
                    _, metrics = train_step(state, sharding.shard_batch(batch, mesh, rules or sharding.RULES))
                found[f"{kind} {shape[0]}x{shape[1]} {ctx}"] = {
                    "codes_equal": bool(np.array_equal(codes, ref_codes)),
                    "logits_diff": float(np.max(np.abs(np.asarray(logits) - ref_logits))),
                    "loss_diff": abs(float(metrics["loss"]) - ref_losses[0]),
                    "qkv_spec": str(placed["decoder"]["layers"]["attn"]["qkv"].sharding.spec),
                }
    # plain MusicGen (cross-attention) on a user's explicit 2x4 mesh: its text keys/values ride in the split cache
    from musicgen_jax import MusicgenForConditionalGeneration, parameters
    from musicgen_jax.config import MusicgenConfig

    plain = MusicgenConfig(text_encoder=config.text_encoder, audio_encoder=config.audio_encoder, decoder=config.decoder)
    plain_params = jax.tree_util.tree_map(jnp.asarray, parameters.random(plain, seed=0))
    plain_ref = MusicgenForConditionalGeneration(plain, plain_params).generate(text, mask, **kwargs).audio_codes
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    with jax.set_mesh(mesh):
        placed = MusicgenForConditionalGeneration(plain, sharding.shard_params(plain_params, mesh))
        codes = placed.generate(text, mask, **kwargs).audio_codes
    found["plain MusicGen jax.make_mesh 2x4 set_mesh"] = {
        "codes_equal": bool(np.array_equal(codes, plain_ref)),
        "logits_diff": 0.0,
        "loss_diff": 0.0,
        "qkv_spec": str(placed.params["decoder"]["layers"]["cross_attn"]["kv"].sharding.spec),
    }
    # from_pretrained(mesh=jax.make_mesh(...)): a converted checkpoint restored straight onto a user's mesh
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    with tempfile.TemporaryDirectory() as tmp:
        MusicgenMelodyForConditionalGeneration(config, params).save_pretrained(tmp)
        loaded = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp, mesh=mesh, scan_layers=False)
        found["from_pretrained jax.make_mesh 2x4"] = {
            "codes_equal": bool(np.array_equal(loaded.generate(text, mask, **kwargs).audio_codes, ref_codes)),
            "logits_diff": 0.0,
            "loss_diff": 0.0,
            "qkv_spec": str(loaded.params["decoder"]["layers_0"]["attn"]["qkv"].sharding.spec),
        }
        try:
            MusicgenMelodyForConditionalGeneration.from_pretrained(tmp, mesh=jax.make_mesh((2, 4), ("x", "y")))
            found["unmapped_axes_error"] = ""
        except ValueError as e:
            found["unmapped_axes_error"] = str(e)
    return found


@pytest.fixture(scope="module")
def results():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    code = "from tests.test_sharding import _device_checks; _device_checks()"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, f"the 8-device subprocess failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULTS "))
    found = json.loads(line[len("RESULTS ") :])
    print(f"\n[sharding] subprocess: {time.perf_counter() - started:.1f} s wall, checks {found['seconds']:.1f} s")
    return found


# The expected per-device shard shapes of the decoder's big matrices, stored (out, in), on each mesh (L=2, D=32,
# N=8, H=4, F=64, K=4, V=32): heads, ffn and vocab split over "model"; the (V + 1)-row embedding is replicated (33
# is odd).
EXPECTED_SHARDS = {
    "dp8": {"qkv": [2, 3, 8, 4, 32], "up": [2, 64, 32], "down": [2, 32, 64], "lm_heads": [4, 32, 32]},
    "dp2xtp4": {"qkv": [2, 3, 2, 4, 32], "up": [2, 16, 32], "down": [2, 32, 16], "lm_heads": [4, 32, 8]},
    "tp8": {"qkv": [2, 3, 1, 4, 32], "up": [2, 8, 32], "down": [2, 32, 8], "lm_heads": [4, 32, 4]},
}


@pytest.mark.parametrize("mesh", list(MESHES))
def test_tensor_parallel_splits_the_big_matrices(results, mesh):
    found = results["meshes"][mesh]
    for name, shard in EXPECTED_SHARDS[mesh].items():
        assert found[name]["shard"] == shard, (mesh, name, found[name])
        assert found[name]["devices"] == 8
    split = MESHES[mesh][1] > 1  # a model axis of one device splits nothing: specs stay replicated
    assert found["qkv"]["spec"] == ("P(None, None, 'model')" if split else "P()")  # (L, 3, N, H, D)
    assert found["out"]["spec"] == ("P(None, None, 'model')" if split else "P()")  # (L, D, N, H)
    assert found["up"]["spec"] == ("P(None, 'model')" if split else "P()")  # (L, F, D)
    assert found["down"]["spec"] == ("P(None, None, 'model')" if split else "P()")  # (L, D, F)
    assert found["lm_heads"]["spec"] == ("P(None, None, 'model')" if split else "P()")
    assert found["embed"]["spec"] == "P()"  # 33 rows divide no model axis > 1: replicated
    assert found["codec_conv"]["spec"] == "P()"
    # T5 has 4 heads: split over a model axis of 4 (and trivially of 1), replicated over 8.
    t5_heads = {"dp8": 4, "dp2xtp4": 1, "tp8": 4}[mesh]
    assert found["t5_qkv"]["shard"][3] == t5_heads, found["t5_qkv"]
    print(f"[sharding] {mesh}: " + ", ".join(f"{k} {found[k]['shard']}" for k in ("qkv", "up", "down", "lm_heads")))


@pytest.mark.parametrize("mesh", list(MESHES))
def test_greedy_codes_equal_one_device(results, mesh):
    found = results["meshes"][mesh]
    assert found["codes_equal"], f"{mesh}: sharded greedy CFG decode differs from one device"
    assert found["codes_spec"] == ("P('data',)" if MESHES[mesh][0] > 1 else "P()")


@pytest.mark.parametrize("mesh", list(MESHES))
def test_data_parallel_train_step_equals_one_device(results, mesh):
    found = results["meshes"][mesh]
    print(f"[sharding] {mesh}: 2 train steps, loss diff {found['loss_diff']:.2e}, param diff {found['param_diff']:.2e}")
    assert found["loss_diff"] <= 1e-5
    assert found["param_diff"] <= 1e-5
    # The updated parameters and Adam's moments keep the rules' shardings.
    assert found["trained_qkv_spec"] == found["qkv"]["spec"]
    assert found["adam_mu_qkv_spec"] == found["qkv"]["spec"]


def test_kv_cache_stays_split_inside_the_decode_loop(results):
    assert results["cache_split"], f"KV cache buffers in the compiled loop: {results['cache_shapes']}"
    assert results["unrolled_cache_split"], f"per-layer KV caches in the loop: {results['unrolled_cache_shapes']}"
    assert results["unrolled_codes_equal"]
    assert results["phased_cache_split"], f"KV caches in the phased loop: {results['phased_cache_shapes']}"
    assert results["phased_codes_equal"]


def test_generate_with_sharded_params(results):
    assert results["generate_codes_equal"]
    assert results["generate_audio_diff"] <= 1e-5
    assert results["phased_generate_codes_equal"]
    assert results["long_form_windows"] == 4 and results["long_form_codes_equal"]


def test_checkpoint_restores_into_shardings(results):
    assert results["restore_spec"] == "P(None, 'model')"  # (L, F, D)
    assert results["restore_diff"] == 0.0


def test_from_pretrained_with_a_mesh(results):
    assert results["from_pretrained_spec"] == "P('model',)"  # unrolled (default): (F, D) per layer
    assert results["from_pretrained_diff"] == 0.0


def test_generate_forward_and_train_step_on_any_mesh(results):
    found = results["any_mesh"]
    errors = found.pop("unmapped_axes_error")
    for name, row in found.items():
        print(
            f"[sharding] {name}: codes {'equal' if row['codes_equal'] else 'DIFFER'}, logits diff "
            f"{row['logits_diff']:.1e}, loss diff {row['loss_diff']:.1e}, qkv {row['qkv_spec']}"
        )
        assert row["codes_equal"], name
        assert row["logits_diff"] <= 1e-5, name
        assert row["loss_diff"] <= 1e-5, name
    kinds = {name.split(" ")[0] for name in found}
    assert {"jax.make_mesh", "Mesh(Auto)", "sharding.make_mesh", "jax.make_mesh(dp,", "from_pretrained"} <= kinds
    assert {"jax.make_mesh 8x1 set_mesh", "jax.make_mesh 1x8 set_mesh", "jax.make_mesh 2x4 set_mesh"} <= set(found)
    # the user's own axis names, through rules, split the same tensors as ours
    assert found["jax.make_mesh(dp, tp) 2x4 bare"]["qkv_spec"] == "P(None, None, 'tp')"  # (L, 3, N, H, D)
    assert found["jax.make_mesh 2x4 set_mesh"]["qkv_spec"] == "P(None, None, 'model')"
    assert found["from_pretrained jax.make_mesh 2x4"]["qkv_spec"] == "P(None, 'model')"  # unrolled (3, N, H, D)
    assert found["plain MusicGen jax.make_mesh 2x4 set_mesh"]["qkv_spec"] == "P(None, None, 'model')"  # kv heads
    # a mesh whose axes no rule names is refused before loading, naming the axis and the way out
    assert "mesh axis 'x' (2 devices) is used by no sharding rule" in errors and "rules_for" in errors, errors


def test_rules_and_axis_types():
    import jax
    from jax.sharding import AxisType, PartitionSpec

    from musicgen_jax import sharding

    mesh = jax.make_mesh((1, 1), ("data", "model"))
    assert all(t == AxisType.Explicit for t in mesh.axis_types)  # what users get from jax
    twin = sharding.auto(mesh)
    assert all(t == AxisType.Auto for t in twin.axis_types) and twin.axis_names == mesh.axis_names
    assert sharding.auto(twin) is twin
    # a tuple of mesh axes splits a dimension over their product
    rules = sharding.rules_for(data=("replica", "data"), model="model")
    fake = type("FakeMesh", (), {"shape": {"replica": 2, "data": 2, "model": 2}})()
    assert sharding.spec_for(("batch", "heads"), (8, 4), fake, rules) == PartitionSpec(("replica", "data"), "model")
    assert sharding.spec_for(("batch",), (6,), fake, rules) == PartitionSpec()  # 6 rows do not split 4 ways
    sharding.check_rules(jax.make_mesh((1,), ("data",)))  # a rule's axis may be absent: replicated there


def test_logical_axes_table():
    from musicgen_jax import sharding

    assert sharding.logical_axes("decoder/layers/attn/qkv", 5) == ("layers", None, "heads", "head_dim", "embed")
    assert sharding.logical_axes("text_encoder/layers/attn/qkv", 5) == ("layers", "embed", None, "heads", "head_dim")
    assert sharding.logical_axes("1/0/mu/decoder/lm_heads", 3) == ("codebooks", "embed", "vocab")
    assert sharding.logical_axes("text_encoder/layers/mlp/gate", 3) == ("layers", "embed", "ffn")
    assert sharding.logical_axes("audio_encoder/quantizer/codebooks", 3) == (None, None, None)
    assert sharding.logical_axes("rng", 1) == (None,)  # not a parameter: replicated
    with pytest.raises(ValueError, match="decoder/new_thing"):
        sharding.logical_axes("decoder/new_thing", 2)
    with pytest.raises(ValueError, match="rank 4"):
        sharding.logical_axes("decoder/layers/mlp/up", 4)
