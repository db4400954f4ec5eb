"""``musicgen-jax finetune``: fine-tune MusicGen Melody on a folder of captioned audio clips.

    musicgen-jax finetune --model PATH --data DIR --out DIR [--steps N --batch-size B --lr LR --duration SECONDS ...]

``DIR`` holds audio files (wav, flac, mp3, ogg, ...), each with a caption in a ``.txt`` file of the same name. Each
clip is resampled to the model's rate, cropped or zero-padded to ``--duration`` seconds, encoded to codes once with
the model's EnCodec and turned into chroma features with the model's feature extractor; both are cached as ``.npy``
under ``OUT/cache`` so that a second run reads them back. Frames past the end of a short clip are not scored.
Training runs :func:`musicgen_jax.training.make_train_step` (AdamW, warmup-cosine schedule, global-norm clipping,
frozen T5 and EnCodec), logs to stdout and ``OUT/metrics.jsonl``, and writes orbax checkpoints to
``OUT/checkpoints``; a run whose ``OUT`` already holds checkpoints resumes from the latest one.

The chroma comes from the whole mix: MusicGen's own training removes drums and bass with Demucs first, which this
tool does not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from musicgen_jax.errors import EXIT_ERROR, ArgumentParser, one_line

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".au")
_CACHE_VERSION = "1"


class FinetuneError(ValueError):
    """Bad input to ``musicgen-jax finetune`` (data folder, captions, model, arguments): a one-line message."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One training clip: its audio file and its caption."""

    audio: str
    caption: str


@dataclasses.dataclass
class Dataset:
    """Every clip, padded to common shapes (numpy): ``input_ids``/``attention_mask`` ``(N, S)``, ``input_features``
    ``(N, F, C)``, ``labels`` ``(N, T, K)`` in HF's layout (delay pattern applied)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    input_features: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {field.name: getattr(self, field.name)[indices] for field in dataclasses.fields(self)}


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


def _fit_channels(audio_CN: np.ndarray, channels: int, path: str) -> np.ndarray:
    if audio_CN.shape[0] == channels:
        return audio_CN
    if channels == 1:
        return audio_CN.mean(axis=0, keepdims=True)
    if audio_CN.shape[0] == 1:
        return np.repeat(audio_CN, channels, axis=0)
    raise FinetuneError(f"{path}: {audio_CN.shape[0]} channels cannot feed a {channels}-channel model")


def _cache_key(path: str, model_path: str, duration: float, rate: int, channels: int) -> str:
    stat = os.stat(path)
    text = "|".join(
        map(str, (_CACHE_VERSION, os.path.realpath(path), stat.st_mtime_ns, stat.st_size, duration, rate, channels))
    )
    text += "|" + os.path.realpath(model_path)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def encode_clip(model, feature_extractor, path: str, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """One clip -> ``(codes (K, F) int32, chroma (frames, C) float32)``; codes of frames past the clip's end are -100.

    The audio is resampled to the model's rate, fitted to its channel count and cropped or zero-padded to
    ``duration`` seconds before EnCodec; the chroma is taken from the same (mono-mixed) audio.
    """
    from musicgen_jax import audio as audio_io

    rate = model.sampling_rate
    wave_CN, _ = audio_io.load(path, sampling_rate=rate)
    wave_CN = _fit_channels(wave_CN, model.config.decoder.audio_channels, path)
    samples = int(round(duration * rate))
    real = min(wave_CN.shape[1], samples)
    fitted = np.zeros((wave_CN.shape[0], samples), np.float32)
    fitted[:, :real] = wave_CN[:, :real]
    codes = model.encode_audio(fitted[None])[0].astype(np.int32)
    valid = math.ceil(real / model.config.audio_encoder.hop_length)
    codes[:, valid:] = -100  # training.IGNORE_INDEX: zero padding is not music to learn
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
    from musicgen_jax.training import delay_labels

    os.makedirs(cache_dir, exist_ok=True)
    dec = model.config.decoder
    codes, chromas = [], []
    encoded = 0
    for example in examples:
        key = _cache_key(example.audio, model_path, duration, model.sampling_rate, dec.audio_channels)
        stem = os.path.splitext(os.path.basename(example.audio))[0]
        codes_file = os.path.join(cache_dir, f"{stem}-{key}.codes.npy")
        chroma_file = os.path.join(cache_dir, f"{stem}-{key}.chroma.npy")
        if os.path.isfile(codes_file) and os.path.isfile(chroma_file):
            clip_codes, clip_chroma = np.load(codes_file), np.load(chroma_file)
        else:
            clip_codes, clip_chroma = encode_clip(model, feature_extractor, example.audio, duration)
            _save_npy(codes_file, clip_codes)
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
        input_features=np.stack(chromas),
        labels=labels.astype(np.int32),
    )


def _save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` under a temporary name, then renamed: a killed run never leaves a truncated cache file."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as f:
        np.save(f, array)
    os.replace(temporary, path)


def batch_indices(step: int, size: int, batch_size: int, seed: int) -> np.ndarray:
    """The examples of ``step``: a stream of per-epoch permutations cut into batches, a function of ``step`` alone
    (so a resumed run sees the batches the interrupted one would have)."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, size)
    orders = {e: np.random.default_rng((seed, e)).permutation(size) for e in np.unique(epochs).tolist()}
    return np.asarray([orders[e][o] for e, o in zip(epochs.tolist(), offsets.tolist(), strict=True)])


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="musicgen-jax finetune",
        description="Fine-tune MusicGen Melody on a folder of audio clips with same-named .txt captions.",
    )
    p.add_argument("--model", required=True, help="model directory (HF checkpoint with tokenizer files)")
    p.add_argument("--data", required=True, help="folder of audio files, each with a same-named .txt caption")
    p.add_argument("--out", required=True, help="output folder: cache/, checkpoints/, metrics.jsonl")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps in total (default 1000)")
    p.add_argument("--batch-size", type=int, default=4, help="clips per step (default 4)")
    p.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (default 1e-5)")
    p.add_argument("--warmup", type=int, default=0, help="linear warmup steps before the cosine decay (default 0)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--clip-norm", type=float, default=1.0, help="global gradient norm clip, 0 for none (default 1)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per clip: crop or pad (default 10)")
    p.add_argument("--seed", type=int, default=0, help="data order and dropout seed (default 0)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 compute over float32 master weights")
    p.add_argument("--no-dropout", action="store_true", help="turn the config's dropout off")
    p.add_argument("--train-text-encoder", action="store_true", help="train the T5 text encoder too")
    p.add_argument("--mesh", default=None, help="DATAxMODEL device mesh, e.g. 8x1 or 2x4 (default: one device)")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines (default 10)")
    p.add_argument("--save-every", type=int, default=500, help="steps between checkpoints (default 500)")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep (default 3)")
    return p


def _check_args(args: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "grad_accum", "log_every", "save_every", "keep"):
        if getattr(args, name) < 1:
            raise FinetuneError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("lr", "duration"):
        if not getattr(args, name) > 0:
            raise FinetuneError(f"--{name} must be > 0, got {getattr(args, name)}")
    if args.warmup < 0 or args.weight_decay < 0 or args.clip_norm < 0:
        raise FinetuneError("--warmup, --weight-decay and --clip-norm must be >= 0")


def _mesh(spec: str | None):
    if spec is None:
        return None
    from musicgen_jax import sharding

    try:
        data, model = (int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise FinetuneError(f"--mesh must look like DATAxMODEL (e.g. 2x4), got {spec!r}") from None
    try:
        return sharding.make_mesh(data, model)
    except ValueError as e:
        raise FinetuneError(f"--mesh {spec}: {one_line(e)}") from None


def _load(model_path: str):
    from musicgen_jax import MusicgenMelodyFeatureExtractor, MusicgenMelodyForConditionalGeneration
    from musicgen_jax.tokenizer import T5TextTokenizer

    if not os.path.isdir(model_path):
        raise FinetuneError(f"{model_path}: no such model directory")
    try:
        model = MusicgenMelodyForConditionalGeneration.from_pretrained(model_path, scan_layers=True)
    except (ValueError, OSError) as e:
        raise FinetuneError(f"{model_path}: cannot load the model ({one_line(e)})") from None
    try:
        tokenizer = T5TextTokenizer.from_pretrained(model_path)
    except (ValueError, OSError, KeyError) as e:
        raise FinetuneError(f"{model_path}: cannot load the tokenizer ({one_line(e)})") from None
    if os.path.isfile(os.path.join(model_path, "preprocessor_config.json")):
        feature_extractor = MusicgenMelodyFeatureExtractor.from_pretrained(model_path)
    else:
        feature_extractor = MusicgenMelodyFeatureExtractor(sampling_rate=model.sampling_rate)
    return model, tokenizer, feature_extractor


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The fine-tuning run of parsed ``args``; returns ``{"step", "loss", "checkpoint"}`` of the last step."""
    import jax
    import jax.numpy as jnp

    from musicgen_jax import sharding, training

    _check_args(args)
    examples = find_examples(args.data)
    mesh = _mesh(args.mesh)
    model, tokenizer, feature_extractor = _load(args.model)
    os.makedirs(args.out, exist_ok=True)
    data = prepare_dataset(
        model,
        examples,
        tokenizer,
        feature_extractor,
        duration=args.duration,
        cache_dir=os.path.join(args.out, "cache"),
        model_path=args.model,
        log=log,
    )
    if mesh is not None and args.batch_size % mesh.shape[sharding.DATA]:
        raise FinetuneError(f"--batch-size {args.batch_size} is not divisible by the mesh's data axis ({args.mesh})")

    updates = math.ceil(args.steps / args.grad_accum)
    schedule = training.make_schedule(args.lr, warmup_steps=args.warmup, total_steps=updates)
    optimizer = training.make_optimizer(
        schedule,
        weight_decay=args.weight_decay,
        clip_norm=args.clip_norm or None,
        accumulation_steps=args.grad_accum,
    )
    trainable = training.default_trainable(model.params, train_text_encoder=args.train_text_encoder)
    state = training.init_train_state(model.params, optimizer, trainable, seed=args.seed)
    if mesh is not None:
        state = sharding.shard_params(state, mesh)
    manager = training.checkpoint_manager(os.path.join(args.out, "checkpoints"), max_to_keep=args.keep)
    metadata = {"model": os.path.abspath(args.model), "trainable": list(trainable), "args": vars(args)}
    if manager.latest_step() is not None:
        state, _ = training.restore_checkpoint(manager, state)
        log(f"resuming from {manager.directory}/{int(state.step)}")
    train_step = training.make_train_step(
        model.config,
        optimizer,
        trainable=trainable,
        compute_dtype=jnp.bfloat16 if args.bf16 else None,
        dropout=not args.no_dropout,
    )
    B, T, K = args.batch_size, data.labels.shape[1], data.labels.shape[2]
    log(
        f"training {', '.join(trainable)} for {args.steps} steps: batch {B} x {T} positions x {K} codebooks, "
        f"text {data.input_ids.shape[1]} tokens, chroma {data.input_features.shape[1]} frames"
    )

    first = int(state.step)
    loss = float("nan")
    last_time, last_step = time.perf_counter(), first
    with open(os.path.join(args.out, "metrics.jsonl"), "a", encoding="utf-8") as metrics_file:
        for step in range(first, args.steps):
            batch = data.batch(batch_indices(step, len(data), B, args.seed))
            batch = (
                sharding.shard_batch(batch, mesh) if mesh is not None else jax.tree_util.tree_map(jnp.asarray, batch)
            )
            state, metrics = train_step(state, batch)
            done = step + 1
            if done % args.log_every == 0 or done == args.steps or done == first + 1:
                loss = float(metrics["loss"])  # waits for the step
                now = time.perf_counter()
                steps_per_s = (done - last_step) / max(now - last_time, 1e-9)
                record = {
                    "step": done,
                    "loss": loss,
                    "grad_norm": float(metrics["grad_norm"]),
                    "lr": float(schedule((done - 1) // args.grad_accum)),  # of the latest update
                    "steps_per_s": steps_per_s,
                    "tokens_per_s": steps_per_s * B * T * K,
                    "audio_s_per_s": steps_per_s * B * args.duration,
                }
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                note = " (includes compilation)" if done == first + 1 else ""
                log(
                    f"step {done}/{args.steps}  loss {loss:.4f}  grad_norm {record['grad_norm']:.3f}  "
                    f"lr {record['lr']:.2e}  {record['tokens_per_s']:.0f} tokens/s  "
                    f"{record['audio_s_per_s']:.2f} audio s/s{note}"
                )
                last_time, last_step = now, done
            if done % args.save_every == 0 or done == args.steps:
                training.save_checkpoint(manager, state, metadata)
    manager.close()
    checkpoint = os.path.join(os.fspath(manager.directory), str(int(state.step)))
    log(f"checkpoint: {checkpoint}")
    return {"step": int(state.step), "loss": loss, "checkpoint": checkpoint}


def main(argv: list[str] | None = None) -> int:
    """``musicgen-jax finetune ...``: 0 on success; bad input prints one ``error:`` line to stderr and returns 2."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # the parser has printed its one-line error
        return int(e.code or 0)
    from musicgen_jax.audio import AudioError

    try:
        run(args)
    except (FinetuneError, AudioError, OSError) as e:
        print(f"{parser.prog}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
