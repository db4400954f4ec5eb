"""The T5 text tokenizer, matching ``transformers.AutoTokenizer`` (T5Tokenizer, transformers 5) without transformers.

Two backends, chosen by the files of the tokenizer directory:

- ``tokenizer.json`` (preferred, like HF): read with the ``tokenizers`` library. HF's ``T5Tokenizer`` keeps only the
  file's Unigram vocabulary and its precompiled normalizer and rebuilds the rest (``T5Tokenizer.__init__``): the
  Unigram model with ``unk_id=2`` hard-coded, a ``WhitespaceSplit`` + ``Metaspace(prepend_scheme="always")``
  pre-tokenizer, and a post-processor appending ``</s>``. We rebuild it the same way, so an older tokenizer.json
  (e.g. a ``Metaspace``-only pre-tokenizer, which keeps a trailing ``▁``) tokenizes as HF 5 does, not as the file says.
- ``spiece.model``: encoded with ``sentencepiece``. HF converts it to the same Unigram pipeline; sentencepiece's own
  encoder agrees with that for Unigram models that add a dummy prefix and collapse whitespace, which we check.
  Special tokens (``</s>``, ``<pad>``, ``<unk>``, sentinels ``<extra_id_i>``) written in the text are matched first,
  as HF's added-token splitting does, and each piece of text between them is encoded separately.

Padding and truncation follow ``PreTrainedTokenizerBase._get_padding_truncation_strategies`` for single sequences.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Sequence

import numpy as np

from musicgen_jax.batch_feature import BatchEncoding

# transformers' VERY_LARGE_INTEGER (the default model_max_length) and LARGE_INTEGER (above which it means "unset").
_UNSET_MAX_LENGTH = int(1e30)
_LARGE_INTEGER = int(1e20)
_HF_UNK_ID = 2  # T5Tokenizer builds `Unigram(vocab, unk_id=2)` whatever the files say
_PADDING = {True: "longest", "longest": "longest", "max_length": "max_length", False: None, "do_not_pad": None}
_TRUNCATION = {
    True: True,
    "longest_first": True,
    "only_first": True,
    False: False,
    "do_not_truncate": False,
    None: None,
}
# Named special tokens: HF matches each one set in the config atomically in raw text.
_NAMED_SPECIALS = ("pad_token", "eos_token", "unk_token", "bos_token", "cls_token", "sep_token", "mask_token")
_CONFIG_FIELDS = frozenset(
    (
        *_NAMED_SPECIALS,
        "model_max_length",
        "padding_side",
        "truncation_side",
        "extra_ids",
        "additional_special_tokens",
        "extra_special_tokens",
        "added_tokens_decoder",
    )
)
# tokenizer_config.json fields that do not change T5's ids or masks (T5Tokenizer rebuilds its pipeline regardless).
_IGNORED_CONFIG = frozenset(
    """tokenizer_class processor_class clean_up_tokenization_spaces legacy add_prefix_space sp_model_kwargs backend
    is_local local_files_only name_or_path auto_map model_input_names unk_id tokenizer_file vocab_file""".split()
)


class T5TextTokenizer:
    """Text -> ``input_ids``/``attention_mask`` as HF's T5 tokenizer (``</s>`` appended, right padding by default).

    Build it with :meth:`from_pretrained`. ``encode_batch`` maps a list of strings to lists of ids *without*
    ``</s>``; this class adds it, then truncates and pads.
    """

    def __init__(
        self,
        encode_batch: Callable[[list[str]], list[list[int]]],
        *,
        pad_token_id: int,
        eos_token_id: int,
        model_max_length: int = _UNSET_MAX_LENGTH,
        padding_side: str = "right",
        truncation_side: str = "right",
    ):
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("right", "left"):
                raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
        self._encode_batch = encode_batch
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> T5TextTokenizer:
        """Loads a T5 tokenizer (``tokenizer.json`` or ``spiece.model`` + json configs) from a directory or Hub id."""
        from musicgen_jax import hub

        path = hub.resolve(path)
        config = _read_config(path)
        kwargs = dict(
            model_max_length=int(config.get("model_max_length", _UNSET_MAX_LENGTH)),
            padding_side=config.get("padding_side", "right"),
            truncation_side=config.get("truncation_side", "right"),
        )
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            encode, token_to_id = _tokenizers_backend(os.path.join(path, "tokenizer.json"), config)
        elif os.path.isfile(os.path.join(path, "spiece.model")):
            encode, token_to_id = _sentencepiece_backend(os.path.join(path, "spiece.model"), config)
        else:
            raise ValueError(f"{path}: no tokenizer.json or spiece.model found")
        return cls(
            encode,
            pad_token_id=token_to_id(config["pad_token"]),
            eos_token_id=token_to_id(config["eos_token"]),
            **kwargs,
        )

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_tensors: str | None = None,
        **unsupported,
    ) -> BatchEncoding:
        """Tokenizes one text or a batch, like HF's ``tokenizer(text, ...)`` for single (unpaired) sequences.

        Returns a :class:`BatchEncoding` ``{"input_ids", "attention_mask"}``: int64 arrays ``(B, W)`` with
        ``return_tensors="np"`` (a single string gives ``B = 1``), else Python lists (a list of ints for a single
        string).
        """
        if unsupported:
            name = next(iter(unsupported))
            raise ValueError(f"T5TextTokenizer does not support the argument {name!r}")
        if not isinstance(padding, (bool, str)) or padding not in _PADDING:
            raise ValueError(f"padding must be one of {list(_PADDING)}, got {padding!r}")
        if not isinstance(truncation, (bool, str, type(None))) or truncation not in _TRUNCATION:
            raise ValueError(f"truncation must be one of {list(_TRUNCATION)}, got {truncation!r}")
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors must be None or 'np', got {return_tensors!r}")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("text must be a string or a non-empty list of strings")

        if max_length is not None and padding is False and truncation is None:
            truncation = True  # HF: max_length alone turns truncation on (only for padding=False, not "do_not_pad")
        pad_to, truncate_to = self._lengths(_PADDING[padding], _TRUNCATION[truncation], max_length)
        rows = self._encode_batch(texts)
        if truncate_to:  # tokenizers skips truncation when max_length is 0, and so does HF
            keep = max(truncate_to - int(add_special_tokens), 0)  # room is left for </s>
            rows = [
                r if len(r) <= keep else (r[:keep] if self.truncation_side == "right" else r[len(r) - keep :])
                for r in rows
            ]
        if add_special_tokens:
            rows = [[*r, self.eos_token_id] for r in rows]
        masks = [[1] * len(r) for r in rows]
        if pad_to is not None:
            length = max(len(r) for r in rows) if pad_to == "longest" else pad_to
            rows = [self._pad(r, length, self.pad_token_id) for r in rows]
            masks = [self._pad(m, length, 0) for m in masks]

        if return_tensors is None:
            return BatchEncoding(
                {"input_ids": rows[0] if single else rows, "attention_mask": masks[0] if single else masks}
            )
        if len({len(r) for r in rows}) > 1:
            raise ValueError("sequences have different lengths; pass padding=True (or 'max_length') to get an array")
        return BatchEncoding({"input_ids": np.asarray(rows, np.int64), "attention_mask": np.asarray(masks, np.int64)})

    def _lengths(self, padding: str | None, truncation: bool | None, max_length: int | None):
        """HF's strategy resolution: returns (pad target: None, "longest" or a length; truncation length or None)."""
        if max_length is None:
            limit = None if self.model_max_length > _LARGE_INTEGER else self.model_max_length
            if padding == "max_length" and limit is None:
                padding = None  # HF silently does not pad without a usable length
            max_length = limit
        if truncation and max_length is None:
            truncation = False
        pad_to = max_length if padding == "max_length" else padding
        return pad_to, (max_length if truncation else None)

    def _pad(self, row: list[int], length: int, value: int) -> list[int]:
        fill = [value] * (length - len(row))
        return row + fill if self.padding_side == "right" else fill + row


def _token_content(token) -> str:
    """A special token from tokenizer_config.json: a string or an AddedToken dict ``{"content": ...}``."""
    return token["content"] if isinstance(token, dict) else str(token)


def _read_config(path: str) -> dict:
    """tokenizer_config.json (falling back to special_tokens_map.json) with T5 defaults; unknown fields raise."""
    config: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, encoding="utf-8") as f:
                config.update(json.load(f))
    for key in config:
        if key not in _CONFIG_FIELDS and key not in _IGNORED_CONFIG:
            raise ValueError(f"{path}: unsupported tokenizer config field {key!r} (= {config[key]!r})")
    out = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "extra_ids": 100, **config}
    for key in _NAMED_SPECIALS:
        if out.get(key) is not None:
            out[key] = _token_content(out[key])
    return out


def _special_strings(config: dict) -> list[str]:
    """Every string HF matches atomically in raw text, except sentinels: named specials and configured extras."""
    tokens = [config[key] for key in _NAMED_SPECIALS if config.get(key) is not None]
    extra = config.get("extra_special_tokens") or []
    for group in (
        config.get("additional_special_tokens") or [],
        extra.values() if isinstance(extra, dict) else extra,
        (config.get("added_tokens_decoder") or {}).values(),
    ):
        tokens += [_token_content(t) for t in group]
    return list(dict.fromkeys(tokens))


def _tokenizers_backend(file: str, config: dict):
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import Unigram

    with open(file, encoding="utf-8") as f:
        data = json.load(f)
    model = data.get("model") or {}
    if model.get("type") != "Unigram":
        raise ValueError(f"{file}: a T5 tokenizer needs a Unigram model, found {model.get('type')!r}")
    vocab = [(piece, float(score)) for piece, score in model["vocab"]]
    _check_unk(vocab[_HF_UNK_ID][0] if len(vocab) > _HF_UNK_ID else None, config, file)
    tok = Tokenizer(Unigram(vocab, unk_id=_HF_UNK_ID, byte_fallback=False))
    charsmap = _precompiled_charsmap(data.get("normalizer"))
    if charsmap is not None:
        tok.normalizer = normalizers.Precompiled(base64.b64decode(charsmap))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    for entry in sorted(data.get("added_tokens") or [], key=lambda e: e["id"]):
        flags = {k: entry.get(k, False) for k in ("single_word", "lstrip", "rstrip", "normalized", "special")}
        (tok.add_special_tokens if flags["special"] else tok.add_tokens)([AddedToken(entry["content"], **flags)])
        if tok.token_to_id(entry["content"]) != entry["id"]:
            raise ValueError(f"{file}: added token {entry['content']!r} should have id {entry['id']}")
    for content in _special_strings(config) + _sentinels(config):
        if tok.token_to_id(content) is None:
            raise ValueError(f"{file}: special token {content!r} is not in the vocabulary")
        tok.add_special_tokens([AddedToken(content, special=True, normalized=False)])

    def encode_batch(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

    return encode_batch, _lookup(tok.token_to_id, file)


def _sentencepiece_backend(file: str, config: dict):
    import sentencepiece

    _check_sentencepiece_model(file)
    sp = sentencepiece.SentencePieceProcessor(model_file=file)
    size = sp.get_piece_size()
    _check_unk(sp.id_to_piece(_HF_UNK_ID) if size > _HF_UNK_ID else None, config, file)
    ids = {sp.id_to_piece(i): i for i in range(size) if sp.is_control(i) or sp.is_unknown(i)}
    # HF (T5Converter.convert_from_spm) appends the sentinels after the pieces, highest index first.
    extra = int(config["extra_ids"])
    ids.update({f"<extra_id_{i}>": size + extra - 1 - i for i in range(extra)})
    for content in _special_strings(config):
        piece = sp.piece_to_id(content)
        if content not in ids and sp.id_to_piece(piece) != content:
            raise ValueError(f"{file}: special token {content!r} is not in the vocabulary")
        ids.setdefault(content, piece)
    # Leftmost-longest match, as the added-token splitter of `tokenizers` does.
    pattern = re.compile("|".join(re.escape(t) for t in sorted(ids, key=len, reverse=True)))

    def encode(text: str) -> list[int]:
        out, start = [], 0
        for match in pattern.finditer(text):
            out += sp.encode(text[start : match.start()]) + [ids[match.group()]]
            start = match.end()
        return out + sp.encode(text[start:])

    def encode_batch(texts: list[str]) -> list[list[int]]:
        return [encode(t) for t in texts]

    def token_to_id(token: str) -> int | None:
        return ids.get(token)

    return encode_batch, _lookup(token_to_id, file)


def _check_sentencepiece_model(file: str) -> None:
    """Refuses sentencepiece settings under which sentencepiece's encoder and HF's conversion disagree."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise ValueError(
            f"{file}: reading a sentencepiece model's settings needs protobuf (pip install protobuf)"
        ) from None
    proto = sentencepiece_model_pb2.ModelProto()
    with open(file, "rb") as f:
        proto.ParseFromString(f.read())
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    checks = (
        # HF's T5Tokenizer runs every spiece.model as Unigram over the piece scores, also a BPE one.
        ("model_type", sentencepiece_model_pb2.TrainerSpec.ModelType.Name(trainer.model_type), "UNIGRAM"),
        ("byte_fallback", trainer.byte_fallback, False),
        ("add_dummy_prefix", normalizer.add_dummy_prefix, True),
        ("remove_extra_whitespaces", normalizer.remove_extra_whitespaces, True),
    )
    for name, value, wanted in checks:
        if value != wanted:
            raise ValueError(
                f"{file}: sentencepiece {name}={value!r} is not supported (HF's T5Tokenizer assumes "
                f"{wanted!r}); provide a tokenizer.json instead"
            )


def _check_unk(piece_at_2: str | None, config: dict, file: str) -> None:
    if piece_at_2 != config["unk_token"]:
        raise ValueError(
            f"{file}: HF's T5Tokenizer maps unknown text to id 2, which is {piece_at_2!r}, not the unk "
            f"token {config['unk_token']!r}"
        )


def _sentinels(config: dict) -> list[str]:
    return [f"<extra_id_{i}>" for i in range(int(config["extra_ids"]))]


def _precompiled_charsmap(normalizer: dict | None) -> str | None:
    """The base64 charsmap of a ``Precompiled`` normalizer, alone or inside a ``Sequence`` (what HF keeps)."""
    if not normalizer:
        return None
    for item in normalizer.get("normalizers", [normalizer]) if normalizer.get("type") == "Sequence" else [normalizer]:
        if item.get("type") == "Precompiled" and item.get("precompiled_charsmap"):
            return item["precompiled_charsmap"]
    return None


def _lookup(token_to_id: Callable[[str], int | None], file: str) -> Callable[[str], int]:
    def get(token: str) -> int:
        value = token_to_id(token)
        if value is None:
            raise ValueError(f"{file}: token {token!r} is not in the vocabulary")
        return value

    return get
