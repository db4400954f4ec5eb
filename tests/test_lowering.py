"""The programs users run on TPU and GPU, lowered for ``tpu`` and ``cuda`` with ``jax.export`` on this CPU machine.

A platform-specific break (an op one backend cannot lower) shows here, and every matmul and convolution of the
lowered programs is checked against the precision policy (``musicgen_jax/layers.py``): float32 operands ask for
HIGHEST (JAX's default is one bfloat16 pass on TPU and TF32 on GPU, which would make "float32" silently inexact),
bfloat16 operands run one bf16 pass and accumulate in float32, and an explicit ``matmul_precision`` is what it says.

Programs: the whole decode loop (prefill, scanned steps, CFG, top-k/top-p sampling), the forward pass, T5, the
EnCodec decode, and the optax train step; in both decoder layouts. The model is tiny (shapes do not change what is
lowered), and only abstract shapes are used: nothing is computed.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from musicgen_jax import core, encodec, parameters, sampling, training
from musicgen_jax import decoder as decoder_module
from tests.test_sharding import tiny_batch, tiny_config

PLATFORMS = ("tpu", "cuda")

# One matmul or convolution per line in the printed StableHLO; its operand and result types end the line.
_OP = re.compile(r"stablehlo\.(dot_general|convolution)\b(.*)")
_TYPES = re.compile(r":\s*\((tensor<[^>]*>),\s*(tensor<[^>]*>)\)\s*->\s*(tensor<[^>]*>)")
_PRECISION = re.compile(r"precision(?:_config)? = \[([^\]]*)\]")


def _element(tensor_type: str) -> str:
    return tensor_type[len("tensor<") : -1].split("x")[-1]


def contractions(mlir: str) -> list[dict]:
    """Every dot_general / convolution of a printed StableHLO module: kind, operand and result element types and
    the precision of each operand ("DEFAULT" when the attribute is absent)."""
    ops = []
    for match in _OP.finditer(mlir):
        kind, rest = match.groups()
        types = _TYPES.search(rest)
        assert types, f"cannot read the types of: {match.group(0)[:300]}"
        precision = _PRECISION.search(rest)
        names = ["DEFAULT", "DEFAULT"]
        if precision:
            names = [p.strip().replace("#stablehlo<precision ", "").rstrip(">") for p in precision.group(1).split(",")]
        lhs, rhs, out = (_element(t) for t in types.groups())
        ops.append({"kind": kind, "lhs": lhs, "rhs": rhs, "out": out, "precision": names, "line": match.group(0)})
    return ops


def lowered(fn, *args, platform: str, **static) -> str:
    """``fn`` (jitted, or a plain function) exported for ``platform``: the StableHLO text."""
    jitted = fn if hasattr(fn, "trace") else jax.jit(fn)  # a plain function, or a wrapper around a jitted one
    if static:
        jitted = jax.jit(lambda *a: fn(*a, **static))
    return export.export(jitted, platforms=[platform])(*args).mlir_module()


def abstract(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, dtype if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype), tree
    )


def _params(layout: str, dtype=jnp.float32):
    params = abstract(parameters.abstract(tiny_config()))
    if layout == "unrolled":
        params = {**params, "decoder": jax.eval_shape(decoder_module.unstack_layers, dict(params["decoder"]))}
    return _cast(params, dtype)


def _decode_args(config, params, batch: int = 2, max_length: int = 12):
    dec = config.decoder
    prefix = jax.ShapeDtypeStruct((2 * batch, 7, dec.hidden_size), params["decoder"]["embed"].dtype)
    bos = np.full((batch, dec.num_codebooks, 1), dec.bos_token_id)
    fixed, pattern = sampling.build_delay_pattern(bos, dec.pad_token_id, max_length)
    knobs = sampling.SamplingParams(jnp.float32(0.9), jnp.float32(0.8), jnp.float32(3.0))
    static = dict(config=dec, max_length=max_length, do_sample=True, top_k=5, use_top_p=True, use_cfg=True)
    return (params["decoder"], prefix, jnp.asarray(fixed), jnp.asarray(pattern), jax.random.PRNGKey(0), knobs), static


def programs(config, params) -> dict:
    """name -> a function of no arguments returning (callable, args, static) to export."""
    dec = config.decoder
    B, W, M, T = 2, 5, 3, 6
    ids = jax.ShapeDtypeStruct((B, W), jnp.int32)
    mask = jax.ShapeDtypeStruct((B, W), jnp.int32)
    text = jax.ShapeDtypeStruct((B, W, config.text_encoder.d_model), params["text_encoder"]["embed"].dtype)
    chroma = jax.ShapeDtypeStruct((B, M, config.num_chroma), jnp.float32)
    codes = jax.ShapeDtypeStruct((B, dec.num_codebooks, T), jnp.int32)
    decode_args, decode_static = _decode_args(config, params)

    def forward(p, i, t, m, c):
        return core.forward(p, config, i, text_BWE=t, text_mask_BW=m, chroma_BMC=c)[0]

    return {
        "decode loop": (lambda *a: sampling.decode(*a, **decode_static), decode_args),
        "forward": (forward, (params, codes, text, mask, chroma)),
        "encode_text": (lambda p, i, m: core.encode_text(p, config, i, m), (params, ids, mask)),
        "encodec decode": (
            lambda p, c: encodec.decode_codes(p, c, None, config.audio_encoder),
            (params["audio_encoder"], jax.ShapeDtypeStruct((B, dec.num_codebooks, 4), jnp.int32)),
        ),
    }


def _check_policy(ops, name, weights_dtype: str, matmul_precision: str | None = None):
    """float32 products at ``matmul_precision`` (None: HIGHEST); bf16 products accumulated in float32 at DEFAULT (or
    ``matmul_precision``). The codec (EnCodec, in programs named "encodec ...") always asks for HIGHEST: its outputs
    feed argmaxes (codes), where a near tie must resolve as in PyTorch."""
    assert ops, f"{name}: no matmul found in the lowered program"
    codec = name.startswith("encodec")
    for op in ops:
        where = f"{name}: {op['line'][:240]}"
        if op["lhs"] == "f32" and op["rhs"] == "f32":
            want = "HIGHEST" if codec else (matmul_precision or "highest").upper()
            if weights_dtype == "bf16" and op["precision"] == ["DEFAULT", "DEFAULT"]:
                # a bf16 train step's gradient: the f32 cotangent x bf16 operand product (below), which the cuda
                # lowering converts to f32 x f32 at that product's DEFAULT precision
                continue
        else:
            assert weights_dtype == "bf16", where
            # bf16 x bf16; a gradient's transpose multiplies a float32 cotangent by a bf16 operand (at DEFAULT)
            assert {op["lhs"], op["rhs"]} <= {"bf16", "f32"}, where
            assert op["out"] == "f32", f"bf16 products must accumulate in float32: {where}"
            want = "HIGHEST" if codec else (matmul_precision or "default").upper()
        assert op["precision"] == [want, want], where


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("layout", ["scanned", "unrolled"])
def test_float32_programs_lower_with_highest_precision(platform, layout):
    config = tiny_config()
    params = _params(layout)
    counts = {}
    for name, (fn, args) in programs(config, params).items():
        ops = contractions(lowered(fn, *args, platform=platform))
        _check_policy(ops, name, "f32")
        counts[name] = len(ops)
    print(f"[lowering] {platform} {layout} float32: contractions per program {counts}, all HIGHEST")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_bfloat16_programs_use_bf16_products_with_float32_accumulation(platform):
    config = tiny_config()
    params = _params("unrolled", jnp.bfloat16)
    for name, (fn, args) in programs(config, params).items():
        ops = contractions(lowered(fn, *args, platform=platform))
        _check_policy(ops, name, "bf16")
        if name in ("decode loop", "forward", "encode_text"):
            assert any(op["lhs"] == "bf16" for op in ops), f"{name}: no bf16 matmul in a bf16 model"


@pytest.mark.parametrize("matmul_precision", ["default", "high"])
def test_explicit_matmul_precision_is_what_the_program_asks_for(matmul_precision):
    config = tiny_config().with_matmul_precision(matmul_precision)
    params = _params("unrolled")
    for name, (fn, args) in programs(config, params).items():
        ops = contractions(lowered(fn, *args, platform="tpu"))
        _check_policy(ops, name, "f32", matmul_precision)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("compute_dtype", [None, jnp.bfloat16])
def test_train_step_lowers(platform, compute_dtype):
    config = tiny_config()
    params = parameters.random(config, 0)
    optimizer = training.make_optimizer(1e-3, warmup_steps=1, total_steps=10)
    trainable = training.default_trainable(config)
    state = abstract(training.init_train_state(params, optimizer, trainable, seed=0))
    batch = abstract(jax.tree_util.tree_map(jnp.asarray, tiny_batch(config, 2)))
    step = training.make_train_step(config, optimizer, trainable=trainable, compute_dtype=compute_dtype, donate=False)
    ops = contractions(lowered(step, state, batch, platform=platform))
    _check_policy(ops, "train step", "f32" if compute_dtype is None else "bf16")
    print(f"[lowering] {platform} train step (compute {compute_dtype}): {len(ops)} contractions, policy holds")


def test_precision_is_a_runtime_choice_not_a_config_field():
    from musicgen_jax.config import ConfigError, MusicgenMelodyConfig

    config = tiny_config().with_matmul_precision("default")
    assert config.decoder.matmul_precision == config.text_encoder.matmul_precision == "default"
    data = config.to_hf()
    assert "matmul_precision" not in data["decoder"] and "matmul_precision" not in data["text_encoder"]
    assert MusicgenMelodyConfig.from_hf(data) == tiny_config()
    with pytest.raises(ConfigError, match="matmul_precision"):
        MusicgenMelodyConfig.from_hf({**data, "decoder": {**data["decoder"], "matmul_precision": "high"}})
    with pytest.raises(ConfigError, match="matmul_precision must be"):
        tiny_config().with_matmul_precision("fast")
    with pytest.raises(ConfigError, match="matmul_precision must be"):
        dataclasses.replace(tiny_config().decoder, matmul_precision="tf32").validate()


def test_decoder_layout_by_backend(tmp_path):
    from musicgen_jax import MusicgenMelodyForConditionalGeneration
    from musicgen_jax.modeling import default_scan_layers

    # unrolled on CPU (fastest on XLA:CPU), scanned on TPU and GPU (flat compile time); overridable per load
    assert default_scan_layers("cpu") is False
    assert default_scan_layers("tpu") is True and default_scan_layers("gpu") is True
    config = tiny_config()
    MusicgenMelodyForConditionalGeneration(config, parameters.random(config, 0)).save_pretrained(tmp_path / "m")
    default = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "m")
    assert decoder_module.is_scanned(default.params["decoder"]) == default_scan_layers()
    scanned = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "m", scan_layers=True)
    unrolled = MusicgenMelodyForConditionalGeneration.from_pretrained(tmp_path / "m", scan_layers=False)
    assert decoder_module.is_scanned(scanned.params["decoder"]) and not decoder_module.is_scanned(
        unrolled.params["decoder"]
    )
    text = np.array([[5, 6, 7, 8]])
    kwargs = dict(max_new_tokens=10, do_sample=False, guidance_scale=3.0, return_dict_in_generate=True)
    a, b = scanned.generate(text, **kwargs), unrolled.generate(text, **kwargs)
    assert np.array_equal(a.audio_codes, b.audio_codes)
    ids = np.zeros((config.decoder.num_codebooks, 3), np.int64)
    diff = np.max(
        np.abs(
            np.asarray(scanned(input_ids=text, decoder_input_ids=ids).logits)
            - np.asarray(unrolled(input_ids=text, decoder_input_ids=ids).logits)
        )
    )
    print(f"\n[lowering] scanned vs unrolled: greedy codes identical, logits max diff {diff:.1e}")
    assert diff <= 1e-6


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_plain_musicgen_programs_lower_with_the_policy(platform, dtype):
    """Plain MusicGen (cross-attention to the text): its decode loop (the text keys/values computed at the prefill,
    read from the cache by every step) and forward pass, lowered for the accelerators."""
    from musicgen_jax.config import MusicgenConfig
    from musicgen_jax.decoder import Conditions

    melody = tiny_config()
    config = MusicgenConfig(
        text_encoder=melody.text_encoder, audio_encoder=melody.audio_encoder, decoder=melody.decoder
    )
    params = _cast(abstract(parameters.abstract(config)), dtype)
    params = {**params, "decoder": jax.eval_shape(decoder_module.unstack_layers, dict(params["decoder"]))}
    (dec_params, _, fixed, pattern, key, knobs), static = _decode_args(config, params)
    D, B, W = config.decoder.hidden_size, 2, 5
    conditions = Conditions(
        cross_BWD=jax.ShapeDtypeStruct((2 * B, W, D), dtype), cross_mask_BW=jax.ShapeDtypeStruct((2 * B, W), jnp.int32)
    )
    text = jax.ShapeDtypeStruct((B, W, config.text_encoder.d_model), dtype)
    mask = jax.ShapeDtypeStruct((B, W), jnp.int32)
    codes = jax.ShapeDtypeStruct((B, config.decoder.num_codebooks, 6), jnp.int32)
    weights = "f32" if dtype == jnp.float32 else "bf16"
    for name, fn, args in (
        (
            "plain decode loop",
            lambda *a: sampling.decode(*a, **static),
            (dec_params, conditions, fixed, pattern, key, knobs),
        ),
        (
            "plain forward",
            lambda p, i, t, m: core.forward(p, config, i, text_BWE=t, text_mask_BW=m)[0],
            (params, codes, text, mask),
        ),
    ):
        ops = contractions(lowered(fn, *args, platform=platform))
        _check_policy(ops, name, weights)
    print(f"[lowering] {platform} plain MusicGen {weights}: decode loop and forward, policy holds")
