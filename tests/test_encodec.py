"""EnCodec parity with HF ``EncodecModel`` (float32) on tiny codecs, the converter's strictness, and the front door.

Each config covers several HF code paths at once (see CONFIGS); every config is run at batch 2 on an input whose
length is not a multiple of the hop and on one shorter than the first conv's padding (HF's reflect-padding quirk).
FULL_LAYOUTS are the 32 kHz and 24 kHz codecs' real layouts (fewer filters), run on 0.4 s of audio.
"""

import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest
import torch

from convert.encodec import encodec_rules
from convert.reader import CheckpointError, read_checkpoint
from convert.rules import convert
from musicgen_jax.config import ConfigError, EncodecConfig, MusicgenMelodyConfig
from musicgen_jax.encodec import Encodec, EncodecModel, abstract_params, decode_codes, encode_audio
from tests.helpers import report, save_hf_melody

# sampling_rate 1200 (hop 6) / 800 (hop 4) give a frame rate of 200 Hz: 16 codewords are 800 bit/s per codebook, so
# target_bandwidths [1.6, 3.2] mean 2 or 4 codebooks.
TINY = dict(hidden_size=8, num_filters=4, codebook_size=16, target_bandwidths=[1.6, 3.2])
CONFIGS = {
    # causal + reflect, conv shortcut, 2 LSTM layers, stereo, normalize, trim_right_ratio 0.5, 2 residual layers
    # (dilation 2), odd kernel sizes; saved by transformers (parametrizations.weight.original0/1).
    "causal-reflect-stereo-norm": dict(
        TINY,
        upsampling_ratios=[2, 3],
        sampling_rate=1200,
        use_causal_conv=True,
        pad_mode="reflect",
        use_conv_shortcut=True,
        num_lstm_layers=2,
        audio_channels=2,
        normalize=True,
        trim_right_ratio=0.5,
        num_residual_layers=2,
        kernel_size=5,
        last_kernel_size=3,
    ),
    # non-causal + constant, identity shortcut, 1 LSTM layer, mono, odd stride 3 (asymmetric padding), compress 4;
    # re-saved with the old weight_g / weight_v spelling.
    "noncausal-constant-mono-old-wn": dict(
        TINY,
        upsampling_ratios=[3, 2],
        sampling_rate=1200,
        use_causal_conv=False,
        pad_mode="constant",
        use_conv_shortcut=False,
        num_lstm_layers=1,
        compress=4,
        residual_kernel_size=5,
    ),
    # time_group_norm, causal + constant, dilation growth 3 over 2 residual layers.
    "groupnorm-causal-constant": dict(
        TINY,
        upsampling_ratios=[2, 2],
        sampling_rate=800,
        use_causal_conv=True,
        pad_mode="constant",
        use_conv_shortcut=True,
        num_lstm_layers=1,
        norm_type="time_group_norm",
        num_residual_layers=2,
        dilation_growth_rate=3,
    ),
}
# The codec inside a MusicGen Melody checkpoint (keys under ``audio_encoder.``): non-causal + reflect.
MELODY_AUDIO = dict(sampling_rate=800, target_bandwidths=[3.2])

LENGTHS = (47, 2)  # not a multiple of the hop; shorter than the first conv's padding


def _perturb(hf, seed):
    """Random weights everywhere, and codebooks that the codes actually spread over.

    HF initialises the codebooks to zeros (every code would be 0), and Gaussian codewords far from the encoder's
    outputs make one codeword win everywhere. Like EnCodec's k-means init, each codebook is drawn from the frames
    (then the residuals) it will quantize, here of random audio.
    """
    torch.manual_seed(seed)
    cfg = hf.config
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
        frames = max(32, -(-cfg.codebook_size // 4))  # per item: 4 items give at least one frame per codeword
        audio = torch.randn(4, cfg.audio_channels, frames * cfg.hop_length)
        residual = hf.encoder(audio).permute(0, 2, 1).reshape(-1, cfg.hidden_size)
        for layer in hf.quantizer.layers:
            book = layer.codebook
            pick = torch.randperm(residual.shape[0])[: cfg.codebook_size]
            book.embed.copy_(residual[pick] + 0.01 * torch.randn_like(residual[pick]))
            residual = residual - book.decode(book.encode(residual))
    return hf


def _to_old_weight_norm_spelling(src, dst):
    """Copies a saved codec, renaming weight-norm tensors to torch.nn.utils.weight_norm's weight_g / weight_v."""
    from safetensors.numpy import load_file, save_file

    os.makedirs(dst)
    shutil.copy(os.path.join(src, "config.json"), dst)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    renamed = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in tensors.items()
    }
    assert sum(k.endswith("weight_g") for k in renamed) > 10
    save_file(renamed, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})


def _build(tmp_path_factory, name, kwargs, seed, old_spelling=False):
    """A perturbed random HF ``EncodecModel`` saved by transformers, and ours loaded from its files."""
    from transformers import EncodecConfig as HFConfig
    from transformers import EncodecModel as HFModel

    torch.manual_seed(seed)
    hf = _perturb(HFModel(HFConfig(**kwargs)).eval(), seed)
    path = os.fspath(tmp_path_factory.mktemp(name))
    hf.save_pretrained(path)
    if old_spelling:
        _to_old_weight_norm_spelling(path, path + "-old")
        path = path + "-old"
    return hf, EncodecModel.from_pretrained(path)


@pytest.fixture(scope="module")
def codecs(tmp_path_factory):
    """name -> (HF EncodecModel, our EncodecModel); built once per module."""
    out = {}
    for seed, (name, kwargs) in enumerate(CONFIGS.items()):
        out[name] = _build(tmp_path_factory, name, kwargs, seed, old_spelling="old-wn" in name)

    # The codec of a MusicGen Melody checkpoint: HF keys under `audio_encoder.`, read through our prefixed table.
    path, melody = save_hf_melody(tmp_path_factory.mktemp("melody"), audio=MELODY_AUDIO)
    _perturb(melody.audio_encoder, 7)
    melody.save_pretrained(path)  # again, with the random codebooks
    config = MusicgenMelodyConfig.from_pretrained(path).audio_encoder
    tensors = read_checkpoint(path)
    owned = {k: tensors[k] for k in tensors if k.startswith("audio_encoder.")}
    rules, sizes = encodec_rules(config)
    params = convert(owned, rules, sizes, {"audio_encoder": abstract_params(config)}, path)
    params = jax.tree_util.tree_map(np.asarray, params["audio_encoder"])
    out["melody-noncausal-reflect"] = (melody.audio_encoder.eval(), EncodecModel(config, params))
    return out


NAMES = [*CONFIGS, "melody-noncausal-reflect"]


def _hf_encode(hf, audio, bandwidth):
    with torch.no_grad():
        out = hf.encode(torch.from_numpy(audio), bandwidth=bandwidth, return_dict=True)
    assert out.audio_codes.shape[0] == 1  # one chunk
    scale = out.audio_scales[0]
    return out.audio_codes[0].numpy(), None if scale is None else scale.numpy()


def _hf_decode(hf, codes, scale):
    with torch.no_grad():
        scales = [None if scale is None else torch.from_numpy(scale)]
        return hf.decode(torch.from_numpy(codes)[None], scales, return_dict=True).audio_values.numpy()


@functools.partial(jax.jit, static_argnames="config")
def _embeddings(params, audio_BCT, config):
    return Encodec(config).apply({"params": params}, audio_BCT.transpose(0, 2, 1), method=lambda m, x: m.encoder(x))


def _assert_parity(name, hf, ours, audio, bandwidth, check_embeddings):
    """Codes and scales equal to HF's, HF's codes decoded within 1e-4 of the reference's scale; prints errors."""
    cfg = ours.config
    length = audio.shape[-1]
    ref_codes, ref_scale = _hf_encode(hf, audio, bandwidth)
    codes, scale = ours.encode(audio, bandwidth=bandwidth, return_scales=True)
    codes = np.asarray(codes)
    assert codes.dtype == np.int32 and codes.shape == ref_codes.shape
    assert codes.shape == (audio.shape[0], ours.num_quantizers(bandwidth), -(-length // cfg.hop_length))
    agree = float(np.mean(codes == ref_codes))
    print(
        f"[parity] codes {name} T={length} bandwidth={bandwidth}: shape {codes.shape}, agreement {agree:.4f}, "
        f"{len(np.unique(ref_codes))} distinct codes"
    )
    assert agree == 1.0
    if cfg.normalize:
        assert report(f"scale {name} T={length}", scale, ref_scale) <= 1e-6 * np.abs(ref_scale).max()
    else:
        assert scale is None and ref_scale is None

    if check_embeddings:  # the continuous encoder output, before quantization
        normalized = audio if ref_scale is None else audio / ref_scale[:, :, None]
        with torch.no_grad():
            ref_emb = hf.encoder(torch.from_numpy(normalized)).numpy().transpose(0, 2, 1)
        emb = _embeddings(ours.params, normalized, cfg)
        assert report(f"embeddings {name} T={length}", emb, ref_emb) <= 1e-4 * np.abs(ref_emb).max()

    ref_audio = _hf_decode(hf, ref_codes, ref_scale)
    got = np.asarray(ours.decode(ref_codes, ref_scale))
    assert got.dtype == np.float32
    assert got.shape == (audio.shape[0], cfg.audio_channels, codes.shape[-1] * cfg.hop_length)
    err = report(f"decoded audio {name} T={length} bandwidth={bandwidth}", got, ref_audio)
    assert err <= 1e-4 * np.abs(ref_audio).max()


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", NAMES)
def test_encode_decode_match_hf(codecs, name, length):
    hf, ours = codecs[name]
    audio = np.random.default_rng(length).standard_normal((2, ours.config.audio_channels, length)).astype(np.float32)
    # The long input at the largest bandwidth (all codebooks), the short one at HF's default (the first bandwidth).
    bandwidth = ours.config.target_bandwidths[-1] if length == LENGTHS[0] else None
    _assert_parity(name, hf, ours, audio, bandwidth, check_embeddings=length == LENGTHS[0])


# The released codecs' layouts (strides, hop, hidden size, codebook size, LSTM depth, padding, shortcut) with 16
# filters instead of their 64 / 32 to keep CI fast: name -> (HF config, samples, {bandwidth: codebooks}).
RELEASED = dict(
    hidden_size=128, num_filters=16, compress=2, num_lstm_layers=2, pad_mode="reflect", norm_type="weight_norm"
)
FULL_LAYOUTS = {
    # MusicGen's 32 kHz codec: hop 640, 4 codebooks of 2048 at 2.2 kbps, non-causal, identity shortcut.
    "32khz-layout": (
        dict(
            RELEASED,
            upsampling_ratios=[8, 5, 4, 4],
            codebook_size=2048,
            use_causal_conv=False,
            use_conv_shortcut=False,
            target_bandwidths=[2.2],
            sampling_rate=32000,
        ),
        12923,  # 0.40 s: 20 hops + 123 samples
        {2.2: 4},
    ),
    # facebook/encodec_24khz: hop 320, causal, conv shortcut; 2 / 4 / 8 codebooks of 1024.
    "24khz-causal-layout": (
        dict(
            RELEASED,
            upsampling_ratios=[8, 5, 4, 2],
            codebook_size=1024,
            use_causal_conv=True,
            use_conv_shortcut=True,
            target_bandwidths=[1.5, 3.0, 6.0],
            sampling_rate=24000,
        ),
        9677,  # 0.40 s: 30 hops + 77 samples
        {1.5: 2, 6.0: 8},
    ),
}


@pytest.fixture(scope="module")
def full_layout_codecs(tmp_path_factory):
    return {
        name: _build(tmp_path_factory, name, kwargs, 10 + i)
        for i, (name, (kwargs, _, _)) in enumerate(FULL_LAYOUTS.items())
    }


@pytest.mark.parametrize("name", FULL_LAYOUTS)
def test_full_layouts_match_hf(full_layout_codecs, name):
    hf, ours = full_layout_codecs[name]
    kwargs, length, codebooks = FULL_LAYOUTS[name]
    hop = ours.config.hop_length
    assert hop == np.prod(kwargs["upsampling_ratios"]) and length % hop != 0  # the last frame is partial
    audio = np.random.default_rng(length).standard_normal((2, 1, length)).astype(np.float32)
    for i, (bandwidth, num_codebooks) in enumerate(codebooks.items()):
        assert (
            ours.num_quantizers(bandwidth) == hf.quantizer.get_num_quantizers_for_bandwidth(bandwidth) == num_codebooks
        )
        _assert_parity(name, hf, ours, audio, bandwidth, check_embeddings=i == 0)


def test_real_32khz_layout_converts_from_both_spellings():
    """HF's full-size MusicGen codec (built on torch's meta device, no weights): every key maps, shapes agree."""
    from transformers import EncodecConfig as HFConfig
    from transformers import EncodecModel as HFModel

    kwargs = dict(
        sampling_rate=32000,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        codebook_size=2048,
        num_filters=64,
        use_causal_conv=False,
        use_conv_shortcut=False,
        normalize=False,
    )
    with torch.device("meta"):
        hf = HFModel(HFConfig(**kwargs))
    config = EncodecConfig.from_hf(kwargs)
    assert config.num_quantizers == 4
    new = {f"audio_encoder.{k}": np.broadcast_to(np.float32(0), v.shape) for k, v in hf.state_dict().items()}
    old = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in new.items()
    }
    abstract = {"audio_encoder": abstract_params(config)}
    rules, sizes = encodec_rules(config)
    for tensors in (new, old):
        params = convert(tensors, rules, sizes, abstract)
        shapes = jax.tree_util.tree_map(np.shape, params)
        assert shapes == jax.tree_util.tree_map(lambda s: s.shape, abstract)
    assert params["audio_encoder"]["quantizer"]["codebooks"].shape == (4, 2048, 128)
    assert params["audio_encoder"]["decoder"]["stage_0"]["up"]["g"].shape == (1024,)  # per *input* channel


def test_repeated_shape_does_not_recompile(codecs):
    _, ours = codecs["causal-reflect-stereo-norm"]
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((1, 2, 29)).astype(np.float32)  # a shape no other test uses
    before = encode_audio._cache_size()
    codes, scales = ours.encode(audio, return_scales=True)
    assert encode_audio._cache_size() == before + 1
    again = ours.encode(rng.standard_normal(audio.shape).astype(np.float32))
    assert encode_audio._cache_size() == before + 1
    assert not np.array_equal(np.asarray(codes), np.asarray(again))

    before = decode_codes._cache_size()
    ours.decode(codes, scales)
    assert decode_codes._cache_size() == before + 1
    ours.decode(np.asarray(again), scales)
    assert decode_codes._cache_size() == before + 1


def _bare_tensors(codecs, name):
    hf, ours = codecs[name]
    tensors = {k: v.numpy() for k, v in hf.state_dict().items()}
    rules, sizes = encodec_rules(ours.config, prefix="", root=())
    return tensors, lambda t: convert(t, rules, sizes, abstract_params(ours.config))


def test_converter_names_missing_tensor(codecs):
    tensors, run = _bare_tensors(codecs, "causal-reflect-stereo-norm")
    key = "decoder.layers.1.lstm.weight_hh_l1"
    assert key in tensors
    del tensors[key]
    with pytest.raises(CheckpointError, match=f"missing tensor '{key}'"):
        run(tensors)
    tensors, run = _bare_tensors(codecs, "causal-reflect-stereo-norm")
    key = "encoder.layers.1.shortcut.conv.parametrizations.weight.original1"
    del tensors[key]
    with pytest.raises(CheckpointError, match=f"missing tensor '{key}'"):
        run(tensors)


def test_converter_names_wrong_shape(codecs):
    tensors, run = _bare_tensors(codecs, "causal-reflect-stereo-norm")
    key = "decoder.layers.3.conv.parametrizations.weight.original1"  # the first transposed conv: torch (I, O, W)
    assert tensors[key].shape == (16, 8, 4)
    tensors[key] = np.zeros((8, 16, 4), np.float32)
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape \(8, 16, 4\), expected \(16, 8, 4\)"):
        run(tensors)


def test_converter_refuses_both_spellings_and_strays(codecs):
    tensors, run = _bare_tensors(codecs, "causal-reflect-stereo-norm")
    tensors["encoder.layers.0.conv.weight_g"] = tensors["encoder.layers.0.conv.parametrizations.weight.original0"]
    with pytest.raises(CheckpointError, match="maps to the same parameter"):
        run(tensors)
    tensors, run = _bare_tensors(codecs, "causal-reflect-stereo-norm")
    tensors["encoder.layers.3.conv.bias"] = np.zeros(4, np.float32)  # index 3 is an ELU
    with pytest.raises(CheckpointError, match="unexpected tensor 'encoder.layers.3.conv.bias'"):
        run(tensors)
    tensors, run = _bare_tensors(codecs, "causal-reflect-stereo-norm")
    tensors["quantizer.layers.4.codebook.embed"] = np.zeros((16, 8), np.float32)  # the config has 4 codebooks
    with pytest.raises(CheckpointError, match="quantizer 4 is out of range"):
        run(tensors)


def test_bad_inputs_are_refused_in_one_line(codecs):
    _, ours = codecs["causal-reflect-stereo-norm"]  # stereo, 4 codebooks of 16
    audio = np.zeros((1, 2, 12), np.float32)
    cases = [
        (lambda: ours.encode(audio.astype(np.int16)), "floating-point"),
        (lambda: ours.encode(audio[:, :1]), r"shape \(batch, 2, samples\)"),
        (lambda: ours.encode(audio[0]), r"shape \(batch, 2, samples\)"),
        (lambda: ours.encode(audio, bandwidth=6.0), r"bandwidth 6.0 is not supported; choose one of \[1.6, 3.2\]"),
        (lambda: ours.decode(np.zeros((1, 2, 3), np.float32)), "integer"),
        (lambda: ours.decode(np.full((1, 2, 3), 16)), r"\[0, 16\), got values in \[16, 16\]"),
        (lambda: ours.decode(np.full((1, 2, 3), -1)), r"\[0, 16\)"),
        (lambda: ours.decode(np.zeros((1, 5, 3), np.int32)), "1 <= num_codebooks <= 4"),
        (lambda: ours.decode(np.zeros((2, 3), np.int32)), "shape"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_unsupported_configs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="chunk_length_s"):
        EncodecConfig.from_hf({"chunk_length_s": 1.0, "overlap": 0.01})  # the 48 kHz codec
    with pytest.raises(ConfigError, match="trim_right_ratio"):
        EncodecConfig.from_hf({"use_causal_conv": False, "trim_right_ratio": 0.5})
    with pytest.raises(ConfigError, match="power of 2"):
        EncodecConfig.from_hf({"codebook_size": 1000})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "musicgen_melody"}))
    with pytest.raises(ConfigError, match="expected 'encodec'"):
        EncodecModel.from_pretrained(tmp_path)


def test_codec_without_quantizers_builds_and_refuses_to_encode():
    """A bandwidth below one codebook's rate gives num_quantizers == 0, as in HF (which then saves no codebook):
    our tree has no codebook leaf, and encode says why it cannot run."""
    from transformers import EncodecConfig as HFConfig

    kwargs = {**CONFIGS["noncausal-constant-mono-old-wn"], "target_bandwidths": [0.5]}
    config = EncodecConfig.from_hf(kwargs)
    assert config.num_quantizers == HFConfig(**kwargs).num_quantizers == 0
    abstract = abstract_params(config)
    assert "quantizer" not in abstract
    model = EncodecModel(config, jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), abstract))
    with pytest.raises(ValueError, match="no quantizer"):
        model.encode(np.zeros((1, 1, 8), np.float32))
