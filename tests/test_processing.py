"""`MusicgenMelodyProcessor`: tokenizer + feature extractor behind HF's call, and into `generate`."""

import types

import numpy as np
import pytest
from transformers import AutoTokenizer
from transformers.models.musicgen_melody.processing_musicgen_melody import MusicgenMelodyProcessor as HFProcessor

from musicgen_jax import MusicgenMelodyFeatureExtractor, MusicgenMelodyForConditionalGeneration, MusicgenMelodyProcessor
from tests.helpers import save_hf_melody, save_tiny_tokenizer

TEXTS = ["80s pop track with bassy drums and synth", "90s rock song with loud guitars and heavy drums", "piano"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path, _ = save_hf_melody(tmp_path_factory.mktemp("proc"))
    save_tiny_tokenizer(path)
    MusicgenMelodyFeatureExtractor().save_pretrained(path)
    return path


def test_text_matches_hf_tokenizer(checkpoint):
    ours = MusicgenMelodyProcessor.from_pretrained(checkpoint)(text=TEXTS, padding=True, return_tensors="np")
    ref = AutoTokenizer.from_pretrained(checkpoint)(TEXTS, padding=True, return_tensors="np")
    np.testing.assert_array_equal(ours["input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], ref["attention_mask"])


def test_audio_goes_through_the_feature_extractor(checkpoint):
    processor = MusicgenMelodyProcessor.from_pretrained(checkpoint)
    audio = [np.sin(np.arange(40000) * 0.05).astype(np.float32), np.sin(np.arange(70000) * 0.02).astype(np.float32)]
    out = processor(text=TEXTS[:2], audio=audio, sampling_rate=32000, padding=True)
    direct = processor.feature_extractor(audio, sampling_rate=32000, padding=True)
    np.testing.assert_array_equal(out["input_features"], direct["input_features"])
    assert out["input_features"].shape == (2, 1 + 70000 // 4096, 12)
    assert out["input_ids"].shape[0] == 2


def test_unconditional_inputs_are_hf_s(checkpoint):
    ours = MusicgenMelodyProcessor.from_pretrained(checkpoint).get_unconditional_inputs(num_samples=3)
    tok = AutoTokenizer.from_pretrained(checkpoint)
    ref = tok([""] * 3, return_tensors="np", return_attention_mask=True)  # the lines HF's method runs
    ref["attention_mask"][:] = 0
    np.testing.assert_array_equal(ours["input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(ours["attention_mask"], ref["attention_mask"])


def test_batch_decode_matches_hf(checkpoint):
    processor = MusicgenMelodyProcessor.from_pretrained(checkpoint)
    audio = np.random.default_rng(0).standard_normal((2, 1, 10)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    # HF's processor class needs torchaudio to be built; its _decode_audio only reads feature_extractor.padding_value.
    stand_in = types.SimpleNamespace(feature_extractor=types.SimpleNamespace(padding_value=0.0))
    ref = HFProcessor._decode_audio(stand_in, audio, attention_mask=mask)
    got = processor.batch_decode(audio, attention_mask=mask)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, np.asarray(r))


def test_processor_output_feeds_generate(checkpoint):
    processor = MusicgenMelodyProcessor.from_pretrained(checkpoint)
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(checkpoint)
    melody = np.sin(np.arange(9000) * 0.03).astype(np.float32)
    inputs = processor(text=TEXTS[:2], audio=[melody, melody], sampling_rate=32000, padding=True)
    audio = model.generate(**inputs, max_new_tokens=8, do_sample=True, guidance_scale=3.0, seed=0)
    assert audio.shape == (2, 1, (8 + 1 - 4) * model.config.audio_encoder.hop_length)
    assert audio.dtype == np.float32 and np.isfinite(audio).all()


def test_unknown_argument_is_named(checkpoint):
    with pytest.raises(ValueError, match="return_token_type_ids"):
        MusicgenMelodyProcessor.from_pretrained(checkpoint)(text=TEXTS, return_token_type_ids=True)


SEED_EXAMPLE = """
import torch
import scipy.io.wavfile
from musicgen_jax import AutoProcessor, MusicgenForConditionalGeneration

processor = AutoProcessor.from_pretrained("facebook/musicgen-melody")
model = MusicgenForConditionalGeneration.from_pretrained("facebook/musicgen-melody", dtype="auto")

inputs = processor(
    text=["80s pop track with bassy drums and synth", "90s rock song with loud guitars and heavy drums"],
    padding=True,
    return_tensors="pt",
)
audio_values = model.generate(**inputs, do_sample=True, guidance_scale=3, max_new_tokens=256)
scipy.io.wavfile.write("generated_music.wav", rate=processor.sampling_rate, data=audio_values[0, 0].cpu().numpy())
"""


def test_the_hf_doc_example_runs_with_only_the_import_changed(checkpoint, tmp_path, monkeypatch):
    """The example of the HF MusicGen Melody doc page, verbatim but for its import line (the Hub id is pointed at a
    local tiny checkpoint, since this machine cannot reach the Hub)."""
    import scipy.io.wavfile

    source = SEED_EXAMPLE.replace('"facebook/musicgen-melody"', repr(str(checkpoint)))
    monkeypatch.chdir(tmp_path)
    exec(compile(source, "seed_example.py", "exec"), {})
    rate, data = scipy.io.wavfile.read(tmp_path / "generated_music.wav")
    assert rate == 32000 and data.dtype == np.float32 and len(data) == (256 + 1 - 4) * 4


def _melody_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("musicgen_jax") and r.levelno >= 30]


def test_a_loaded_melody_file_is_one_clip_mono_or_stereo(checkpoint, tmp_path, caplog, monkeypatch):
    import soundfile

    from musicgen_jax import audio, chroma

    monkeypatch.setattr(chroma, "_WARNED", set())  # the warning is once per process; start afresh
    processor = MusicgenMelodyProcessor.from_pretrained(checkpoint)
    t = np.arange(30000) / 44100
    left, right = np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 262 * t)
    soundfile.write(tmp_path / "mono.wav", 0.3 * left, 44100, subtype="FLOAT")
    soundfile.write(tmp_path / "stereo.wav", 0.3 * np.stack([left, right], 1), 44100, subtype="FLOAT")

    # the README's path: our loader straight into our processor
    wave, rate = audio.load(tmp_path / "mono.wav")
    with caplog.at_level("WARNING"):
        out = processor(text=TEXTS[:1], audio=wave, sampling_rate=rate, padding=True)
    assert _melody_warnings(caplog) == []  # mono: nothing to say
    ref = processor.feature_extractor(np.asarray(wave)[0], sampling_rate=rate)
    np.testing.assert_array_equal(out["input_features"], ref["input_features"])

    wave, rate = audio.load(tmp_path / "stereo.wav")
    assert wave.shape[0] == 2
    caplog.clear()
    with caplog.at_level("WARNING"):
        out = processor(text=TEXTS[:1], audio=wave, sampling_rate=rate, padding=True)
        batch = processor(text=TEXTS[:2], audio=[wave, wave], sampling_rate=rate, padding=True)
    # one clip, not two mono melodies; the same features as its channel mean; one warning saying so
    assert out["input_features"].shape[0] == 1 and out["input_ids"].shape[0] == 1
    mean = processor.feature_extractor(np.asarray(wave).mean(axis=0), sampling_rate=rate)
    np.testing.assert_array_equal(out["input_features"], mean["input_features"])
    np.testing.assert_array_equal(batch["input_features"], np.concatenate([mean["input_features"]] * 2))
    assert _melody_warnings(caplog) == [
        "melody `audio` with 2 channels was mixed to mono (channels averaged, as HF does) before computing chroma"
    ]


def test_plain_arrays_keep_hf_batch_reading_and_mono_items_do_not_warn(checkpoint, caplog, monkeypatch):
    from musicgen_jax import chroma

    monkeypatch.setattr(chroma, "_WARNED", set())
    fe = MusicgenMelodyProcessor.from_pretrained(checkpoint).feature_extractor
    clips = np.sin(np.arange(2 * 9000).reshape(2, 9000) * 0.03).astype(np.float32)
    with caplog.at_level("WARNING"):
        assert fe(clips, sampling_rate=32000)["input_features"].shape[0] == 2  # (2, L): two mono clips, as in HF
        single = fe(clips[:, None], sampling_rate=32000)["input_features"]  # (2, 1, L): two one-channel clips
    assert _melody_warnings(caplog) == []
    np.testing.assert_array_equal(single, fe(clips, sampling_rate=32000)["input_features"])


def test_processor_outputs_are_hf_s_batch_types(checkpoint):
    import pickle

    import jax
    import torch

    from musicgen_jax import BatchEncoding, BatchFeature

    processor = MusicgenMelodyProcessor.from_pretrained(checkpoint)
    melody = np.sin(np.arange(9000) * 0.03).astype(np.float32)
    inputs = processor(text=TEXTS[:2], audio=[melody, melody], sampling_rate=32000, padding=True, return_tensors="pt")
    assert type(inputs) is BatchFeature
    # HF's three keys, and the whole mono waveform that long-form generation reads each window's chroma from
    assert set(inputs.keys()) == {"input_ids", "attention_mask", "input_features", "melody"}
    np.testing.assert_array_equal(inputs.melody, np.stack([melody, melody]))
    for key in inputs:
        assert getattr(inputs, key) is inputs[key] and isinstance(inputs[key], np.ndarray)
    with pytest.raises(AttributeError, match="'decoder_input_ids'"):
        inputs.decoder_input_ids  # noqa: B018
    for target in ("cuda", torch.device("cpu"), jax.devices()[0]):  # HF code: inputs.to("cuda"), inputs.to(device)
        assert inputs.to(target) is inputs

    def generate(input_ids=None, attention_mask=None, input_features=None, **kwargs):  # model.generate's keywords
        return input_ids, attention_mask, input_features

    assert generate(**inputs) == (inputs.input_ids, inputs.attention_mask, inputs.input_features)
    back = pickle.loads(pickle.dumps(inputs))
    assert type(back) is BatchFeature and back.keys() == inputs.keys()
    for key in inputs:
        np.testing.assert_array_equal(back[key], inputs[key])

    text_only = processor(text=TEXTS, padding=True)
    audio_only = processor(audio=[melody], sampling_rate=32000)
    assert type(text_only) is BatchFeature and text_only.input_ids.shape[0] == 3
    assert type(audio_only) is BatchFeature and audio_only.input_features.shape == (1, 1 + 16384 // 4096, 12)

    null = processor.get_unconditional_inputs(num_samples=2)  # HF: a BatchEncoding from the tokenizer
    assert type(null) is BatchEncoding and null.to("cpu") is null
    assert null.input_ids.shape[0] == 2 and not null.attention_mask.any()
    assert generate(**null)[:2] == (null.input_ids, null.attention_mask)
    assert type(pickle.loads(pickle.dumps(null))) is BatchEncoding


def test_batch_feature_as_a_mapping():
    import copy

    from transformers import BatchFeature as HFBatchFeature

    from musicgen_jax import BatchEncoding, BatchFeature

    features = BatchFeature({"input_features": np.zeros((1, 2, 12), np.float32)})
    assert dict(features) == {"input_features": features["input_features"]} and features.data is features
    with pytest.raises(AttributeError, match="BatchFeature has no key or attribute 'input_ids'"):
        features.input_ids  # noqa: B018
    with pytest.raises(AttributeError):  # would silently shadow a key; HF users write inputs["key"] = ...
        features.input_ids = np.zeros(1)
    features["input_ids"] = np.ones((1, 3), np.int64)
    assert features.input_ids is features["input_ids"] and "input_ids" in dir(features)
    assert type(features.copy()) is BatchFeature and type(copy.deepcopy(features)) is BatchFeature
    assert isinstance(BatchEncoding(), BatchFeature) and BatchEncoding() == {}
    # HF's constructor: tensor_type turns lists into arrays (numpy for "np", "pt" and "jax" alike)
    converted = BatchFeature({"input_ids": [[1, 2], [3, 4]]}, tensor_type="pt")
    ref = HFBatchFeature({"input_ids": [[1, 2], [3, 4]]}, tensor_type="np")
    assert isinstance(converted.input_ids, np.ndarray)
    np.testing.assert_array_equal(converted.input_ids, ref.input_ids)
    with pytest.raises(ValueError, match="'input_ids'"):
        BatchFeature({"input_ids": [[1, 2], [3]]}, tensor_type="np")
