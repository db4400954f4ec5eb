"""The plain MusicGen family (HF ``transformers.models.musicgen``: text through cross-attention, no melody) against
HF ``MusicgenForConditionalGeneration`` on tiny random checkpoints, float32: decoder and full-forward logits, greedy
codes of ``generate`` (text with and without guidance, unconditional, stereo, continuation from codes and from a
waveform through ``input_values``), the strict converter, and loading by ``model_type``."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from musicgen_jax import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration, sampling
from musicgen_jax.config import MusicgenConfig
from tests.helpers import hf_generate, report, save_hf_melody, save_hf_musicgen

# HF's own tester shapes (tests/models/musicgen: hidden 16, 4 heads, ffn 4 x 16... scaled to our tiny codec), the
# odd widths where enc_to_dec_proj exists (decoder 20 != T5 16), no projection (decoder width = T5 width), stereo.
CONFIGS = {
    "tester": {"decoder": {"hidden_size": 16, "num_attention_heads": 4, "ffn_dim": 64, "num_hidden_layers": 2}},
    "enc_to_dec_proj": {"decoder": {"hidden_size": 20, "num_attention_heads": 4}},
    "3 layers, no projection": {"decoder": {"hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 3}},
    "stereo": {"decoder": {"audio_channels": 2, "num_codebooks": 8}},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for name, parts in CONFIGS.items():
        path, hf = save_hf_musicgen(tmp_path_factory.mktemp("musicgen"), **parts)
        out[name] = (hf, MusicgenForConditionalGeneration.from_pretrained(path), path)
    return out


def _text(batch=2, length=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 64, (batch, length))
    mask = np.ones((batch, length), np.int64)
    mask[-1, length - 2 :] = 0
    return ids, mask


def _compare(name, ours, hf_audio, hf_codes):
    agreement = float((ours.audio_codes == hf_codes).mean()) if ours.audio_codes.shape == hf_codes.shape else 0.0
    print(f"[parity] musicgen {name}: greedy codes agreement {agreement:.4f} over {hf_codes.size} codes")
    assert ours.audio_codes.shape == hf_codes.shape
    assert agreement == 1.0
    err = report(f"musicgen {name} audio", ours.sequences, hf_audio)
    assert err <= 1e-4 * max(1.0, np.abs(hf_audio).max())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_logits_match_hf(models, name):
    hf, ours, _ = models[name]
    assert ours.config.decoder.cross_attention and isinstance(ours.config, MusicgenConfig)
    ids, mask = _text()
    K = ours.config.decoder.num_codebooks
    dec_ids = np.random.default_rng(1).integers(0, 16, (2 * K, 6))
    with torch.no_grad():
        ref = hf(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            decoder_input_ids=torch.from_numpy(dec_ids),
        ).logits.numpy()
    got = np.asarray(ours(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids).logits)
    err = report(f"musicgen {name} forward logits", got, ref)
    assert err <= 1e-5 * max(1.0, np.abs(ref).max())
    # the decoder alone, on HF's projected encoder states (the cross-attention path without T5)
    with torch.no_grad():
        states = hf.text_encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))[0]
    got = np.asarray(ours(encoder_outputs=(states.numpy(),), attention_mask=mask, decoder_input_ids=dec_ids).logits)
    assert report(f"musicgen {name} forward from encoder_outputs", got, ref) <= 1e-5 * max(1.0, np.abs(ref).max())


CASES = {
    "batch 1, cfg 3": (1, 3.0),
    "padded batch 3, cfg 3": (3, 3.0),
    "padded batch 2, no cfg": (2, 1.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_generate_matches_hf(models, case):
    hf, ours, _ = models["enc_to_dec_proj"]
    batch, scale = CASES[case]
    ids, mask = _text(batch)
    kwargs = dict(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=30, guidance_scale=scale)
    hf_audio, hf_codes = hf_generate(hf, **kwargs)
    _compare(case, ours.generate(**kwargs, return_dict_in_generate=True), hf_audio, hf_codes)


def test_greedy_generate_in_cache_phases_matches_hf(models, monkeypatch):
    """Cross-attention decoder, KV cache buffer in phases of 8 positions (``sampling.phase_ends``)."""
    monkeypatch.setattr(sampling, "PHASE_LENGTH", 8)
    test_greedy_generate_matches_hf(models, "padded batch 3, cfg 3")


@pytest.mark.parametrize("name", ["tester", "3 layers, no projection", "stereo"])
def test_greedy_generate_matches_hf_on_every_shape(models, name):
    hf, ours, _ = models[name]
    ids, mask = _text(2)
    kwargs = dict(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=30, guidance_scale=3.0)
    hf_audio, hf_codes = hf_generate(hf, **kwargs)
    out = ours.generate(**kwargs, return_dict_in_generate=True)
    assert out.sequences.shape[1] == ours.config.decoder.audio_channels
    _compare(name, out, hf_audio, hf_codes)


def test_unconditional_matches_hf(models):
    hf, ours, _ = models["enc_to_dec_proj"]
    ours_inputs = ours.get_unconditional_inputs(num_samples=2)
    hf_inputs = hf.get_unconditional_inputs(num_samples=2)
    np.testing.assert_array_equal(ours_inputs["encoder_outputs"][0], hf_inputs.encoder_outputs[0].numpy())
    np.testing.assert_array_equal(ours_inputs["attention_mask"], hf_inputs.attention_mask.numpy())
    assert ours_inputs["guidance_scale"] == hf_inputs.guidance_scale
    hf_audio, hf_codes = hf_generate(
        hf,
        encoder_outputs=hf_inputs.encoder_outputs,
        attention_mask=hf_inputs.attention_mask,
        guidance_scale=hf_inputs.guidance_scale,
        do_sample=False,
        max_new_tokens=30,
    )
    out = ours.generate(**ours_inputs, do_sample=False, max_new_tokens=30, return_dict_in_generate=True)
    _compare("unconditional", out, hf_audio, hf_codes)


def test_continuation_from_codes_matches_hf(models):
    hf, ours, _ = models["enc_to_dec_proj"]
    ids, mask = _text()
    prompt = np.random.default_rng(3).integers(0, 16, (2 * 4, 5))
    kwargs = dict(
        input_ids=ids,
        attention_mask=mask,
        decoder_input_ids=prompt,
        do_sample=False,
        max_new_tokens=30,
        guidance_scale=3.0,
    )
    hf_audio, hf_codes = hf_generate(hf, **kwargs)
    _compare("audio-code prompt", ours.generate(**kwargs, return_dict_in_generate=True), hf_audio, hf_codes)


@pytest.mark.parametrize("name", ["enc_to_dec_proj", "stereo"])
def test_continuation_from_a_waveform_through_input_values_matches_hf(models, name):
    hf, ours, _ = models[name]
    ids, mask = _text()
    channels = ours.config.decoder.audio_channels
    wave = (np.random.default_rng(4).standard_normal((2, channels, 4 * 6)) * 0.1).astype(np.float32)
    padding = np.ones((2, wave.shape[2]), np.int64)
    kwargs = dict(
        input_ids=ids,
        attention_mask=mask,
        input_values=wave,
        padding_mask=padding,
        do_sample=False,
        max_new_tokens=30,
        guidance_scale=3.0,
    )
    hf_audio, hf_codes = hf_generate(hf, **kwargs)
    _compare(f"{name} waveform prompt", ours.generate(**kwargs, return_dict_in_generate=True), hf_audio, hf_codes)


def test_loading_picks_the_family_by_model_type(models, tmp_path):
    _, ours, path = models["enc_to_dec_proj"]
    # either class loads either checkpoint, as the class of its model_type (HF code names one class for both)
    assert type(MusicgenMelodyForConditionalGeneration.from_pretrained(path)) is MusicgenForConditionalGeneration
    melody, _ = save_hf_melody(tmp_path / "melody")
    assert type(MusicgenForConditionalGeneration.from_pretrained(melody)) is MusicgenMelodyForConditionalGeneration
    # a converted plain checkpoint round-trips bit for bit, family included
    ours.save_pretrained(tmp_path / "converted")
    again = MusicgenForConditionalGeneration.from_pretrained(tmp_path / "converted")
    assert type(again) is MusicgenForConditionalGeneration and again.config == ours.config
    ids, mask = _text()
    a = ours.generate(ids, mask, do_sample=False, max_new_tokens=12, return_dict_in_generate=True)
    b = again.generate(ids, mask, do_sample=False, max_new_tokens=12, return_dict_in_generate=True)
    np.testing.assert_array_equal(a.audio_codes, b.audio_codes)
    with pytest.raises(TypeError, match="use MusicgenForConditionalGeneration"):
        MusicgenMelodyForConditionalGeneration(ours.config, ours.params)


def test_plain_musicgen_refuses_a_melody(models):
    _, ours, _ = models["enc_to_dec_proj"]
    ids, mask = _text()
    with pytest.raises(ValueError, match="plain MusicGen takes no melody"):
        ours.generate(ids, mask, input_features=np.zeros((2, 3, 12), np.float32), max_new_tokens=8)


def test_the_converter_is_strict_for_the_plain_family(models, tmp_path):
    from safetensors.numpy import load_file, save_file

    from convert import CheckpointError, convert_checkpoint

    _, _, path = models["enc_to_dec_proj"]
    config, params = convert_checkpoint(path)
    assert isinstance(config, MusicgenConfig)
    layer = params["decoder"]["layers"]
    assert layer["cross_attn"]["kv"].shape == (2, 2, 4, 5, 20) and layer["cross_attn"]["q"].shape == (2, 4, 5, 20)
    assert params["text_proj"]["kernel"].shape == (16, 20)
    tensors = load_file(f"{path}/model.safetensors")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "generation_config.json"):
        shutil.copy(os.path.join(path, name), broken / name)
    missing = {k: v for k, v in tensors.items() if "layers.1.encoder_attn.v_proj" not in k}
    save_file(missing, broken / "model.safetensors")
    with pytest.raises(CheckpointError, match="layers.1.encoder_attn.v_proj"):
        convert_checkpoint(broken)


def test_training_loss_matches_hf_and_a_train_step_learns(models):
    import jax
    import jax.numpy as jnp

    from musicgen_jax import training

    hf, ours, _ = models["enc_to_dec_proj"]
    ids, mask = _text()
    K = ours.config.decoder.num_codebooks
    labels = np.random.default_rng(5).integers(0, 16, (2, 9, K))
    labels[0, :2, 3] = -100
    from transformers.models.musicgen.modeling_musicgen import shift_tokens_right

    # HF 5.24's forward shifts the labels with `config.decoder.decoder_start_token_id`, which MusicgenDecoderConfig
    # does not have (AttributeError): shift them with HF's own function and the decoder's BOS, as HF means to.
    dec = hf.config.decoder
    shifted = shift_tokens_right(torch.from_numpy(labels), dec.pad_token_id, dec.bos_token_id)
    with torch.no_grad():
        ref = hf(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            decoder_input_ids=shifted.reshape(-1, shifted.shape[-1]),  # (B, K, T) -> (B * K, T)
            labels=torch.from_numpy(labels),
        ).loss.item()
    got = float(ours(input_ids=ids, attention_mask=mask, labels=labels).loss)
    print(f"[parity] musicgen training loss: ours {got:.7f}, HF {ref:.7f}, diff {abs(got - ref):.1e}")
    assert abs(got - ref) <= 1e-5 * max(1.0, abs(ref))

    config = ours.config
    optimizer = training.make_optimizer(3e-3, warmup_steps=1, total_steps=20)
    trainable = training.default_trainable(config)
    assert "decoder" in trainable and "text_proj" in trainable and "chroma_proj" not in trainable
    step = training.make_train_step(config, optimizer, trainable=trainable, dropout=False)
    params = jax.tree_util.tree_map(jnp.asarray, ours.params)
    state = training.init_train_state(params, optimizer, trainable, seed=0)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels.astype(np.int32)}
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    losses = []
    for _ in range(8):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert abs(losses[0] - ref) <= 1e-5 * max(1.0, abs(ref))  # the first step's loss is HF's
    assert losses[-1] < losses[0] - 0.1, losses


# HF's plain MusicGen doc examples (docs/source/en/model_doc/musicgen.md: text-conditional, audio-prompted,
# unconditional), verbatim but for the import line; the dataset sample is a sine at the model's rate.
PLAIN_EXAMPLES = """
import numpy as np
from musicgen_jax import AutoProcessor, MusicgenForConditionalGeneration

processor = AutoProcessor.from_pretrained("facebook/musicgen-small")
model = MusicgenForConditionalGeneration.from_pretrained("facebook/musicgen-small")

inputs = processor(
    text=["80s pop track with bassy drums and synth", "90s rock song with loud guitars and heavy drums"],
    padding=True,
    return_tensors="pt",
)
audio_values = model.generate(**inputs, do_sample=True, guidance_scale=3, max_new_tokens=256)
results["text"] = audio_values

sample = {"array": 0.3 * np.sin(2 * np.pi * 440 * np.arange(1000) / 32000), "sampling_rate": 32000}
sample["array"] = sample["array"][: len(sample["array"]) // 2]
inputs = processor(
    audio=sample["array"],
    sampling_rate=sample["sampling_rate"],
    text=["80s blues track with groovy saxophone"],
    padding=True,
    return_tensors="pt",
)
audio_values = model.generate(**inputs, do_sample=True, guidance_scale=3, max_new_tokens=256)
results["audio prompt"] = processor.batch_decode(audio_values, padding_mask=inputs.padding_mask)

unconditional_inputs = model.get_unconditional_inputs(num_samples=1)
results["unconditional"] = model.generate(**unconditional_inputs, do_sample=True, max_new_tokens=256)
"""


def test_hf_plain_examples_run_with_only_the_import_changed(tmp_path):
    from musicgen_jax import EncodecFeatureExtractor, MusicgenProcessor
    from tests.helpers import save_tiny_tokenizer

    path, _ = save_hf_musicgen(tmp_path / "small", decoder={"hidden_size": 20, "num_attention_heads": 4})
    save_tiny_tokenizer(path)
    EncodecFeatureExtractor(sampling_rate=32000).save_pretrained(path)
    results: dict = {}
    exec(
        compile(PLAIN_EXAMPLES.replace('"facebook/musicgen-small"', repr(path)), "plain.py", "exec"),
        {"results": results},
    )
    assert isinstance(MusicgenProcessor.from_pretrained(path), MusicgenProcessor)
    samples = (256 + 1 - 4) * 4  # 253 frames of 4 samples (the tiny codec's hop)
    assert results["text"].shape == (2, 1, samples)
    assert results["unconditional"].shape == (1, 1, samples)
    # the prompt's 500 samples (125 frames) are continued: 125 + 253 frames
    assert len(results["audio prompt"]) == 1 and results["audio prompt"][0].shape == (1, (125 + 253) * 4)
    for audio in (results["text"], results["unconditional"], results["audio prompt"][0]):
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_cli_generate_convert_and_random_checkpoint_for_the_plain_family(models, tmp_path, capsys):
    import soundfile

    from musicgen_jax import cli

    assert cli.main(["random-checkpoint", str(tmp_path / "rnd"), "--family", "musicgen"]) == 0
    assert type(MusicgenForConditionalGeneration.from_pretrained(tmp_path / "rnd")) is MusicgenForConditionalGeneration
    out = tmp_path / "a.wav"
    args = ["generate", "--model", str(tmp_path / "rnd"), "--text", "lofi", "--text", "rock", "--max-new-tokens", "12"]
    assert cli.main([*args, "--out", str(out), "--quiet", "--no-compilation-cache"]) == 0
    wave, rate = soundfile.read(out)
    assert rate == 32000 and len(wave) == (12 - 3) * 640 and (tmp_path / "a_1.wav").exists()
    capsys.readouterr()
    # a melody is refused for a text-only family, before anything loads
    assert cli.main([*args, "--melody", str(out), "--out", str(tmp_path / "b.wav")]) == 2
    assert "--melody needs a MusicGen Melody checkpoint" in capsys.readouterr().err
    # convert an HF plain checkpoint; the converted directory loads as the same family with the same numbers
    _, ours, path = models["enc_to_dec_proj"]
    assert cli.main(["convert", "--src", path, "--dst", str(tmp_path / "conv")]) == 0
    converted = MusicgenForConditionalGeneration.from_pretrained(tmp_path / "conv")
    assert converted.config == ours.config
