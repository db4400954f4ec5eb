"""Strict config reading from HF config.json / generation_config.json."""

import dataclasses
import json

import pytest

from musicgen_jax.config import (
    RUNTIME_FIELDS,
    ConfigError,
    DecoderConfig,
    EncodecConfig,
    GenerationConfig,
    MusicgenMelodyConfig,
    T5Config,
)
from tests.helpers import hf_melody_config


def _hf_dict(**parts):
    return hf_melody_config(**parts).to_dict()


def test_reads_every_field_hf_writes():
    data = _hf_dict(decoder={"num_hidden_layers": 3, "audio_channels": 2, "num_codebooks": 8}, chroma_length=40)
    cfg = MusicgenMelodyConfig.from_hf(data)
    assert cfg.decoder.num_hidden_layers == 3
    assert cfg.decoder.audio_channels == 2 and cfg.decoder.num_codebooks == 8
    assert cfg.chroma_length == 40 and cfg.num_chroma == 12
    assert cfg.text_encoder.d_model == data["text_encoder"]["d_model"]
    assert cfg.audio_encoder.upsampling_ratios == tuple(data["audio_encoder"]["upsampling_ratios"])
    assert cfg.sampling_rate == data["audio_encoder"]["sampling_rate"]
    hash(cfg)  # static under jit


def test_absent_fields_take_hf_defaults():
    from transformers import EncodecConfig as HFEncodec
    from transformers import MusicgenMelodyDecoderConfig as HFDecoder
    from transformers import T5Config as HFT5

    cfg = MusicgenMelodyConfig.from_hf(
        {
            "model_type": "musicgen_melody",
            "text_encoder": {"model_type": "t5"},
            "audio_encoder": {"model_type": "encodec"},
            "decoder": {},
        }
    )
    for ours, theirs in ((cfg.decoder, HFDecoder()), (cfg.text_encoder, HFT5()), (cfg.audio_encoder, HFEncodec())):
        for field in dataclasses.fields(ours):
            if field.name in RUNTIME_FIELDS:  # our runtime choices (matmul_precision), not HF config fields
                assert getattr(ours, field.name) in (None, False) and not hasattr(theirs, field.name), field.name
                continue
            want = getattr(theirs, field.name)
            want = tuple(want) if isinstance(want, list) else want
            assert getattr(ours, field.name) == want, field.name
    assert cfg.chroma_length == 235 and cfg.num_chroma == 12


def test_other_model_type_is_refused():
    data = _hf_dict()
    data["model_type"] = "musicgen"
    with pytest.raises(ConfigError, match="model_type is 'musicgen'"):
        MusicgenMelodyConfig.from_hf(data)


def test_unknown_field_is_named():
    data = _hf_dict()
    data["decoder"]["rope_theta"] = 10000.0
    with pytest.raises(ConfigError, match="rope_theta"):
        MusicgenMelodyConfig.from_hf(data)


@pytest.mark.parametrize(
    "part,field,value",
    [
        ("decoder", "layerdrop", 0.1),
        ("decoder", "activation_function", "quick_gelu"),
        ("decoder", "audio_channels", 3),
        ("decoder", "tie_word_embeddings", True),
        ("text_encoder", "feed_forward_proj", "gated-quick_gelu"),
        ("audio_encoder", "norm_type", "batch_norm"),
    ],
)
def test_unsupported_values_are_named(part, field, value):
    data = _hf_dict()
    data[part][field] = value
    with pytest.raises(ConfigError, match=field):
        MusicgenMelodyConfig.from_hf(data)


def test_bookkeeping_fields_are_accepted():
    data = _hf_dict()
    data.update(architectures=["MusicgenMelodyForConditionalGeneration"], torch_dtype="float32")
    data["text_encoder"].update(n_positions=512, output_past=True, task_specific_params={"x": {}})
    assert MusicgenMelodyConfig.from_hf(data).text_encoder.d_model == data["text_encoder"]["d_model"]


def test_gated_gelu_means_tanh_gelu():
    assert T5Config(feed_forward_proj="gated-gelu").dense_act_fn == "gelu_new"
    assert T5Config(feed_forward_proj="gated-gelu").is_gated_act
    assert T5Config(feed_forward_proj="relu").dense_act_fn == "relu"


def test_encodec_derived_sizes_match_hf():
    from transformers import EncodecConfig as HFEncodec

    kwargs = dict(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], codebook_size=2048)
    ours, theirs = EncodecConfig(**kwargs), HFEncodec(**kwargs)
    assert ours.frame_rate == theirs.frame_rate
    assert ours.num_quantizers == theirs.num_quantizers == 4
    assert ours.hop_length == 640


def test_generation_config(tmp_path):
    (tmp_path / "generation_config.json").write_text(
        json.dumps(
            {
                "_from_model_config": False,
                "bos_token_id": 2048,
                "decoder_start_token_id": 2048,
                "do_sample": True,
                "guidance_scale": 3.0,
                "max_length": 1500,
                "pad_token_id": 2048,
                "top_k": 250,
                "transformers_version": "4.40.0.dev0",
            }
        )
    )
    gen = GenerationConfig.from_pretrained(tmp_path)
    assert (gen.do_sample, gen.guidance_scale, gen.top_k, gen.max_length) == (True, 3.0, 250, 1500)
    assert gen.top_p == 1.0 and gen.temperature == 1.0  # HF defaults


def test_generation_config_refuses_what_changes_sampling(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"num_beams": 4}))
    with pytest.raises(ConfigError, match="num_beams"):
        GenerationConfig.from_pretrained(tmp_path)


def test_missing_generation_config_uses_decoder_tokens(tmp_path):
    gen = GenerationConfig.from_pretrained(tmp_path, DecoderConfig(vocab_size=16, pad_token_id=16, bos_token_id=16))
    assert gen.pad_token_id == 16 and gen.bos_token_id == 16 and gen.max_length == 20


def test_malformed_json_names_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        MusicgenMelodyConfig.from_pretrained(tmp_path)


def test_to_hf_round_trips_and_transformers_reads_it():
    from transformers import MusicgenMelodyConfig as HFConfig

    data = _hf_dict(decoder={"audio_channels": 2, "num_codebooks": 8}, chroma_length=40)
    ours = MusicgenMelodyConfig.from_hf(data)
    assert MusicgenMelodyConfig.from_hf(ours.to_hf()) == ours
    theirs = HFConfig.from_dict(ours.to_hf())
    assert MusicgenMelodyConfig.from_hf(theirs.to_dict()) == ours
