"""The ``musicgen-jax`` command: ``generate``, ``convert``, ``random-checkpoint`` and ``finetune``.

Every expected failure (bad checkpoint, bad audio, bad argument, unwritable output) ends with one line on stderr
and exit status 2; set ``MUSICGEN_JAX_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


class CLIError(ValueError):
    """A bad command-line argument, reported in one line."""


def _output_paths(out: str, count: int) -> list[str]:
    """``out.wav``, ``out_1.wav``, ... checked for writability before any work is done."""
    if os.path.isdir(out):
        raise CLIError(f"--out {out}: is a directory; give a file name such as {os.path.join(out, 'music.wav')}")
    stem, ext = os.path.splitext(out)
    ext = ext or ".wav"
    if ext.lower() != ".wav":
        raise CLIError(f"--out {out}: only .wav output is supported")
    paths = [f"{stem}{ext}" if i == 0 else f"{stem}_{i}{ext}" for i in range(count)]
    folder = os.path.dirname(os.path.abspath(paths[0]))
    if not os.path.isdir(folder):
        raise CLIError(f"--out {out}: the folder {folder} does not exist")
    for path in paths:  # probe by creating the file: os.access says yes to root even where writing fails
        existed = os.path.exists(path)
        try:
            with open(path, "ab"):
                pass
        except OSError as e:
            raise CLIError(f"--out {path}: cannot write there ({e.strerror or type(e).__name__})") from None
        if not existed:
            os.remove(path)
    return paths


def _progress_bar(enabled: bool):
    """A tqdm bar over decode steps (host side, updated once per compiled chunk)."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="step", desc="decoding", leave=False, file=sys.stderr)
        bar.update(done - bar.n)

    return update, lambda: bar is not None and bar.close()


def cmd_generate(args) -> int:
    import numpy as np

    from musicgen_jax import MusicgenMelodyForConditionalGeneration, MusicgenMelodyProcessor, audio

    texts = args.text or []
    if not texts and args.melody is None:
        raise CLIError("give at least one --text (or a --melody for melody-only generation)")
    if any(not t.strip() for t in texts):
        raise CLIError("--text must not be empty")
    for name in ("duration", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise CLIError(f"--{name.replace('_', '-')} must be positive, got {value}")
    paths = _output_paths(args.out, max(len(texts), 1))

    melody = None
    if args.melody is not None:
        melody, melody_rate = audio.load(args.melody)  # (channels, samples); errors name the file
    processor = MusicgenMelodyProcessor.from_pretrained(args.model)
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(args.model, dtype=args.dtype)
    batch = max(len(texts), 1)
    inputs = {}
    if texts:
        inputs.update(processor(text=texts, padding=True))
    if melody is not None:
        inputs.update(processor(audio=[melody] * batch, sampling_rate=melody_rate))

    update, close = _progress_bar(not args.quiet)
    try:
        out = model.generate(
            **inputs,
            duration=args.duration,
            max_new_tokens=args.max_new_tokens,
            do_sample=False if args.greedy else None,
            guidance_scale=args.guidance_scale,
            top_k=args.top_k,
            top_p=args.top_p,
            temperature=args.temperature,
            seed=args.seed,
            return_dict_in_generate=True,
            progress=update or (lambda done, total: None),
        )
    finally:
        close()
    for path, wave in zip(paths, out.sequences, strict=True):
        audio.save_wav(path, np.asarray(wave), model.sampling_rate)
    stats = out.stats
    rtf = stats["wall_seconds"] / max(stats["audio_seconds"], 1e-9)
    print(
        f"wrote {', '.join(paths)} | compile {stats['compile_seconds']:.1f} s | decode "
        f"{stats['decode_steps_per_second']:.1f} steps/s | {stats['audio_seconds']:.2f} s of audio in "
        f"{stats['wall_seconds']:.2f} s (real-time factor {rtf:.2f})"
    )
    return 0


def cmd_convert(args) -> int:
    from musicgen_jax import MusicgenMelodyForConditionalGeneration

    if os.path.exists(args.dst) and not os.path.isdir(args.dst):
        raise CLIError(f"--dst {args.dst}: exists and is not a directory")
    started = time.perf_counter()
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(args.src, dtype=args.dtype, scan_layers=True)
    dst = model.save_pretrained(args.dst)
    print(f"converted {args.src} -> {dst} ({model.dtype}) in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_random_checkpoint(args) -> int:
    from musicgen_jax.demo import write_random_checkpoint

    dst = write_random_checkpoint(args.dst, seed=args.seed)
    print(f"wrote a RANDOM-WEIGHT checkpoint to {dst}: it runs the whole pipeline but generates noise")
    return 0


def cmd_finetune(argv: list[str]) -> int:
    from musicgen_jax import finetune

    return finetune.main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicgen-jax", description="MusicGen Melody in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="text (and melody) to WAV files")
    gen.add_argument("--model", required=True, help="checkpoint directory, converted directory, or Hub id")
    gen.add_argument("--text", action="append", help="a description; repeat for several outputs")
    gen.add_argument("--melody", help="an audio file whose melody conditions the music (any format librosa reads)")
    length = gen.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, help="seconds of audio")
    length.add_argument("--max-new-tokens", type=int, help="decoder steps")
    gen.add_argument("--guidance-scale", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    gen.add_argument("--out", default="musicgen_out.wav", help="output WAV (more texts: out_1.wav, ...)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_generate)

    conv = sub.add_parser("convert", help="HF checkpoint -> musicgen-jax (orbax) directory")
    conv.add_argument("--src", required=True, help="HF checkpoint directory or Hub id")
    conv.add_argument("--dst", required=True)
    conv.add_argument("--dtype", default="auto", choices=["float32", "bfloat16", "auto"])
    conv.set_defaults(func=cmd_convert)

    rnd = sub.add_parser("random-checkpoint", help="write a small random-weight checkpoint (generates noise)")
    rnd.add_argument("dst")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.set_defaults(func=cmd_random_checkpoint)

    sub.add_parser("finetune", help="fine-tune on a folder of audio files with .txt captions", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["finetune"]:
            return cmd_finetune(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        print("musicgen-jax: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # expected failures carry one-line messages; anything else is still one line
        if os.environ.get("MUSICGEN_JAX_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"musicgen-jax: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
