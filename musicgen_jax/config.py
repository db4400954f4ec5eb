"""Frozen, hashable configs for every part of MusicGen Melody, read strictly from HF ``config.json`` files.

Each dataclass keeps HF's field names (a user of ``transformers`` recognises them) and HF's defaults (an absent
field takes the value ``transformers`` would give it). Reading is strict: a field that would change the computation
and that we do not implement, or a field we have never heard of, raises :class:`ConfigError` naming the field.
Bookkeeping fields that change nothing (``architectures``, ``transformers_version``, ...) are accepted and dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A config file or field that musicgen-jax cannot honour."""


# Fields of HF's `PretrainedConfig` base class (and of older transformers releases) that describe bookkeeping,
# training-time outputs or generation defaults, none of which changes a forward pass.
_BOOKKEEPING = frozenset(
    """
    _name_or_path _commit_hash _attn_implementation _attn_implementation_autoset _from_model_config
    transformers_version architectures model_type torch_dtype dtype use_bfloat16 torchscript return_dict
    output_hidden_states output_attentions output_scores return_dict_in_generate use_cache is_encoder_decoder
    is_decoder add_cross_attention cross_attention_hidden_size tie_encoder_decoder chunk_size_feed_forward
    finetuning_task id2label label2id num_labels problem_type tokenizer_class prefix task_specific_params
    tf_legacy_loss initializer_factor initializer_range sep_token_id decoder_start_token_id eos_token_id
    max_length min_length do_sample early_stopping num_beams num_beam_groups diversity_penalty temperature
    top_k top_p typical_p repetition_penalty length_penalty no_repeat_ngram_size encoder_no_repeat_ngram_size
    bad_words_ids num_return_sequences forced_bos_token_id forced_eos_token_id remove_invalid_values
    exponential_decay_length_penalty suppress_tokens begin_suppress_tokens gradient_checkpointing
    """.split()
)


# Fields of our configs that never come from nor go to ``config.json`` (a file that names one is refused as an unknown
# field): runtime choices (``matmul_precision``) and what the model family implies (``cross_attention``: the plain
# MusicGen decoder attends to the text states in every layer; MusicGen Melody's reads them as a prefix).
RUNTIME_FIELDS = frozenset({"matmul_precision", "cross_attention"})

# ``matmul_precision`` values, as ``jax.lax.Precision`` names. None (the default) picks by the weights' dtype: float32
# weights compute with "highest" (exact float32 products on every backend, as PyTorch's float32 with TF32 off),
# bfloat16 weights with one bfloat16 pass accumulated in float32. "high" (bf16_3x on TPU, TF32 on GPU) and "default"
# (one bf16 pass on TPU, TF32 on GPU) trade exactness in float32 for speed.
MATMUL_PRECISIONS = ("highest", "high", "default")


def _check_matmul_precision(value, where: str) -> None:
    _require(
        value is None or value in MATMUL_PRECISIONS,
        where,
        f"matmul_precision must be None (by dtype) or one of {', '.join(MATMUL_PRECISIONS)}, got {value!r}",
    )


def _read_fields(cls, data: Mapping[str, Any], where: str, *, ignore: frozenset = frozenset(), rename=None):
    """Keyword arguments for ``cls`` from ``data``; unknown fields raise, bookkeeping is dropped."""
    rename = rename or {}
    names = {f.name for f in dataclasses.fields(cls)} - RUNTIME_FIELDS
    kwargs = {}
    for key, value in data.items():
        key = rename.get(key, key)
        if key in names:
            kwargs[key] = value
        elif key in ignore or key in _BOOKKEEPING:
            continue
        else:
            raise ConfigError(
                f"{where}: unknown config field {key!r} (= {value!r}); musicgen-jax does not implement it"
            )
    if kwargs.get("pruned_heads"):
        raise ConfigError(f"{where}: pruned_heads={kwargs['pruned_heads']!r} is not supported")
    return kwargs


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {message}")


def _frozen(value):
    """Lists from JSON become tuples so that configs stay hashable (static under jit)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """The MusicGen decoder over K EnCodec codebooks (HF ``MusicgenMelodyDecoderConfig``)."""

    vocab_size: int = 2048
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    ffn_dim: int = 4096
    num_codebooks: int = 4
    audio_channels: int = 1
    max_position_embeddings: int = 2048
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layerdrop: float = 0.0
    # HF builds `embed_scale` from this flag but never multiplies by it in the decoder's forward
    # (MusicgenMelodyDecoder.forward); we accept the field and, for parity, ignore it too.
    scale_embedding: bool = False
    tie_word_embeddings: bool = False
    pad_token_id: int = 2048
    bos_token_id: int = 2048
    matmul_precision: str | None = None  # a runtime choice (RUNTIME_FIELDS), not read from config.json
    cross_attention: bool = False  # set by the family (RUNTIME_FIELDS): True for plain MusicGen

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, data: Mapping[str, Any], where: str = "decoder", cross_attention: bool = False) -> DecoderConfig:
        if cross_attention:
            # HF MusicgenDecoderConfig: a cross_attention_hidden_size other than the decoder's width would skip
            # enc_to_dec_proj and feed other-width states to the hidden_size-wide k/v projections.
            width = data.get("cross_attention_hidden_size")
            _require(
                width in (None, data.get("hidden_size", cls.hidden_size)),
                where,
                f"cross_attention_hidden_size={width!r} is not supported (only None or hidden_size)",
            )
        ignore = frozenset({"pruned_heads", "cross_attention_hidden_size"} if cross_attention else {"pruned_heads"})
        kwargs = _read_fields(cls, data, where, ignore=ignore)
        config = cls(**kwargs, cross_attention=cross_attention)
        config.validate(where)
        return config

    def validate(self, where: str = "decoder") -> None:
        _require(self.audio_channels in (1, 2), where, f"audio_channels must be 1 or 2, got {self.audio_channels}")
        _require(
            self.hidden_size % self.num_attention_heads == 0,
            where,
            f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}",
        )
        _require(
            self.audio_channels == 1 or self.num_codebooks % 2 == 0,
            where,
            f"a stereo decoder needs an even num_codebooks, got {self.num_codebooks}",
        )
        _require(
            self.activation_function in ACTIVATIONS,
            where,
            f"activation_function {self.activation_function!r} is not supported (supported: {sorted(ACTIVATIONS)})",
        )
        _require(self.layerdrop == 0, where, f"layerdrop={self.layerdrop} is not supported (only 0.0)")
        _require(not self.tie_word_embeddings, where, "tie_word_embeddings=True is not supported for the decoder")
        _check_matmul_precision(self.matmul_precision, where)


@dataclasses.dataclass(frozen=True)
class T5Config:
    """The frozen T5 text encoder (HF ``T5Config``; only the encoder stack is used)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    pad_token_id: int = 0
    matmul_precision: str | None = None  # a runtime choice (RUNTIME_FIELDS), not read from config.json

    @property
    def is_gated_act(self) -> bool:
        return self.feed_forward_proj.split("-")[0] == "gated"

    @property
    def dense_act_fn(self) -> str:
        # HF T5Config.__post_init__: "gated-gelu" means the tanh approximation ("gelu_new"), for backwards
        # compatibility with T5 v1.1 checkpoints.
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_hf(cls, data: Mapping[str, Any], where: str = "text_encoder") -> T5Config:
        # `dense_act_fn`/`is_gated_act` are derived from `feed_forward_proj` by HF on load; the rest concern the T5
        # decoder stack or training heads, which MusicGen never runs.
        ignore = frozenset(
            """num_decoder_layers dense_act_fn is_gated_act classifier_dropout scale_decoder_outputs
            tie_word_embeddings n_positions output_past pruned_heads""".split()
        )
        config = cls(**_read_fields(cls, data, where, ignore=ignore))
        config.validate(where)
        return config

    def validate(self, where: str = "text_encoder") -> None:
        parts = self.feed_forward_proj.split("-")
        _require(
            len(parts) == 1 or (len(parts) == 2 and parts[0] == "gated"),
            where,
            f"feed_forward_proj {self.feed_forward_proj!r} is not of the form 'ACT' or 'gated-ACT'",
        )
        _require(
            self.dense_act_fn in ACTIVATIONS,
            where,
            f"feed_forward_proj activation {self.dense_act_fn!r} is not supported (supported: {sorted(ACTIVATIONS)})",
        )
        _check_matmul_precision(self.matmul_precision, where)


@dataclasses.dataclass(frozen=True)
class EncodecConfig:
    """The EnCodec neural codec (HF ``EncodecConfig``); MusicGen Melody ships the 32 kHz model."""

    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)
    sampling_rate: int = 24000
    audio_channels: int = 1
    normalize: bool = False
    chunk_length_s: float | None = None
    overlap: float | None = None
    hidden_size: int = 128
    num_filters: int = 32
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
    norm_type: str = "weight_norm"
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "reflect"
    compress: int = 2
    num_lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    codebook_size: int = 1024
    codebook_dim: int | None = None
    use_conv_shortcut: bool = True

    def __post_init__(self):
        object.__setattr__(self, "target_bandwidths", _frozen(list(self.target_bandwidths)))
        object.__setattr__(self, "upsampling_ratios", _frozen(list(self.upsampling_ratios)))
        if self.codebook_dim is None:  # HF: codebook_dim defaults to hidden_size
            object.__setattr__(self, "codebook_dim", self.hidden_size)

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.upsampling_ratios))

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sampling_rate / self.hop_length)

    @property
    def codebook_nbits(self) -> int:
        return math.ceil(math.log2(self.codebook_size))

    @property
    def num_quantizers(self) -> int:
        # HF EncodecConfig.num_quantizers: enough codebooks for the last (largest) bandwidth. Tiny test configs can
        # give 0; HF then builds a quantizer without codebooks, and so do we (such a codec can only decode nothing).
        return int(1000 * self.target_bandwidths[-1] // (self.frame_rate * self.codebook_nbits))

    @property
    def chunk_length(self) -> int | None:
        return None if self.chunk_length_s is None else int(self.chunk_length_s * self.sampling_rate)

    @property
    def chunk_stride(self) -> int | None:
        if self.chunk_length_s is None or self.overlap is None:
            return None
        return max(1, int((1.0 - self.overlap) * self.chunk_length))

    @classmethod
    def from_hf(cls, data: Mapping[str, Any], where: str = "audio_encoder") -> EncodecConfig:
        config = cls(**_read_fields(cls, data, where, ignore=frozenset({"pruned_heads"})))
        config.validate(where)
        return config

    def validate(self, where: str = "audio_encoder") -> None:
        _require(self.audio_channels in (1, 2), where, f"audio_channels must be 1 or 2, got {self.audio_channels}")
        _require(
            self.norm_type in ("weight_norm", "time_group_norm"),
            where,
            f"norm_type {self.norm_type!r} is not supported (weight_norm, time_group_norm)",
        )
        _require(self.pad_mode in ("reflect", "constant"), where, f"pad_mode {self.pad_mode!r} is not supported")
        # HF EncodecModel.__init__ raises for these; EncodecConvTranspose1d for the trim ratio.
        _require(
            self.codebook_size > 0 and self.codebook_size & (self.codebook_size - 1) == 0,
            where,
            f"codebook_size must be a power of 2, got {self.codebook_size}",
        )
        _require(
            self.use_causal_conv or self.trim_right_ratio == 1.0,
            where,
            f"trim_right_ratio={self.trim_right_ratio} needs use_causal_conv=True (HF refuses it too)",
        )
        # HF's quantizer multiplies hidden_size-wide encoder outputs by codebook_dim-wide codewords.
        _require(
            self.codebook_dim == self.hidden_size,
            where,
            f"codebook_dim {self.codebook_dim} must equal hidden_size {self.hidden_size}",
        )
        # Chunked encoding (the 48 kHz EnCodec) returns codes per overlapping chunk and overlap-adds the decoded
        # chunks; MusicGen's 32 kHz codec never chunks, and musicgen-jax does not implement it.
        _require(
            self.chunk_length_s is None,
            where,
            f"chunk_length_s={self.chunk_length_s} (chunked encoding with overlap) is not supported; only "
            "chunk_length_s=None (the whole input in one frame, as in MusicGen's 32 kHz codec)",
        )


def _check_sub_configs(data: Mapping[str, Any], where: str, model_type: str) -> None:
    """The composite config's ``model_type`` and its three sub-configs (present, of the supported kinds)."""
    found = data.get("model_type")
    if found != model_type:
        raise ConfigError(f"{where}: model_type is {found!r}, expected {model_type!r}")
    for part, expected in (("text_encoder", "t5"), ("audio_encoder", "encodec"), ("decoder", None)):
        if part not in data or not isinstance(data[part], Mapping):
            raise ConfigError(f"{where}: the {part!r} sub-config is missing")
        sub_type = data[part].get("model_type")
        if expected is not None and sub_type not in (None, expected):
            raise ConfigError(f"{where}: {part}.model_type is {sub_type!r}; only {expected!r} is supported")


def _read_composite(cls, data: Mapping[str, Any], where: str, model_type: str, cross_attention: bool):
    """A composite config (either family) from HF json: its own fields, then the three parts, strictly."""
    _check_sub_configs(data, where, model_type)
    kwargs = _read_fields(cls, data, where)
    kwargs["text_encoder"] = T5Config.from_hf(data["text_encoder"], f"{where}: text_encoder")
    kwargs["audio_encoder"] = EncodecConfig.from_hf(data["audio_encoder"], f"{where}: audio_encoder")
    kwargs["decoder"] = DecoderConfig.from_hf(data["decoder"], f"{where}: decoder", cross_attention=cross_attention)
    config = cls(**kwargs)
    if config.decoder.audio_channels == 2 and config.audio_encoder.audio_channels != 1:
        raise ConfigError(f"{where}: a stereo decoder decodes each channel with a mono codec")
    return config


def _plain(config, model_type: str) -> dict:
    """A sub-config as HF json (tuples as lists, our own fields left out)."""
    data = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in dataclasses.asdict(config).items()
        if k not in RUNTIME_FIELDS
    }
    return {"model_type": model_type, **data}


@dataclasses.dataclass(frozen=True)
class MusicgenMelodyConfig:
    """The composite model: T5 text encoder, EnCodec codec, decoder, and the chroma conditioner's sizes."""

    text_encoder: T5Config = T5Config()
    audio_encoder: EncodecConfig = EncodecConfig()
    decoder: DecoderConfig = DecoderConfig()
    num_chroma: int = 12
    chroma_length: int = 235

    model_type = "musicgen_melody"  # a class attribute, not a field

    @property
    def sampling_rate(self) -> int:
        return self.audio_encoder.sampling_rate

    @property
    def has_text_projection(self) -> bool:
        # HF creates `enc_to_dec_proj` only when the sizes differ.
        return self.text_encoder.d_model != self.decoder.hidden_size

    @property
    def has_chroma_projection(self) -> bool:
        # HF creates `audio_enc_to_dec_proj` only when the sizes differ.
        return self.num_chroma != self.decoder.hidden_size

    @classmethod
    def from_hf(cls, data: Mapping[str, Any], where: str = "config.json") -> MusicgenMelodyConfig:
        return _read_composite(cls, data, where, "musicgen_melody", cross_attention=False)

    @property
    def matmul_precision(self) -> str | None:
        """The matmul precision of the text encoder and decoder (see :data:`MATMUL_PRECISIONS`)."""
        return self.decoder.matmul_precision

    def with_matmul_precision(self, matmul_precision: str | None) -> MusicgenMelodyConfig:
        """This config computing its T5 and decoder matmuls at ``matmul_precision`` (None: by the weights' dtype).

        EnCodec, the chroma filter bank and the resampler always use "highest": their outputs feed argmaxes (codes,
        chroma bins) where a near tie must resolve as in PyTorch."""
        _check_matmul_precision(matmul_precision, "matmul_precision")
        return dataclasses.replace(
            self,
            text_encoder=dataclasses.replace(self.text_encoder, matmul_precision=matmul_precision),
            decoder=dataclasses.replace(self.decoder, matmul_precision=matmul_precision),
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> MusicgenMelodyConfig:
        file = os.path.join(path, "config.json") if os.path.isdir(path) else os.fspath(path)
        return cls.from_hf(read_json(file), where=file)

    def to_hf(self) -> dict:
        """A HF ``config.json`` dict that :meth:`from_hf` (and transformers) read back to this config."""

        return {
            "model_type": "musicgen_melody",
            "text_encoder": _plain(self.text_encoder, "t5"),
            "audio_encoder": _plain(self.audio_encoder, "encodec"),
            "decoder": _plain(self.decoder, "musicgen_melody_decoder"),
            "num_chroma": self.num_chroma,
            "chroma_length": self.chroma_length,
        }


@dataclasses.dataclass(frozen=True)
class MusicgenConfig:
    """The plain MusicGen model (HF ``MusicgenConfig``): T5 text encoder, EnCodec codec, and a decoder that attends to
    the (projected) text states through cross-attention in every layer. No chroma."""

    text_encoder: T5Config = T5Config()
    audio_encoder: EncodecConfig = EncodecConfig()
    decoder: DecoderConfig = DecoderConfig(cross_attention=True)

    model_type = "musicgen"  # a class attribute, not a field
    num_chroma = 0  # no melody conditioner
    has_chroma_projection = False

    def __post_init__(self):
        if not self.decoder.cross_attention:
            object.__setattr__(self, "decoder", dataclasses.replace(self.decoder, cross_attention=True))

    @property
    def sampling_rate(self) -> int:
        return self.audio_encoder.sampling_rate

    @property
    def has_text_projection(self) -> bool:
        # HF creates `enc_to_dec_proj` only when the sizes differ.
        return self.text_encoder.d_model != self.decoder.hidden_size

    matmul_precision = MusicgenMelodyConfig.matmul_precision
    with_matmul_precision = MusicgenMelodyConfig.with_matmul_precision

    @classmethod
    def from_hf(cls, data: Mapping[str, Any], where: str = "config.json") -> MusicgenConfig:
        return _read_composite(cls, data, where, "musicgen", cross_attention=True)

    from_pretrained = MusicgenMelodyConfig.__dict__["from_pretrained"]  # the same classmethod: config.json -> cls

    def to_hf(self) -> dict:
        """A HF ``config.json`` dict that :meth:`from_hf` (and transformers) read back to this config."""
        return {
            "model_type": "musicgen",
            "text_encoder": _plain(self.text_encoder, "t5"),
            "audio_encoder": _plain(self.audio_encoder, "encodec"),
            "decoder": _plain(self.decoder, "musicgen_decoder"),
        }


# model_type -> config class: the families musicgen-jax implements.
FAMILIES = {"musicgen_melody": MusicgenMelodyConfig, "musicgen": MusicgenConfig}


def config_from_pretrained(path: str | os.PathLike):
    """The config of the checkpoint at ``path`` (a folder or its ``config.json``), of the family its ``model_type``
    names: :class:`MusicgenMelodyConfig` or :class:`MusicgenConfig`."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else os.fspath(path)
    data = read_json(file)
    model_type = data.get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(
            f"{file}: model_type is {model_type!r}; musicgen-jax reads {' and '.join(repr(k) for k in FAMILIES)}"
        )
    return FAMILIES[model_type].from_hf(data, where=file)


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Generation defaults from ``generation_config.json`` (HF ``GenerationConfig`` defaults when absent)."""

    do_sample: bool = False
    guidance_scale: float | None = None
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 1.0
    max_length: int = 20
    max_new_tokens: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    decoder_start_token_id: int | None = None

    # Fields HF knows that would change what is generated; we accept them only at their neutral value.
    _NEUTRAL = {
        "num_beams": 1,
        "num_beam_groups": 1,
        "repetition_penalty": 1.0,
        "length_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "encoder_no_repeat_ngram_size": 0,
        "min_length": 0,
        "min_new_tokens": None,
        "typical_p": 1.0,
        "epsilon_cutoff": 0.0,
        "eta_cutoff": 0.0,
        "diversity_penalty": 0.0,
        "bad_words_ids": None,
        "force_words_ids": None,
        "suppress_tokens": None,
        "begin_suppress_tokens": None,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
        "num_return_sequences": 1,
        "penalty_alpha": None,
        "min_p": None,
        "sequence_bias": None,
        "exponential_decay_length_penalty": None,
    }
    _IGNORED = frozenset(
        """_from_model_config transformers_version output_attentions output_hidden_states output_scores
        output_logits return_dict_in_generate use_cache eos_token_id early_stopping renormalize_logits
        remove_invalid_values max_time stop_strings""".split()
    )

    @classmethod
    def from_hf(cls, data: Mapping[str, Any], where: str = "generation_config.json") -> GenerationConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key in names:
                kwargs[key] = value
            elif key in cls._NEUTRAL:
                if value != cls._NEUTRAL[key]:
                    raise ConfigError(f"{where}: {key}={value!r} is not supported (only {cls._NEUTRAL[key]!r})")
            elif key not in cls._IGNORED:
                raise ConfigError(f"{where}: unknown generation field {key!r} (= {value!r})")
        return cls(**kwargs)

    def to_hf(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, decoder: DecoderConfig | None = None) -> GenerationConfig:
        """Reads ``generation_config.json`` when present; otherwise HF's defaults with the decoder's special tokens."""
        file = os.path.join(path, "generation_config.json")
        if os.path.exists(file):
            return cls.from_hf(read_json(file), where=file)
        if decoder is None:
            return cls()
        return cls(pad_token_id=decoder.pad_token_id, bos_token_id=decoder.bos_token_id)


def read_json(file: str | os.PathLike) -> dict:
    """A JSON object from ``file``, with a one-line error naming the file when it is missing or malformed."""
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


# Activation names HF's ACT2FN uses in these configs, with their exact definitions.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
