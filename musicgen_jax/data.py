"""Fine-tuning data: captioned clips -> codes, chroma and tokenized captions, padded to one :class:`Dataset`.

A data folder holds audio files (wav, flac, mp3, ogg, ...), each with a caption in a ``.txt`` file of the same name
(:func:`find_examples`). Each clip is resampled to the model's rate, cropped or zero-padded to a fixed duration,
encoded to codes with the model's EnCodec and turned into chroma features with the model's feature extractor
(:func:`encode_clip`); both are cached as ``.npy`` files (written atomically, keyed by the file, its size and mtime,
the duration and the model) so that a second run reads them back (:func:`prepare_dataset`). Codes of frames past
the end of a short clip are -100: they are not scored. :func:`batch_indices` is the batch order, a function of the
step alone so that a resumed run sees the batches the interrupted one would have.

The chroma comes from the whole mix: MusicGen's own training removes drums and bass with Demucs first, which this
module does not run. Bad input raises :class:`FinetuneError`, a one-line ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from musicgen_jax.errors import one_line
from musicgen_jax.files import atomic_write

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".au")
_CACHE_VERSION = "1"


class FinetuneError(ValueError):
    """Bad input to fine-tuning (data folder, captions, model, arguments): a one-line message.

    Raised here for the data and by :mod:`musicgen_jax.finetune` (which re-exports it) for the model and arguments.
    """


@dataclasses.dataclass(frozen=True)
class Example:
    """One training clip: its audio file and its caption."""

    audio: str
    caption: str


@dataclasses.dataclass
class Dataset:
    """Every clip, padded to common shapes (numpy): ``input_ids``/``attention_mask`` ``(B, W)``, ``input_features``
    ``(B, M, C)`` (MusicGen Melody; None for plain MusicGen, which takes no melody), ``labels`` ``(B, T, K)`` in HF's
    layout (delay pattern applied)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    input_features: np.ndarray | None
    labels: np.ndarray

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {
            field.name: getattr(self, field.name)[indices]
            for field in dataclasses.fields(self)
            if getattr(self, field.name) is not None
        }


def find_examples(data_dir: str | os.PathLike) -> list[Example]:
    """The audio files of ``data_dir`` (sorted by name) with their captions; raises :class:`FinetuneError` when the
    folder is missing or holds no audio, or when a clip has no readable caption file."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FinetuneError(f"{data_dir}: no such data directory")
    names = sorted(
        n
        for n in os.listdir(data_dir)
        if n.lower().endswith(AUDIO_EXTENSIONS) and os.path.isfile(os.path.join(data_dir, n))
    )
    if not names:
        raise FinetuneError(f"{data_dir}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    examples = []
    for name in names:
        audio = os.path.join(data_dir, name)
        caption_file = os.path.splitext(audio)[0] + ".txt"
        try:
            with open(caption_file, encoding="utf-8") as f:
                caption = " ".join(f.read().split())
        except FileNotFoundError:
            raise FinetuneError(f"{audio}: no caption file {os.path.basename(caption_file)} next to it") from None
        except (OSError, UnicodeDecodeError) as e:
            raise FinetuneError(f"{caption_file}: cannot read the caption ({one_line(e)})") from None
        examples.append(Example(audio, caption))
    return examples


def _fit_channels(audio_RA: np.ndarray, channels: int, path: str) -> np.ndarray:
    if audio_RA.shape[0] == channels:
        return audio_RA
    if channels == 1:
        return audio_RA.mean(axis=0, keepdims=True)
    if audio_RA.shape[0] == 1:
        return np.repeat(audio_RA, channels, axis=0)
    raise FinetuneError(f"{path}: {audio_RA.shape[0]} channels cannot feed a {channels}-channel model")


def _cache_key(path: str, model_path: str, duration: float, rate: int, channels: int) -> str:
    stat = os.stat(path)
    text = "|".join(
        map(str, (_CACHE_VERSION, os.path.realpath(path), stat.st_mtime_ns, stat.st_size, duration, rate, channels))
    )
    text += "|" + os.path.realpath(model_path)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def encode_clip(model, feature_extractor, path: str, duration: float) -> tuple[np.ndarray, np.ndarray | None]:
    """One clip -> ``(codes (K, Y) int32, chroma (M, C) float32)``; codes of frames past the clip's end are -100.
    Without a ``feature_extractor`` (plain MusicGen) the chroma is None.

    The audio is resampled to the model's rate, fitted to its channel count and cropped or zero-padded to
    ``duration`` seconds before EnCodec; the chroma is taken from the same (mono-mixed) audio.
    """
    from musicgen_jax import audio as audio_io

    rate = model.sampling_rate
    wave_RA, _ = audio_io.load(path, sampling_rate=rate)
    wave_RA = _fit_channels(wave_RA, model.config.decoder.audio_channels, path)
    samples = int(round(duration * rate))
    real = min(wave_RA.shape[1], samples)
    fitted = np.zeros((wave_RA.shape[0], samples), np.float32)
    fitted[:, :real] = wave_RA[:, :real]
    codes = model.encode_audio(fitted[None])[0].astype(np.int32)
    valid = math.ceil(real / model.config.audio_encoder.hop_length)
    codes[:, valid:] = -100  # training.IGNORE_INDEX: zero padding is not music to learn
    if feature_extractor is None:
        return codes, None
    chroma = feature_extractor(fitted.mean(axis=0), sampling_rate=rate, return_tensors="np")["input_features"][0]
    return codes, chroma.astype(np.float32)


def prepare_dataset(
    model,
    examples: Sequence[Example],
    tokenizer,
    feature_extractor,
    *,
    duration: float,
    cache_dir: str,
    model_path: str,
    log: Callable[[str], None] = print,
) -> Dataset:
    """Codes, chroma, labels and tokenized captions of every example (codes and chroma cached under ``cache_dir``)."""
    from musicgen_jax.loss import delay_labels

    os.makedirs(cache_dir, exist_ok=True)
    dec = model.config.decoder
    codes, chromas = [], []
    encoded = 0
    for example in examples:
        key = _cache_key(example.audio, model_path, duration, model.sampling_rate, dec.audio_channels)
        stem = os.path.splitext(os.path.basename(example.audio))[0]
        codes_file = os.path.join(cache_dir, f"{stem}-{key}.codes.npy")
        chroma_file = os.path.join(cache_dir, f"{stem}-{key}.chroma.npy")
        melody = feature_extractor is not None
        if os.path.isfile(codes_file) and (not melody or os.path.isfile(chroma_file)):
            clip_codes = np.load(codes_file)
            clip_chroma = np.load(chroma_file) if melody else None
        else:
            clip_codes, clip_chroma = encode_clip(model, feature_extractor, example.audio, duration)
            _save_npy(codes_file, clip_codes)
            if melody:
                _save_npy(chroma_file, clip_chroma)
            encoded += 1
        codes.append(clip_codes)
        chromas.append(clip_chroma)
    log(f"data: {len(examples)} clips ({encoded} encoded now, {len(examples) - encoded} from {cache_dir})")
    labels = delay_labels(np.stack(codes), dec.pad_token_id, dec.audio_channels)
    text = tokenizer([e.caption for e in examples], padding="longest", return_tensors="np")
    return Dataset(
        input_ids=text["input_ids"].astype(np.int32),
        attention_mask=text["attention_mask"].astype(np.int32),
        input_features=np.stack(chromas) if feature_extractor is not None else None,
        labels=labels.astype(np.int32),
    )


def _save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` under a temporary name, then renamed: a killed run never leaves a truncated cache file."""
    with atomic_write(path) as f:
        np.save(f, array)


def batch_indices(step: int, size: int, batch_size: int, seed: int) -> np.ndarray:
    """The examples of ``step``: a stream of per-epoch permutations cut into batches, a function of ``step`` alone
    (so a resumed run sees the batches the interrupted one would have)."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, size)
    orders = {e: np.random.default_rng((seed, e)).permutation(size) for e in np.unique(epochs).tolist()}
    return np.asarray([orders[e][o] for e, o in zip(epochs.tolist(), offsets.tolist(), strict=True)])
