"""Fine-tuning data: captioned clips -> cached codes and chroma, cut into training crops batch by batch.

A data folder holds audio files (wav, flac, mp3, ogg, ...), each with a caption in a ``.txt`` file of the same name
or listed in a ``metadata.jsonl`` (:func:`find_examples`); :func:`split_examples` holds some out for validation.
Each file is resampled to the model's rate, fitted to its channel count and encoded with the model's EnCodec, and its
chroma computed with the model's feature extractor (:func:`encode_clip`): a file no longer than the training
duration zero-padded to it (codes past its end are -100, not scored), a longer one whole. Both are cached as ``.npy``
files (written atomically, keyed by the file, its size and mtime, the duration and the model) so that a second run
reads them back (:func:`prepare_dataset`). :class:`Dataset` cuts a crop of each long file per epoch and applies
condition dropout (:mod:`musicgen_jax.condition_dropout`); :func:`batch_positions` is the batch order. Every random
choice is a function of the seed, the step or epoch and the example or row, so that a resumed run sees the batches
the interrupted one would have.

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

from musicgen_jax import condition_dropout
from musicgen_jax.condition_dropout import ConditionDropout
from musicgen_jax.errors import one_line
from musicgen_jax.files import atomic_write

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".au")
_CACHE_VERSION = "2"  # 2: a file longer than the duration is cached whole
_CROP_STREAM = 0xC409  # numpy seeds of the crops and the split, apart from the batch order's (seed, epoch)
_SPLIT_STREAM = 0x5B17


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
    """Every clip's codes and chroma (numpy), cut into training crops batch by batch (:meth:`batch`).

    ``codes[i]`` int32 ``(K, Y_i)``: a clip no longer than the training duration is zero-padded to it (``Y_i =
    frames``, codes past its end -100, not scored); a longer one keeps the codes of the whole file (``Y_i >
    frames``), from which each epoch takes a crop of ``frames`` codec frames starting at a multiple of ``grid``
    frames (:meth:`crop_start`). ``chroma[i]`` float32 ``(M_i, C)`` likewise (MusicGen Melody; None for plain
    MusicGen): a crop takes ``chroma_frames`` frames from ``start // grid * chroma_grid``. ``input_ids`` and
    ``attention_mask`` ``(N, W)`` are the captions tokenized to one width ``W``, which word dropout keeps.
    """

    captions: list[str]
    codes: list[np.ndarray]
    chroma: list[np.ndarray] | None
    input_ids: np.ndarray
    attention_mask: np.ndarray
    frames: int
    chroma_frames: int
    grid: int
    chroma_grid: int
    pad_token_id: int
    audio_channels: int
    tokenize: Callable[[list[str]], tuple[np.ndarray, np.ndarray]]

    def __len__(self) -> int:
        return len(self.codes)

    def crop_start(self, example: int, epoch: int | None, seed: int) -> int:
        """The first codec frame of ``example``'s crop in ``epoch``, a function of ``(seed, epoch, example)``
        alone (so a resumed run crops as the interrupted one would have); 0 for a clip no longer than the crop and
        for ``epoch=None`` (the fixed crops of validation)."""
        starts = (self.codes[example].shape[1] - self.frames) // self.grid + 1
        if epoch is None or starts <= 1:
            return 0
        return int(np.random.default_rng((seed, _CROP_STREAM, epoch, example)).integers(starts)) * self.grid

    def batch(
        self,
        indices,
        *,
        epochs=None,
        seed: int = 0,
        step: int = 0,
        rows=None,
        dropout: ConditionDropout | None = None,
    ) -> dict[str, np.ndarray]:
        """The training batch of examples ``indices`` (numpy): ``input_ids``/``attention_mask`` ``(B, W)``,
        ``input_features`` ``(B, M, C)`` (melody models), ``labels`` ``(B, T, K)`` in HF's layout (delay pattern
        applied) and, under joint condition dropout, ``uncond`` bool ``(B,)``.

        ``epochs`` (one per row; None: the fixed crops, from each clip's start) picks the crops; ``dropout`` draws
        condition dropout for global-batch rows ``rows`` (default ``0..B-1``) at ``step``
        (:func:`musicgen_jax.condition_dropout.draw`)."""
        from musicgen_jax.loss import delay_labels

        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        epochs = [None] * len(indices) if epochs is None else [int(e) for e in np.asarray(epochs).reshape(-1)]
        starts = [self.crop_start(i, e, seed) for i, e in zip(indices, epochs, strict=True)]
        codes = np.stack([self.codes[i][:, s : s + self.frames] for i, s in zip(indices, starts, strict=True)])
        out = {
            "input_ids": self.input_ids[indices],
            "attention_mask": self.attention_mask[indices],
        }
        if self.chroma is not None:
            out["input_features"] = np.stack([self._chroma_crop(i, s) for i, s in zip(indices, starts, strict=True)])
        out["labels"] = delay_labels(codes, self.pad_token_id, self.audio_channels).astype(np.int32)
        if dropout is not None and dropout.active:
            rows = np.arange(len(indices)) if rows is None else np.asarray(rows).reshape(-1)
            draws = condition_dropout.draw(dropout, seed, step, rows, [self.captions[i] for i in indices])
            if dropout.word > 0:
                out["input_ids"], out["attention_mask"] = self.tokenize(draws.captions)
            if "input_features" in out and dropout.melody > 0:
                null = condition_dropout.null_chroma_frames(*out["input_features"].shape[1:])
                out["input_features"] = np.where(draws.no_melody[:, None, None], null, out["input_features"])
            if dropout.cfg > 0:
                out["uncond"] = draws.uncond
        return out

    def _chroma_crop(self, example: int, start: int) -> np.ndarray:
        chroma = self.chroma[example]
        first = start // self.grid * self.chroma_grid
        crop = chroma[first : first + self.chroma_frames]
        if crop.shape[0] < self.chroma_frames:  # the last frames of a crop that ends within a file's last hop
            crop = np.concatenate([crop, np.repeat(crop[-1:], self.chroma_frames - crop.shape[0], axis=0)])
        return crop

    @property
    def labels(self) -> np.ndarray:
        """The labels of every example's fixed crop ``(N, T, K)``."""
        return self.batch(np.arange(len(self)))["labels"]

    @property
    def input_features(self) -> np.ndarray | None:
        """The chroma of every example's fixed crop ``(N, M, C)``, or None."""
        return self.batch(np.arange(len(self))).get("input_features")


METADATA = "metadata.jsonl"
PATH_KEYS = ("path", "audio", "file", "file_name", "filename", "audio_path")
CAPTION_KEYS = ("caption", "text", "description", "prompt")


def find_examples(data_dir: str | os.PathLike) -> list[Example]:
    """The clips of ``data_dir`` with their captions: from ``metadata.jsonl`` when the folder has one
    (:func:`read_metadata`), else every audio file (sorted by name) with the caption in its same-named ``.txt``
    file. Raises :class:`FinetuneError` when the folder is missing or holds no audio, or when a clip has no readable
    caption."""
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FinetuneError(f"{data_dir}: no such data directory")
    if os.path.isfile(os.path.join(data_dir, METADATA)):
        return read_metadata(data_dir)
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


def read_metadata(data_dir: str | os.PathLike) -> list[Example]:
    """The clips listed in ``data_dir/metadata.jsonl``, in file order: one JSON object per line (blank lines
    skipped) with the audio file's path relative to the folder (key ``path``, ``audio``, ``file``, ``file_name``,
    ``filename`` or ``audio_path``) and its caption (``caption``, ``text``, ``description`` or ``prompt``). A bad
    line is a :class:`FinetuneError` naming the file and the line."""
    import json

    data_dir = os.fspath(data_dir)
    metadata = os.path.join(data_dir, METADATA)
    try:
        with open(metadata, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FinetuneError(f"{metadata}: cannot read it ({one_line(e)})") from None
    examples, seen = [], {}
    root = os.path.realpath(data_dir)
    for number, line in enumerate(lines, 1):
        where = f"{metadata}:{number}"
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise FinetuneError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(entry, dict):
            raise FinetuneError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        path_key = next((k for k in PATH_KEYS if k in entry), None)
        caption_key = next((k for k in CAPTION_KEYS if k in entry), None)
        if path_key is None:
            raise FinetuneError(f"{where}: no audio path (one of the keys {', '.join(PATH_KEYS)})")
        if caption_key is None:
            raise FinetuneError(f"{where}: no caption (one of the keys {', '.join(CAPTION_KEYS)})")
        relative, caption = entry[path_key], entry[caption_key]
        if not isinstance(relative, str) or not relative or os.path.isabs(relative):
            raise FinetuneError(f"{where}: {path_key!r} must be a path relative to {data_dir}, got {relative!r}")
        if not isinstance(caption, str):
            raise FinetuneError(f"{where}: {caption_key!r} must be a string, got {type(caption).__name__}")
        audio = os.path.join(data_dir, relative)
        real = os.path.realpath(audio)
        if os.path.commonpath([root, real]) != root:
            raise FinetuneError(f"{where}: {relative!r} lies outside {data_dir}")
        if not os.path.isfile(audio):
            raise FinetuneError(f"{where}: no such audio file {relative!r}")
        if real in seen:
            raise FinetuneError(f"{where}: {relative!r} is listed twice (first on line {seen[real]})")
        seen[real] = number
        examples.append(Example(audio, " ".join(caption.split())))
    if not examples:
        raise FinetuneError(f"{metadata}: lists no clips")
    return examples


def split_examples(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """``(train, validation)``: ``ceil(fraction * N)`` clips drawn by ``seed`` for validation (the rest, in their
    order, for training). The same seed gives the same split."""
    if not 0.0 <= fraction < 1.0:
        raise FinetuneError(f"--val-fraction must lie in [0, 1), got {fraction}")
    count = math.ceil(fraction * len(examples))
    if count and count >= len(examples):
        raise FinetuneError(f"--val-fraction {fraction} leaves no training clip out of {len(examples)}")
    chosen = set(np.random.default_rng((seed, _SPLIT_STREAM)).permutation(len(examples))[:count].tolist())
    train = [e for i, e in enumerate(examples) if i not in chosen]
    return train, [e for i, e in enumerate(examples) if i in chosen]


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
    """One file -> ``(codes (K, Y) int32, chroma (M, C) float32)``; without a ``feature_extractor`` (plain
    MusicGen) the chroma is None.

    The audio is resampled to the model's rate (any rate in) and fitted to its channel count (a stereo file into a
    mono model is mixed down; a mono file into a stereo model is duplicated). A file no longer than ``duration``
    seconds is zero-padded to it, and the codes of frames past its end are -100 (not scored). A longer file is
    encoded whole, and so is its chroma: training crops both at frame boundaries (:class:`Dataset`).

    Why whole files and not each crop: a crop of cached codes costs nothing, while encoding a new crop every epoch
    means reading, resampling and running EnCodec (and the chroma) on every clip of every epoch; the price is
    that codes near a crop's edges were computed with the file's audio around them as context, which is the music
    itself, not the silence a separately encoded crop would see there. The chroma frames are taken for the same
    time span (crop starts are multiples of both hops, so frame ``j`` of a crop is centred where the file's frame
    ``start / hop + j`` is).
    """
    from musicgen_jax import audio as audio_io

    rate = model.sampling_rate
    wave_RA, _ = audio_io.load(path, sampling_rate=rate)
    wave_RA = _fit_channels(wave_RA, model.config.decoder.audio_channels, path)
    samples = int(round(duration * rate))
    if wave_RA.shape[1] > samples:
        fitted, real = np.ascontiguousarray(wave_RA, np.float32), wave_RA.shape[1]
    else:
        real = wave_RA.shape[1]
        fitted = np.zeros((wave_RA.shape[0], samples), np.float32)
        fitted[:, :real] = wave_RA
    codes = model.encode_audio(fitted[None])[0].astype(np.int32)
    valid = math.ceil(real / model.config.audio_encoder.hop_length)
    codes[:, valid:] = -100  # training.IGNORE_INDEX: zero padding is not music to learn
    if feature_extractor is None:
        return codes, None
    chroma = feature_extractor(fitted.mean(axis=0), sampling_rate=rate, return_tensors="np")["input_features"][0]
    return codes, chroma.astype(np.float32)


def _crop_shapes(model, feature_extractor, duration: float) -> tuple[int, int, int, int]:
    """``(frames, chroma_frames, grid, chroma_grid)`` of a ``duration`` crop (see :class:`Dataset`)."""
    rate = model.sampling_rate
    hop = model.config.audio_encoder.hop_length
    samples = int(round(duration * rate))
    frames = math.ceil(samples / hop)
    if feature_extractor is None:
        return frames, 0, 1, 0
    chroma_hop = feature_extractor.hop_length
    step = math.lcm(hop, chroma_hop)  # crop starts sit on both frame grids
    chroma_frames = 1 + max(samples, feature_extractor.n_fft) // chroma_hop  # as the extractor's STFT frames
    return frames, chroma_frames, step // hop, step // chroma_hop


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
    name: str = "data",
) -> Dataset:
    """Codes, chroma and tokenized captions of every example (codes and chroma cached under ``cache_dir``, keyed
    by the file's path, size and mtime, the duration and the model: a changed file is encoded again)."""
    os.makedirs(cache_dir, exist_ok=True)
    dec = model.config.decoder
    frames, chroma_frames, grid, chroma_grid = _crop_shapes(model, feature_extractor, duration)
    codes, chromas = [], []
    encoded = longer = 0
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
        if clip_codes.shape[1] < frames:  # cannot happen for our own cache files; a guard against others
            raise FinetuneError(f"{codes_file}: {clip_codes.shape[1]} frames, fewer than a crop's {frames}")
        longer += clip_codes.shape[1] > frames
        codes.append(clip_codes)
        chromas.append(clip_chroma)
    log(
        f"{name}: {len(examples)} clips ({encoded} encoded now, {len(examples) - encoded} from {cache_dir}; "
        f"{longer} longer than {duration:g} s, cropped anew each epoch)"
    )
    captions = [e.caption for e in examples]
    text = tokenizer(captions, padding="longest", return_tensors="np")
    width = text["input_ids"].shape[1]

    def tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        out = tokenizer(texts, padding="max_length", max_length=width, truncation=True, return_tensors="np")
        mask = out["attention_mask"].astype(np.int32)
        mask[[i for i, t in enumerate(texts) if t == ""]] = 0  # audiocraft: an empty caption is no condition
        return out["input_ids"].astype(np.int32), mask

    return Dataset(
        captions=captions,
        codes=codes,
        chroma=chromas if feature_extractor is not None else None,
        input_ids=text["input_ids"].astype(np.int32),
        attention_mask=text["attention_mask"].astype(np.int32),
        frames=frames,
        chroma_frames=chroma_frames,
        grid=grid,
        chroma_grid=chroma_grid,
        pad_token_id=dec.pad_token_id,
        audio_channels=dec.audio_channels,
        tokenize=tokenize,
    )


def _save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` under a temporary name, then renamed: a killed run never leaves a truncated cache file."""
    with atomic_write(path) as f:
        np.save(f, array)


def batch_positions(step: int, size: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, epochs)`` of the rows of ``step``: a stream of per-epoch permutations cut into batches, a
    function of ``step`` alone (so a resumed run sees the batches, and the crops, the interrupted one would
    have)."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, size)
    orders = {e: np.random.default_rng((seed, e)).permutation(size) for e in np.unique(epochs).tolist()}
    indices = np.asarray([orders[e][o] for e, o in zip(epochs.tolist(), offsets.tolist(), strict=True)])
    return indices, epochs


def batch_indices(step: int, size: int, batch_size: int, seed: int) -> np.ndarray:
    """The examples of ``step`` (:func:`batch_positions` without the epochs)."""
    return batch_positions(step, size, batch_size, seed)[0]
