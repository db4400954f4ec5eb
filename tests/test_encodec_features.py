"""``EncodecFeatureExtractor`` and ``MusicgenProcessor`` against HF's own classes, call for call.

The references are transformers' ``EncodecFeatureExtractor`` and ``MusicgenProcessor`` (real ones: neither needs
torchaudio), fed the same inputs; no musicgen_jax code produces an expected value. Compared: keys and their order,
array shapes, dtypes and values, and for ``return_tensors=None`` HF's list layout.
"""

from __future__ import annotations

import json
import os
import pathlib
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from transformers import AutoTokenizer
from transformers import EncodecFeatureExtractor as HFExtractor
from transformers.models.musicgen.processing_musicgen import MusicgenProcessor as HFProcessor

from musicgen_jax.config import ConfigError
from musicgen_jax.encodec_features import EncodecFeatureExtractor
from musicgen_jax.processing import MusicgenMelodyProcessor, MusicgenProcessor, auto_processor
from musicgen_jax.tokenizer import T5TextTokenizer
from tests.helpers import save_tiny_tokenizer

RNG = np.random.default_rng(0)
A = RNG.standard_normal(100).astype(np.float32)
B = RNG.standard_normal(70).astype(np.float32)
F64 = RNG.standard_normal(90)
I16 = (RNG.standard_normal(80) * 1000).astype(np.int16)
F16 = RNG.standard_normal(60).astype(np.float16)
S1 = RNG.standard_normal((2, 100)).astype(np.float32)
S2 = RNG.standard_normal((2, 70)).astype(np.float32)
TEXTS = ["80s pop track with bassy drums and synth", "piano"]


def as_plain(value):
    """HF's outputs in comparable form: an object array (HF's ragged mask) as a list of its items."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value)
    return value


def assert_same(ours, ref):
    """Same keys in the same order; per key the same type (array or list), shapes, dtypes and values."""
    assert list(ours.keys()) == list(ref.keys())
    for key in ref:
        got, want = as_plain(ours[key]), as_plain(ref[key])
        if isinstance(want, np.ndarray):
            assert isinstance(got, np.ndarray), key
            assert got.dtype == want.dtype and got.shape == want.shape, (key, got.dtype, got.shape, want.shape)
            np.testing.assert_array_equal(got, want)
        else:
            assert isinstance(got, list) and len(got) == len(want), key
            for g, w in zip(got, want, strict=True):
                if isinstance(w, np.ndarray):
                    assert g.dtype == w.dtype and g.shape == w.shape, (key, g.dtype, g.shape, w.shape)
                np.testing.assert_array_equal(g, w)


def both(kwargs=None, audio=None, **call):
    ours = EncodecFeatureExtractor(**(kwargs or {}))(audio, **call)
    ref = HFExtractor(**(kwargs or {}))(audio, **call)
    assert_same(ours, ref)
    return ours


MONO = dict(sampling_rate=32000)
MONO_CASES = {
    "one clip": (A, {}),
    "one list of floats": (A.tolist(), {}),
    "one float64 clip": (F64, {}),
    "one int16 clip keeps int16": (I16, {}),
    "one float16 clip keeps float16": (F16, {}),
    "ragged, default padding": ([A, B], {}),
    "ragged, padding=True": ([A, B], {"padding": True}),
    "ragged, longest ignores max_length": ([A, B], {"padding": "longest", "max_length": 80}),
    "ragged, max_length": ([A, B], {"padding": "max_length", "max_length": 120}),
    "ragged, truncation": ([A, B], {"truncation": True, "max_length": 80}),
    "truncation, no padding": ([A, B], {"padding": False, "truncation": True, "max_length": 60}),
    "equal, no padding": ([A, A], {"padding": False}),
    "equal, do_not_pad still masks": ([A, A], {"padding": "do_not_pad"}),
    "float64 and int16 items": ([F64, I16], {}),
    "tuple batch": ((A, B), {}),
    "lists of floats": ([A.tolist(), B.tolist()], {}),
}


@pytest.mark.parametrize("return_tensors", [None, "np"])
@pytest.mark.parametrize("case", list(MONO_CASES))
def test_mono_matches_hf(case, return_tensors):
    audio, call = MONO_CASES[case]
    out = both(MONO, audio, sampling_rate=32000, return_tensors=return_tensors, **call)
    if return_tensors == "np":
        assert out["input_values"].ndim == 3 and out["input_values"].shape[1] == 1


@pytest.mark.parametrize(
    "call",
    [{"padding": False}, {"padding": "do_not_pad"}, {"padding": "max_length", "max_length": 80}],
    ids=["no padding", "do_not_pad", "max_length shorter than a clip"],
)
def test_ragged_without_tensors_is_hf_s_list(call):
    out = both(MONO, [A, B], sampling_rate=32000, **call)
    assert [x.shape for x in out["input_values"]] == [(1, 100), (1, 70 if "max_length" not in call else 80)]


@pytest.mark.parametrize(
    "kwargs,audio,call",
    [
        (dict(feature_size=2, **MONO), S1, {}),
        (dict(feature_size=2, **MONO), [S1, S2], {}),
        (dict(feature_size=2, **MONO), [S1, S2], {"padding": "max_length", "max_length": 130}),
        (dict(feature_size=2, **MONO), [S1, S2], {"truncation": True, "max_length": 80}),
        (dict(feature_size=2, padding_side="left", padding_value=-1.0, **MONO), [S1, S2], {}),
        (dict(padding_side="left", padding_value=0.5, **MONO), [A, B], {"padding": "max_length", "max_length": 110}),
    ],
    ids=["one stereo clip", "stereo batch", "stereo max_length", "stereo truncation", "stereo left", "mono left"],
)
@pytest.mark.parametrize("return_tensors", [None, "np"])
def test_stereo_and_padding_side_match_hf(kwargs, audio, call, return_tensors):
    out = both(kwargs, audio, sampling_rate=32000, return_tensors=return_tensors, **call)
    if return_tensors == "np" and kwargs.get("feature_size") == 2:
        assert out["input_values"].shape[1] == 2 and out["input_values"].dtype == np.float32
        assert out["padding_mask"].dtype == np.int32


CHUNKED = dict(sampling_rate=1000, chunk_length_s=0.03, overlap=0.5)  # 30-sample chunks every 15 samples


@pytest.mark.parametrize(
    "kwargs,audio,call",
    [
        (CHUNKED, [A, B], {}),  # padded to (ceil(100 / 15) - 1) * 15 + 30 = 120
        (CHUNKED, [A, B], {"truncation": True}),  # truncated to (floor(70 / 15) - 1) * 15 + 30 = 75
        (CHUNKED, [A, B], {"padding": False}),  # HF skips padding altogether
        (CHUNKED, [A, B], {"padding": "max_length", "max_length": 110}),  # max_length wins over the chunks
        (CHUNKED, I16, {"padding": False}),
        ({**CHUNKED, "chunk_length_s": 0.2}, [A, B], {}),  # one chunk longer than every clip
        ({**CHUNKED, "chunk_length_s": 0.2}, [A, B], {"truncation": True}),  # nb_step 0: HF's formula as it is
        ({**CHUNKED, "feature_size": 2}, [S1, S2], {}),
        ({**CHUNKED, "overlap": None}, [A, B], {}),  # no stride: plain padding
    ],
)
@pytest.mark.parametrize("return_tensors", [None, "np"])
def test_chunk_alignment_matches_hf(kwargs, audio, call, return_tensors):
    if return_tensors == "np" and call.get("padding") is False and isinstance(audio, list):
        return_tensors = None  # ragged: covered by the error test
    both(kwargs, audio, sampling_rate=1000, return_tensors=return_tensors, **call)


def test_return_tensors_pt_and_jax_give_numpy_and_waveforms_are_one_clip():
    from musicgen_jax.audio import Waveform

    fe = EncodecFeatureExtractor(**MONO)
    ref = HFExtractor(**MONO)([A, B], sampling_rate=32000, return_tensors="pt")
    for kind in ("pt", "jax"):
        out = fe([A, B], sampling_rate=32000, return_tensors=kind)
        assert all(isinstance(v, np.ndarray) for v in out.values())
        assert_same(out, {k: v.numpy() for k, v in ref.items()})
    # audio.load gives (1, A) for a mono file: one mono clip (HF refuses a (1, A) array for a mono extractor)
    wave = Waveform(A[None])
    assert_same(fe(wave, sampling_rate=32000, return_tensors="np"), fe(A, sampling_rate=32000, return_tensors="np"))
    assert_same(fe([wave, Waveform(B)], sampling_rate=32000), fe([A, B], sampling_rate=32000))
    stereo = EncodecFeatureExtractor(feature_size=2, **MONO)
    assert_same(stereo(Waveform(S1), sampling_rate=32000), stereo([S1], sampling_rate=32000))


def test_hf_enums_and_other_array_types():
    import jax.numpy as jnp
    import torch
    from transformers.utils import PaddingStrategy, TensorType

    both(MONO, [A, B], sampling_rate=32000, padding=PaddingStrategy.MAX_LENGTH, max_length=110, return_tensors="np")
    both(MONO, [A, B], sampling_rate=32000, return_tensors=TensorType.NUMPY)
    both(MONO, torch.from_numpy(A), sampling_rate=32000, return_tensors="np")  # one tensor: HF reads it as numpy
    fe = EncodecFeatureExtractor(**MONO)
    ref = fe([A, B], sampling_rate=32000, return_tensors="np")
    # Lists of JAX arrays or torch tensors are batches, like lists of numpy arrays (HF stacks a list of tensors into
    # one (B, A) array and reads it as a single B-channel clip).
    for batch in ([jnp.asarray(A), jnp.asarray(B)], [torch.from_numpy(A), torch.from_numpy(B)]):
        assert_same(fe(batch, sampling_rate=32000, return_tensors="np"), ref)
    assert_same(fe(jnp.asarray(A), sampling_rate=32000), both(MONO, A, sampling_rate=32000))


ERRORS = [
    ("wrong rate", MONO, A, {"sampling_rate": 16000}, "sampling_rate=16000"),
    ("2-D array into mono", MONO, np.stack([A, A]), {}, r"raw_audio has shape \(2, 100\).*mono"),
    ("stereo item into mono", MONO, [S1], {}, r"raw_audio\[0\] has shape \(2, 100\).*mono"),
    ("mono into stereo", dict(feature_size=2, **MONO), A, {}, r"raw_audio has shape \(100,\).*stereo"),
    ("channels last", dict(feature_size=2, **MONO), [S1.T], {}, r"raw_audio\[0\] has shape \(100, 2\).*stereo"),
    ("three channels", dict(feature_size=2, **MONO), [np.zeros((3, 9), np.float32)], {}, r"\(3, 9\).*stereo"),
    ("3-D item", MONO, [np.zeros((2, 2, 9))], {}, r"raw_audio\[0\] has shape \(2, 2, 9\)"),
    ("padding and truncation", MONO, [A, B], {"padding": True, "truncation": True, "max_length": 8}, "padding=True"),
    ("do_not_pad counts as padding", MONO, [A], {"padding": "do_not_pad", "truncation": True}, "do_not_pad"),
    ("truncation needs max_length", MONO, [A, B], {"truncation": True}, "truncation=True needs max_length"),
    ("max_length padding needs it", MONO, [A, B], {"padding": "max_length"}, "needs max_length"),
    ("unknown padding", MONO, [A, B], {"padding": "foo"}, "padding must be"),
    ("ragged into one array", MONO, [A, B], {"padding": False, "return_tensors": "np"}, r"lengths \[100, 70\]"),
    (
        "max_length shorter than a clip",
        MONO,
        [A, B],
        {"padding": "max_length", "max_length": 80, "return_tensors": "np"},
        r"lengths \[100, 80\]",
    ),
    ("empty batch", MONO, [], {}, "empty list"),
]


@pytest.mark.parametrize("name,kwargs,audio,call,match", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_hf_s_one_line(name, kwargs, audio, call, match):
    call = {"sampling_rate": 32000, **call}
    with pytest.raises(ValueError, match=match) as info:
        EncodecFeatureExtractor(**kwargs)(audio, **call)
    assert "\n" not in str(info.value), str(info.value)
    with pytest.raises((ValueError, IndexError)):  # HF fails on the same input (IndexError: the empty batch)
        HFExtractor(**kwargs)(audio, **call)


def test_missing_sampling_rate_warns():
    with pytest.warns(UserWarning, match="sampling_rate"):
        EncodecFeatureExtractor(**MONO)([A])


# ---------------------------------------------------------------------------------------------------------------------
# Configuration files.
# ---------------------------------------------------------------------------------------------------------------------

SAVED = dict(
    feature_size=2,
    sampling_rate=32000,
    padding_value=0.5,
    padding_side="left",
    return_attention_mask=False,
    chunk_length_s=1.0,
    overlap=0.01,
)


def test_defaults_and_preprocessor_config_round_trip_with_hf(tmp_path):
    assert EncodecFeatureExtractor().to_dict() == HFExtractor().to_dict()
    hf = HFExtractor(**SAVED)
    hf.save_pretrained(tmp_path / "hf")
    ours = EncodecFeatureExtractor.from_pretrained(tmp_path / "hf")
    assert ours.to_dict() == hf.to_dict() and list(ours.to_dict()) == list(hf.to_dict())
    assert (ours.chunk_length, ours.chunk_stride) == (hf.chunk_length, hf.chunk_stride) == (32000, 31680)
    ours.save_pretrained(tmp_path / "ours")
    name = "preprocessor_config.json"
    assert (tmp_path / "ours" / name).read_text() == (tmp_path / "hf" / name).read_text()
    assert HFExtractor.from_pretrained(tmp_path / "ours").to_dict() == hf.to_dict()
    assert EncodecFeatureExtractor.from_pretrained(tmp_path / "ours" / name).to_dict() == hf.to_dict()
    assert repr(ours) == repr(hf)


def test_json_file_round_trip_with_hf(tmp_path):
    ours, hf = EncodecFeatureExtractor(**SAVED), HFExtractor(**SAVED)
    ours.to_json_file(tmp_path / "ours.json")
    assert (tmp_path / "ours.json").read_text() == ours.to_json_string() == hf.to_json_string()
    assert HFExtractor.from_json_file(tmp_path / "ours.json").to_dict() == hf.to_dict()
    hf.to_json_file(tmp_path / "hf.json")
    assert EncodecFeatureExtractor.from_json_file(tmp_path / "hf.json").to_dict() == hf.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf.json", "ours.json"]  # no temporary left behind


def test_to_json_file_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "preprocessor_config.json"
    target.write_text("old")

    def replace_fails(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(OSError, match="disk full"):
        EncodecFeatureExtractor().save_pretrained(tmp_path)
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("do_normalize", True, "unknown feature extractor field 'do_normalize'"),
        ("feature_extractor_type", "MusicgenMelodyFeatureExtractor", "feature_extractor_type"),
        ("feature_size", 3, "feature_size"),
        ("padding_side", "middle", "padding_side"),
        ("padding_value", None, "padding_value"),
        ("overlap", 1.5, "overlap"),
        ("chunk_length_s", 0, "chunk_length_s"),
    ],
)
def test_strict_config(tmp_path, field, value, match):
    data = {**HFExtractor(**MONO).to_dict(), "processor_class": "MusicgenProcessor", field: value}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=match) as info:
        EncodecFeatureExtractor.from_pretrained(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path)), message


# ---------------------------------------------------------------------------------------------------------------------
# The processor.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tokenizer and HF's Encodec preprocessor_config.json, as a MusicGen Hub checkpoint has them."""
    path = pathlib.Path(save_tiny_tokenizer(tmp_path_factory.mktemp("musicgen")))
    HFExtractor(**MONO).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def processors(checkpoint):
    hf = HFProcessor(HFExtractor.from_pretrained(checkpoint), AutoTokenizer.from_pretrained(checkpoint))
    return MusicgenProcessor.from_pretrained(checkpoint), hf


PROCESSOR_CALLS = {
    "text": ((), dict(text=TEXTS, padding=True)),
    "text and audio": ((), dict(text=TEXTS, audio=[A, B], sampling_rate=32000, padding=True)),
    "audio only, default padding": ((), dict(audio=[A, B], sampling_rate=32000)),
    "positional audio": ((A,), dict(sampling_rate=32000)),
    "positional audio and text": ((A, TEXTS[:1]), dict(sampling_rate=32000)),
    "one int16 clip (cast: it is listed first)": ((), dict(audio=I16, sampling_rate=32000)),
    "a list of floats is one clip": ((), dict(audio=A.tolist(), sampling_rate=32000)),
    "nested lists are flattened": ((), dict(audio=[[A], [B]], sampling_rate=32000)),
    "max_length to both": (
        (),
        dict(text=TEXTS, audio=[A, B], sampling_rate=32000, padding="max_length", max_length=120),
    ),
    "audio truncation": ((), dict(audio=[A, B], sampling_rate=32000, truncation=True, max_length=80)),
    "text truncation": ((), dict(text=TEXTS, truncation=True, max_length=3, padding=True)),
    "no padding for equal clips": ((), dict(text=TEXTS[:1], audio=[A], sampling_rate=32000, padding=False)),
}


@pytest.mark.parametrize("return_tensors", ["np", None])
@pytest.mark.parametrize("case", list(PROCESSOR_CALLS))
def test_processor_matches_hf(processors, case, return_tensors):
    ours, hf = processors
    args, kwargs = PROCESSOR_CALLS[case]
    got = ours(*args, return_tensors=return_tensors, **kwargs)
    want = hf(*args, return_tensors=return_tensors, **kwargs)
    assert_same(got, want)


def test_processor_surface(processors, checkpoint):
    ours, _ = processors
    assert ours.sampling_rate == 32000 and isinstance(ours.feature_extractor, EncodecFeatureExtractor)
    out = ours(text=TEXTS, audio=[A, B], sampling_rate=32000, padding=True, return_tensors="pt")
    assert list(out) == ["input_ids", "attention_mask", "padding_mask", "input_values"]
    assert all(isinstance(v, np.ndarray) for v in out.values())
    assert out.input_values.shape == (2, 1, 100) and out.input_values.dtype == np.float32
    for bad, match in [
        ({"pad_to_multiple_of": 8}, "pad_to_multiple_of"),  # HF: TypeError from the extractor
        ({"return_attention_mask": True}, "return_attention_mask"),
        ({"bogus": 1}, "bogus"),  # HF: ignored with a warning
    ]:
        with pytest.raises(ValueError, match=match):
            ours(audio=[A], sampling_rate=32000, **bad)
    with pytest.raises(ValueError, match="pass text=, audio=, or both"):
        ours()
    # HF's quirk: a positional string is audio (HF tries to load it as a file or URL)
    with pytest.raises(TypeError, match="first positional argument of the processor is audio") as info:
        ours("80s pop track")
    assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match="list of int"):  # HF: TypeError too
        ours(audio=[1, 2, 3], sampling_rate=32000)


@pytest.mark.parametrize("padding_value", [0.0, 0.5])
def test_batch_decode_matches_hf(checkpoint, padding_value):
    import torch

    ours = MusicgenProcessor(
        EncodecFeatureExtractor(padding_value=padding_value), T5TextTokenizer.from_pretrained(checkpoint)
    )
    hf = HFProcessor(HFExtractor(padding_value=padding_value), AutoTokenizer.from_pretrained(checkpoint))
    audio = RNG.standard_normal((2, 1, 10)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    for args, kwargs in [
        ((audio,), {"padding_mask": mask}),
        ((), {"audio": audio, "padding_mask": mask}),
        ((audio,), {}),
        ((torch.from_numpy(audio),), {"padding_mask": torch.from_numpy(mask)}),
    ]:
        got = ours.batch_decode(*args, **kwargs)
        want = hf.batch_decode(*args, **kwargs)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, np.asarray(w))  # HF's arrays are float64 (through tolist); ours float32
            assert g.dtype == np.float32
    # stereo: HF's boolean index fails on two channels; ours drops the same samples from both
    stereo = RNG.standard_normal((2, 2, 10)).astype(np.float32)
    with pytest.raises(IndexError):
        hf.batch_decode(stereo, padding_mask=mask)
    got = ours.batch_decode(stereo, padding_mask=mask)
    if padding_value == 0.0:
        np.testing.assert_array_equal(got[0], stereo[0][:, [0, 1, 2, 6, 7, 8, 9]])
        np.testing.assert_array_equal(got[1], stereo[1])
    with pytest.raises(ValueError, match="tokenizer does not decode"):
        ours.batch_decode()
    with pytest.raises(ValueError, match=r"padding_mask must be \(batch, samples\)"):
        ours.batch_decode(audio, padding_mask=np.ones((2, 11)))


# ---------------------------------------------------------------------------------------------------------------------
# auto_processor: which processor a checkpoint wants.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_melody():
    """HF's melody feature extractor and processor, built with a do-nothing torchaudio (only saved, never called)."""
    import transformers.models.musicgen_melody.feature_extraction_musicgen_melody as module
    from transformers.models.musicgen_melody.processing_musicgen_melody import MusicgenMelodyProcessor as HFMelody

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "torchaudio", SimpleNamespace(transforms=SimpleNamespace(Spectrogram=dict)), raising=False)
        yield module.MusicgenMelodyFeatureExtractor, HFMelody


def _tokenizer_copy(checkpoint, folder):
    folder.mkdir()
    for name in os.listdir(checkpoint):
        if "tokenizer" in name or name.endswith(".model"):
            (folder / name).write_bytes((checkpoint / name).read_bytes())
    return folder


def test_auto_processor_reads_the_type_hf_writes(checkpoint, hf_melody, tmp_path):
    hf_melody_extractor, hf_melody_processor = hf_melody
    tok = AutoTokenizer.from_pretrained(checkpoint)
    assert json.loads((checkpoint / "preprocessor_config.json").read_text())["feature_extractor_type"] == (
        "EncodecFeatureExtractor"
    )
    assert type(auto_processor(checkpoint)) is MusicgenProcessor

    melody = _tokenizer_copy(checkpoint, tmp_path / "melody")
    hf_melody_extractor().save_pretrained(melody)  # writes "MusicgenMelodyFeatureExtractor"
    processor = auto_processor(melody)
    assert type(processor) is MusicgenMelodyProcessor and processor.feature_extractor.n_fft == 16384

    # transformers 5's processor.save_pretrained: processor_config.json with the extractor nested, no preprocessor
    HFProcessor(HFExtractor(feature_size=2, **MONO), tok).save_pretrained(tmp_path / "nested")
    assert not (tmp_path / "nested" / "preprocessor_config.json").exists()
    processor = auto_processor(tmp_path / "nested")
    assert type(processor) is MusicgenProcessor and processor.feature_extractor.feature_size == 2
    assert MusicgenProcessor.from_pretrained(tmp_path / "nested").feature_extractor.to_dict() == (
        HFExtractor.from_pretrained(tmp_path / "nested").to_dict()
    )
    hf_melody_processor(hf_melody_extractor(hop_length=2048), tok).save_pretrained(tmp_path / "nested_melody")
    processor = auto_processor(tmp_path / "nested_melody")
    assert type(processor) is MusicgenMelodyProcessor and processor.feature_extractor.hop_length == 2048


def test_auto_processor_without_a_type_and_its_errors(checkpoint, tmp_path):
    config = {k: v for k, v in HFExtractor(**MONO).to_dict().items() if k != "feature_extractor_type"}
    folder = _tokenizer_copy(checkpoint, tmp_path / "untyped")
    (folder / "preprocessor_config.json").write_text(json.dumps({**config, "processor_class": "MusicgenProcessor"}))
    assert type(auto_processor(folder)) is MusicgenProcessor
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="no feature_extractor_type"):
        auto_processor(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "musicgen"}))
    assert type(auto_processor(folder)) is MusicgenProcessor
    (folder / "preprocessor_config.json").write_text(json.dumps({"feature_extractor_type": "WhisperFeatureExtractor"}))
    with pytest.raises(ConfigError, match="'WhisperFeatureExtractor'; musicgen-jax has processors for") as info:
        auto_processor(folder)
    assert "\n" not in str(info.value)
    os.remove(folder / "preprocessor_config.json")
    with pytest.raises(ConfigError, match="no preprocessor_config.json"):
        auto_processor(folder)


def test_no_warning_when_the_rate_is_given(processors):
    ours, _ = processors
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours(text=TEXTS, audio=[A, B], sampling_rate=32000, padding=True)
