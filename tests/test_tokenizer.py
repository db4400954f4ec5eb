"""Tokenizer parity with `transformers.AutoTokenizer` on tiny sentencepiece models trained in the test."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoTokenizer

from musicgen_jax.tokenizer import T5TextTokenizer
from tests.helpers import CORPUS, _train, _write_config

# Edge cases: specials written in the text, unknown characters (fused into one <unk>), NFKC normalization, runs of
# whitespace, leading/trailing spaces, empty strings.
TEXTS = [
    "a calm piano melody",
    "80s pop track with bassy drums and synth",
    "  leading and   repeated   spaces  ",
    "trailing space ",
    "hello</s>world <pad> x<unk>y",
    "Unknown ΩΩ€ chars ZZZ",
    "ＦＵＬＬwidth ｔｅｘｔ and café naïve",
    "tab\tand\nnewline",
    "",
    " ",
    "<extra_id_0> sentinel <extra_id_2>",
]

CALLS = [
    {},
    {"padding": True},
    {"padding": "longest", "truncation": True, "max_length": 6},
    {"padding": "max_length", "max_length": 30},
    {"padding": "max_length", "truncation": True, "max_length": 7},
    {"max_length": 4},  # max_length alone turns truncation on
    {"padding": "do_not_pad", "max_length": 4},  # ... but not with an explicit "do_not_pad"
    {"padding": True, "max_length": 4},  # ignored: padding=True without truncation
    {"truncation": True, "max_length": 1},
    {"truncation": "only_first", "max_length": 0},  # 0 means no truncation
    {"truncation": True},  # no model_max_length: no truncation
    {"padding": "max_length"},  # no model_max_length: no padding
    {"add_special_tokens": False, "padding": True},
    {"add_special_tokens": False, "truncation": "longest_first", "max_length": 3, "padding": True},
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    spm_dir = _write_config(_train(str(root / "spm")), extra_ids=0)
    hf = AutoTokenizer.from_pretrained(spm_dir)
    json_dir = str(root / "json")
    hf.save_pretrained(json_dir)
    assert os.path.isfile(os.path.join(json_dir, "tokenizer.json"))
    # A tokenizer.json in the older layout (Replace normalizer, Metaspace-only pre-tokenizer): HF 5 rebuilds the
    # pipeline and ignores both; taken literally the file would keep a trailing "▁" for "trailing space ".
    old_dir = str(root / "old")
    os.makedirs(old_dir)
    with open(os.path.join(json_dir, "tokenizer.json")) as f:
        data = json.load(f)
    replace = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
    data["normalizer"] = {"type": "Sequence", "normalizers": [data["normalizer"], replace]}
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    with open(os.path.join(old_dir, "tokenizer.json"), "w") as f:
        json.dump(data, f)
    _write_config(old_dir, extra_ids=0)
    # Sentinels appended by HF (extra_ids), a model_max_length, left padding and truncation.
    extra_dir = str(root / "extra")
    os.makedirs(extra_dir)
    os.link(os.path.join(spm_dir, "spiece.model"), os.path.join(extra_dir, "spiece.model"))
    _write_config(extra_dir, extra_ids=3, model_max_length=6, padding_side="left", truncation_side="left")
    return {"spiece.model": spm_dir, "tokenizer.json": json_dir, "old tokenizer.json": old_dir, "extra_ids": extra_dir}


def _pair(dirs, kind):
    return T5TextTokenizer.from_pretrained(dirs[kind]), AutoTokenizer.from_pretrained(dirs[kind])


def _reference(hf, text, **kwargs):
    out = hf(text, **kwargs)
    return {key: out[key] for key in ("input_ids", "attention_mask")}


@pytest.mark.parametrize("kind", ["spiece.model", "tokenizer.json", "old tokenizer.json", "extra_ids"])
def test_single_texts_match_hf(dirs, kind):
    ours, hf = _pair(dirs, kind)
    for text in TEXTS:
        assert ours(text) == _reference(hf, text), text
        got, ref = ours(text, return_tensors="np"), _reference(hf, text, return_tensors="np")
        for key in ref:
            assert got[key].dtype == np.int64 and np.array_equal(got[key], ref[key]), (text, key)


@pytest.mark.parametrize("kind", ["spiece.model", "tokenizer.json", "old tokenizer.json", "extra_ids"])
@pytest.mark.parametrize("kwargs", CALLS, ids=[str(c) for c in CALLS])
def test_batches_match_hf(dirs, kind, kwargs):
    ours, hf = _pair(dirs, kind)
    ref = _reference(hf, TEXTS, **kwargs)
    assert ours(TEXTS, **kwargs) == ref
    if len({len(r) for r in ref["input_ids"]}) == 1:
        got, ref_np = ours(TEXTS, return_tensors="np", **kwargs), _reference(hf, TEXTS, return_tensors="np", **kwargs)
        for key in ref_np:
            assert got[key].dtype == np.int64 and np.array_equal(got[key], ref_np[key]), key
    else:
        with pytest.raises(ValueError, match="different lengths"):
            ours(TEXTS, return_tensors="np", **kwargs)


@pytest.mark.parametrize("kind", ["spiece.model", "old tokenizer.json"])
def test_random_texts_match_hf(dirs, kind):
    ours, hf = _pair(dirs, kind)
    rng = random.Random(0)
    words = " ".join(CORPUS).split()
    pieces = [
        *"abcxyzABZ.,!?'-019 ",
        "  ",
        "\t",
        "\n",
        "é",
        "Ω",
        "ｆ",
        "ß",
        "ﬁ",
        "…",
        "\u3000",
        "</s>",
        "<pad>",
        "<unk>",
    ]
    texts = []
    for _ in range(300):
        parts = [
            rng.choice(words) if rng.random() < 0.6 else "".join(rng.choices(pieces, k=rng.randint(1, 5)))
            for _ in range(rng.randint(0, 10))
        ]
        texts.append("".join(p + rng.choice([" ", " ", "", "  ", "\t"]) for p in parts))
    assert ours(texts, padding=True) == _reference(hf, texts, padding=True)


def test_bpe_sentencepiece_model_is_refused(tmp_path):
    # HF runs a BPE spiece.model as Unigram over its piece scores; sentencepiece's own BPE encoder disagrees.
    folder = _write_config(_train(str(tmp_path / "bpe"), model_type="bpe"), extra_ids=0)
    with pytest.raises(ValueError, match="model_type='BPE' is not supported"):
        T5TextTokenizer.from_pretrained(folder)


def test_bad_arguments_are_named(dirs):
    ours = T5TextTokenizer.from_pretrained(dirs["spiece.model"])
    with pytest.raises(ValueError, match="'pad_to_multiple_of'"):
        ours("x", pad_to_multiple_of=8)
    with pytest.raises(ValueError, match="padding must be one of"):
        ours("x", padding="shortest")
    with pytest.raises(ValueError, match="return_tensors must be None or 'np'"):
        ours("x", return_tensors="pt")
    _write_config(dirs["extra_ids"], extra_ids=3, model_max_length=6, fancy_option=True)
    try:
        with pytest.raises(ValueError, match="unsupported tokenizer config field 'fancy_option'"):
            T5TextTokenizer.from_pretrained(dirs["extra_ids"])
    finally:
        _write_config(dirs["extra_ids"], extra_ids=3, model_max_length=6, padding_side="left", truncation_side="left")


def test_no_transformers_at_runtime(dirs):
    code = (
        "import sys; from musicgen_jax.tokenizer import T5TextTokenizer; "
        f"T5TextTokenizer.from_pretrained({dirs['tokenizer.json']!r})(['a b', 'c'], padding=True); "
        f"T5TextTokenizer.from_pretrained({dirs['spiece.model']!r})('a b'); "
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("return_tensors", [None, "np"])
def test_output_is_a_batch_encoding(dirs, return_tensors):
    import pickle

    from musicgen_jax import BatchEncoding

    ours, hf = _pair(dirs, "tokenizer.json")
    got = ours(TEXTS[:3], padding=True, return_tensors=return_tensors)
    ref = hf(TEXTS[:3], padding=True, return_tensors=return_tensors)
    assert isinstance(got, BatchEncoding) and isinstance(got, dict)
    assert list(got.keys()) == ["input_ids", "attention_mask"] and got.data is got
    for key in got:
        assert getattr(got, key) is got[key]
        assert np.array_equal(getattr(got, key), getattr(ref, key))  # HF's attribute access, same values
    with pytest.raises(AttributeError, match="'token_type_ids'"):
        got.token_type_ids  # noqa: B018
    assert got.to("cpu") is got and got.to("cuda") is got

    def encode_text(input_ids, attention_mask):  # takes these keywords, as model.generate does
        return input_ids, attention_mask

    assert encode_text(**got) == (got["input_ids"], got["attention_mask"])
    back = pickle.loads(pickle.dumps(got))
    assert type(back) is BatchEncoding and back.keys() == got.keys()
    for key in got:
        assert np.array_equal(back[key], got[key])
    single = ours("a calm piano melody")
    assert isinstance(single, BatchEncoding) and single.input_ids == hf("a calm piano melody").input_ids
