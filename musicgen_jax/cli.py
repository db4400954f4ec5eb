"""The ``musicgen-jax`` command: ``generate``, ``batch``, ``convert``, ``export``, ``random-checkpoint``, ``finetune``,
``verify``.

Every expected failure (bad checkpoint, bad audio, bad argument, unwritable output) ends with one line on stderr
and exit status 2; set ``MUSICGEN_JAX_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import os
import sys
import tempfile
import time

from musicgen_jax.errors import EXIT_ERROR, ArgumentParser, one_line


class CLIError(ValueError):
    """A bad command-line argument, reported in one line."""


def _output_paths(out: str, count: int, overwrite: bool = False) -> list[str]:
    """``out.wav``, ``out_1.wav``, ... checked before any work is done: the folder must take a new file, and an
    existing file is replaced only when musicgen-jax wrote it (its WAV tag) or ``--overwrite`` is given."""
    from musicgen_jax import audio

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
    for path in paths:
        if os.path.isdir(path):
            raise CLIError(f"--out {path}: is a directory")
        if os.path.exists(path) and not overwrite and not audio.written_by_musicgen_jax(path):
            raise CLIError(
                f"--out {path}: exists and was not written by musicgen-jax; choose another name or pass --overwrite"
            )
    try:  # probe by creating a file there: os.access says yes to root even where writing fails
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".musicgen-jax-probe-"):
            pass
    except OSError as e:
        raise CLIError(f"--out {out}: cannot write in {folder} ({e.strerror or type(e).__name__})") from None
    return paths


def _progress_bar(enabled: bool, window_steps: list[int] | None = None):
    """A tqdm bar over the decoder steps of the whole piece (host side, updated once per compiled chunk): steps/s
    and time left, and for long-form pieces which window is running (``window_steps``: the steps of each)."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = None
    ends = None if window_steps is None else list(itertools.accumulate(window_steps))

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="step", desc="decoding", leave=False, file=sys.stderr)
        if ends is not None:
            index = min(bisect.bisect_left(ends, done), len(ends) - 1)
            bar.set_description(f"window {index + 1} of {len(ends)}", refresh=False)
        bar.update(done - bar.n)

    return update, lambda: bar is not None and bar.close()


# How generate()'s sampling arguments are named in messages from `musicgen-jax generate`.
_SAMPLING_FLAGS = {
    "top_k": "--top-k",
    "top_p": "--top-p",
    "temperature": "--temperature",
    "guidance_scale": "--guidance-scale",
    "greedy": "--greedy",
}


def cmd_generate(args) -> int:
    import numpy as np

    from musicgen_jax import MusicgenMelodyForConditionalGeneration, MusicgenMelodyProcessor, audio, long_form
    from musicgen_jax.generation import check_duration, check_sampling, check_seed

    texts = args.text or []
    if not texts and args.melody is None:
        raise CLIError("give at least one --text (or a --melody for melody-only generation)")
    if any(not t.strip() for t in texts):
        raise CLIError("--text must not be empty")
    # Every flag is checked here, before anything loads, with the rules generate() applies.
    if args.duration is not None:
        check_duration(args.duration, "--duration")
    windows = _check_windows(args)
    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        raise CLIError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    check_sampling(
        not args.greedy, args.top_k, args.top_p, args.temperature, args.guidance_scale, names=_SAMPLING_FLAGS
    )
    check_seed(args.seed, "--seed")
    paths = _output_paths(args.out, max(len(texts), 1), args.overwrite)
    if args.lora is not None:  # its settings, before anything heavy loads
        from musicgen_jax import lora

        lora.read_config(args.lora)

    from musicgen_jax import hub
    from musicgen_jax.config import config_from_pretrained
    from musicgen_jax.tokenizer import T5TextTokenizer

    folder = hub.resolve(args.model)
    family = config_from_pretrained(folder).model_type  # before anything heavy loads
    if args.melody is not None and family != "musicgen_melody":
        raise CLIError(f"--melody needs a MusicGen Melody checkpoint; {args.model} is plain MusicGen (text only)")
    melody = None
    if args.melody is not None:
        melody, melody_rate = audio.load(args.melody)  # one clip, (channels, samples); errors name the file
        processor = MusicgenMelodyProcessor.from_pretrained(folder)
    if melody is not None:
        fe = processor.feature_extractor
        if melody.shape[-1] * fe.sampling_rate < fe.hop_length * melody_rate:  # shorter than one chroma frame
            least = fe.hop_length / fe.sampling_rate
            raise CLIError(
                f"--melody {args.melody}: {melody.shape[-1] / melody_rate:.6g} s of audio is shorter than one chroma "
                f"frame ({fe.hop_length} samples at {fe.sampling_rate} Hz); give at least {least:g} s"
            )
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(
        args.model, dtype=args.dtype, matmul_precision=args.matmul_precision, lora=args.lora
    )
    batch = max(len(texts), 1)
    if melody is None:
        inputs = T5TextTokenizer.from_pretrained(folder)(texts, padding=True)
    else:  # as the README shows: the loaded clip (stereo is averaged to mono), one per text
        inputs = processor(text=texts or None, audio=[melody] * batch, sampling_rate=melody_rate, padding=True)

    plan = None
    if args.duration is not None:  # the windows generate will run, for the progress bar (None: one window)
        plan = long_form.plan(args.duration, args.window, args.stride, 0, model.config.audio_encoder.frame_rate)
    dec = model.config.decoder
    update, close = _progress_bar(
        not args.quiet, None if plan is None else plan.steps(dec.num_codebooks // dec.audio_channels)
    )
    # each output grows on disk as its audio is decoded (window by window for long pieces), playable as it grows,
    # and is renamed to its final name at the end
    writers = [audio.WavWriter(path, model.sampling_rate, dec.audio_channels) for path in paths]
    if plan is not None and not args.quiet:
        growing = ", ".join(w.partial_path for w in writers)
        print(f"{len(plan.windows)} windows; the audio grows in {growing} as each ends", file=sys.stderr)

    def on_audio(piece) -> None:
        for writer, wave in zip(writers, piece, strict=True):
            writer.append(np.asarray(wave))

    try:
        out = model.generate(
            **inputs,
            duration=args.duration,
            window_duration=windows[0],
            extend_stride=windows[1],
            on_audio=on_audio,
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
        for writer in writers:
            writer.close()
    except ValueError as e:  # generate's messages name its arguments; say the flags
        for writer in writers:
            writer.abort()
        message = one_line(e).replace("window_duration", "--window").replace("extend_stride", "--stride")
        raise CLIError(message) from None
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    finally:
        close()
    stats = out.stats
    rtf = stats["wall_seconds"] / max(stats["audio_seconds"], 1e-9)
    print(
        f"wrote {', '.join(paths)} | compile {stats['compile_seconds']:.1f} s | decode "
        f"{stats['decode_steps_per_second']:.1f} steps/s | {stats['audio_seconds']:.2f} s of audio in "
        f"{stats['wall_seconds']:.2f} s (real-time factor {rtf:.2f})"
    )
    return 0


def _check_windows(args) -> tuple[float | None, float | None]:
    """``--window`` / ``--stride`` checked with generate's rules (before anything loads): ``(window, stride)``."""
    from musicgen_jax import long_form
    from musicgen_jax.generation import check_duration

    if (args.window is not None or args.stride is not None) and args.duration is None:
        raise CLIError("--window and --stride apply to --duration (long-form generation)")
    if args.duration is not None and args.duration > long_form.MAX_DURATION_SECONDS:
        raise CLIError(
            f"--duration {args.duration:g} s is past the cap of {long_form.MAX_DURATION_SECONDS:g} s (one hour)"
        )
    window = None if args.window is None else check_duration(args.window, "--window")
    if args.stride is not None:
        check_duration(args.stride, "--stride")
        limit = long_form.DEFAULT_WINDOW_SECONDS if window is None else window
        if args.stride >= limit:
            raise CLIError(f"--stride {args.stride:g} s must be shorter than the window ({limit:g} s)")
    return window, args.stride


def cmd_batch(args) -> int:
    """A job file on this process (or its share of it, with several): exit 0 when every job is done."""
    from musicgen_jax import jobs
    from musicgen_jax.generation import check_duration

    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.text_length is not None and args.text_length < 1:
        raise CLIError(f"--text-length must be a positive integer, got {args.text_length}")
    given = {
        "batch_size": args.batch_size,
        "text_length": args.text_length,
        "buckets": None if args.buckets is None else _buckets(args.buckets),
        "window_duration": None if args.window is None else check_duration(args.window, "--window"),
        "extend_stride": None if args.stride is None else check_duration(args.stride, "--stride"),
    }
    settings = jobs.Settings(**{k: v for k, v in given.items() if v is not None})
    process_id, num_processes = _distributed(args)

    def load_model():
        from musicgen_jax import MusicgenMelodyForConditionalGeneration, hub
        from musicgen_jax.tokenizer import T5TextTokenizer

        model = MusicgenMelodyForConditionalGeneration.from_pretrained(
            args.model, dtype=args.dtype, matmul_precision=args.matmul_precision
        )
        return model, T5TextTokenizer.from_pretrained(hub.resolve(args.model))

    try:
        summary = jobs.run(
            load_model,
            args.jobs,
            args.out,
            settings,
            process_id=process_id,
            num_processes=num_processes,
            progress=not args.quiet,
        )
    except jobs.JobError as e:
        raise CLIError(str(e)) from None
    which = "" if num_processes == 1 else f"process {process_id} of {num_processes}: "
    manifest = os.path.join(args.out, jobs.manifest_name(process_id, num_processes))
    rate = summary.audio_seconds / max(summary.wall_seconds, 1e-9)
    print(
        f"{which}{summary.ok} done, {summary.failed} failed, {summary.skipped} already done | "
        f"{summary.audio_seconds:.1f} s of audio in {summary.wall_seconds:.1f} s ({rate:.2f} audio s/s; compile "
        f"{summary.compile_seconds:.1f} s) | manifest {manifest}"
    )
    return summary.exit_status


def _buckets(text: str) -> tuple[float, ...]:
    from musicgen_jax.generation import check_duration

    try:
        values = tuple(check_duration(float(part), "--buckets") for part in text.split(",") if part.strip())
    except ValueError:
        raise CLIError(
            f"--buckets must be positive seconds separated by commas, e.g. 2,5,10,30; got {text!r}"
        ) from None
    if not values:
        raise CLIError("--buckets must hold at least one duration")
    return values


def _distributed(args) -> tuple[int, int]:
    """``jax.distributed`` from the flags (all three, as ``jax.distributed.initialize`` names them), or as JAX
    detects a TPU pod or SLURM job; ``(process_id, num_processes)``, ``(0, 1)`` on one process."""
    flags = (args.coordinator_address, args.num_processes, args.process_id)
    if any(f is not None for f in flags) and not all(f is not None for f in flags):
        raise CLIError("--coordinator-address, --num-processes and --process-id go together")
    if args.num_processes is not None:
        if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
            raise CLIError(f"--process-id {args.process_id} must lie in [0, --num-processes {args.num_processes})")
        if args.num_processes == 1:
            return 0, 1
    import jax

    if args.num_processes is not None:
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    elif _cluster_detected():
        jax.distributed.initialize()  # JAX reads the TPU pod's or SLURM's environment
    else:
        return 0, 1
    return jax.process_index(), jax.process_count()


def _cluster_detected() -> bool:
    """A multi-process environment JAX's ``jax.distributed.initialize()`` detects by itself: a SLURM job of several
    tasks or a multi-host TPU slice."""
    env = os.environ
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env:
        return True
    return len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def cmd_convert(args) -> int:
    from musicgen_jax import MusicgenMelodyForConditionalGeneration

    _check_checkpoint_destination("--dst", args.dst, args.overwrite)  # before the slow part
    started = time.perf_counter()
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(
        args.src, dtype=args.dtype, scan_layers=True, mesh=None
    )
    dst = model.save_pretrained(args.dst, overwrite=args.overwrite)
    print(f"converted {args.src} -> {dst} ({model.dtype}) in {time.perf_counter() - started:.1f} s")
    return 0


def _check_checkpoint_destination(flag: str | None, dst: str, overwrite: bool) -> None:
    """A checkpoint destination must be new, empty, or a converted checkpoint (then only our files are replaced)."""
    from musicgen_jax import checkpoint

    try:
        checkpoint.check_destination(dst, overwrite)
    except checkpoint.CheckpointError as e:
        raise CLIError(f"{flag} {e}" if flag else str(e)) from None


def cmd_random_checkpoint(args) -> int:
    from musicgen_jax.demo import write_random_checkpoint

    _check_checkpoint_destination(None, args.dst, args.overwrite)
    dst = write_random_checkpoint(args.dst, seed=args.seed, overwrite=args.overwrite, family=args.family)
    print(f"wrote a RANDOM-WEIGHT checkpoint to {dst}: it runs the whole pipeline but generates noise")
    return 0


def cmd_export(args) -> int:
    """A training checkpoint (its latest step, or ``--step``) or a converted checkpoint -> a transformers folder."""
    from musicgen_jax import checkpoint, hf_export

    src = args.src
    if not os.path.isdir(src):
        raise CLIError(f"--src {src}: {'not a directory' if os.path.exists(src) else 'no such directory'}")
    try:
        hf_export.check_destination(args.dst)  # before anything loads
    except hf_export.ExportError as e:
        raise CLIError(f"--dst {e}") from None
    started = time.perf_counter()
    if checkpoint.is_converted(src):
        from musicgen_jax import MusicgenMelodyForConditionalGeneration

        if args.step is not None or args.model is not None:
            raise CLIError("--step and --model apply to a training checkpoint, not to a converted checkpoint")
        model = MusicgenMelodyForConditionalGeneration.from_pretrained(src, dtype="auto", scan_layers=True, mesh=None)
        dst = model.save_pretrained(args.dst, format="hf")
        what = "converted checkpoint"
    else:
        dst, what = _export_training_checkpoint(args)
    print(f"exported {what} {src} -> {dst} (transformers safetensors) in {time.perf_counter() - started:.1f} s")
    return 0


def _training_steps(folder: str) -> list[int]:
    return sorted(int(e) for e in os.listdir(folder) if e.isdigit() and os.path.isdir(os.path.join(folder, e)))


def _export_training_checkpoint(args) -> tuple[str, str]:
    from musicgen_jax import checkpoint, hf_export, lora, training
    from musicgen_jax import decoder as decoder_module
    from musicgen_jax.config import GenerationConfig, config_from_pretrained

    run = args.src
    if not _training_steps(run) and os.path.isdir(os.path.join(run, "checkpoints")):
        run = os.path.join(run, "checkpoints")  # the finetune OUT folder itself
    steps = _training_steps(run)
    if not steps:
        raise CLIError(
            f"--src {args.src}: neither a training checkpoint directory (numbered step folders, as finetune writes "
            "under OUT/checkpoints) nor a converted musicgen-jax checkpoint"
        )
    if args.step is not None and args.step not in steps:
        raise CLIError(f"--step {args.step}: {run} holds steps {', '.join(map(str, steps))}")
    try:
        params, metadata, step = training.restore_run(run, args.step)
    except Exception as e:
        raise CLIError(f"--src {run}: cannot read the training checkpoint ({one_line(e)[:300]})") from None
    base = args.model or (metadata or {}).get("model")
    if base is None:
        raise CLIError(f"--src {run}/{step}: its metadata names no base model; pass --model (the model it trained)")
    if not os.path.isdir(base):
        where = "--model" if args.model else f"the base model recorded in {run}/{step}"
        raise CLIError(f"{where}: {base}: no such model directory (pass --model with its new place)")
    folder = checkpoint.resolve(base)
    config = config_from_pretrained(folder)
    if lora.PART in params:  # LoRA training: the adapters merged into the decoder
        params = lora.merge(params, lora.LoraConfig.from_json((metadata or {}).get("lora") or {}))
    for part in ("decoder", "text_encoder"):
        if part in params:
            params[part] = decoder_module.stack_layers(params[part])
    note = {"source": os.path.abspath(run), "step": step, "base_model": os.path.abspath(base)}
    dst = hf_export.save(
        args.dst, params, config, GenerationConfig.from_pretrained(folder, config.decoder), copy_from=folder, note=note
    )
    return dst, f"step {step} of"


def cmd_finetune(args) -> int:
    from musicgen_jax import finetune

    _distributed(args)  # several processes: each builds its share of every batch (see finetune.run)
    finetune.run(args)  # logs its own progress; bad input raises a one-line error
    return 0


def cmd_verify(args) -> int:
    import math

    from musicgen_jax import verify

    if args.steps <= 0:
        raise CLIError(f"--steps must be positive, got {args.steps}")
    for flag, value in (("--rtol", args.rtol), ("--bf16-rtol", args.bf16_rtol)):
        if not (math.isfinite(value) and value > 0):
            raise CLIError(f"{flag} must be a finite number > 0, got {value}")
    if args.guidance_scale is not None and not math.isfinite(args.guidance_scale):
        raise CLIError(f"--guidance-scale must be a finite number, got {args.guidance_scale}")
    report = verify.run(
        args.model,
        hf=args.hf,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        tolerances=verify.Tolerances(float32=args.rtol, bfloat16=args.bf16_rtol),
    )
    print(report.table())
    return report.exit_status  # 1 when a check failed


_OVERWRITE_HELP = (
    "also write into a non-empty folder that is not a converted checkpoint (its files are left as they are); a "
    "converted checkpoint is replaced atomically without it"
)


def _add_distributed_arguments(parser: argparse.ArgumentParser, num_processes_help: str) -> None:
    """The ``jax.distributed.initialize`` flags ``batch`` and ``finetune`` share (checked by ``_distributed``)."""
    parser.add_argument("--coordinator-address", help="HOST:PORT of process 0 (jax.distributed.initialize)")
    parser.add_argument("--num-processes", type=int, help=num_processes_help)
    parser.add_argument("--process-id", type=int, help="this process's index (jax.distributed.initialize)")


def build_parser() -> argparse.ArgumentParser:
    from musicgen_jax import compilation_cache

    parser = ArgumentParser(prog="musicgen-jax", description="MusicGen Melody in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="text (and melody) to WAV files")
    gen.add_argument("--model", required=True, help="checkpoint directory, converted directory, or Hub id")
    gen.add_argument("--text", action="append", help="a description; repeat for several outputs")
    gen.add_argument("--melody", help="an audio file whose melody conditions the music (any format librosa reads)")
    length = gen.add_mutually_exclusive_group()
    length.add_argument(
        "--duration", type=float, help="seconds of audio; past one window, generated window by window (long-form)"
    )
    length.add_argument("--max-new-tokens", type=int, help="decoder steps")
    gen.add_argument(
        "--window", type=float, help="long-form: seconds each window holds (default 30, what MusicGen was trained on)"
    )
    gen.add_argument(
        "--stride",
        type=float,
        help="long-form: seconds from one window's start to the next (default 18, or 0.6 of --window)",
    )
    gen.add_argument("--guidance-scale", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--lora", help="LoRA adapter folder (a finetune run's OUT/lora): merged into the weights")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    gen.add_argument(
        "--matmul-precision",
        default=None,
        choices=["highest", "high", "default"],
        help="matmul precision on TPU/GPU (default: exact float32 for float32 weights, bf16 passes for bfloat16); "
        "'high' or 'default' trade float32 exactness for speed",
    )
    gen.add_argument("--out", default="musicgen_out.wav", help="output WAV (more texts: out_1.wav, ...)")
    gen.add_argument(
        "--overwrite", action="store_true", help="replace existing output files that musicgen-jax did not write"
    )
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    compilation_cache.add_argument(gen)
    gen.set_defaults(func=cmd_generate)

    bat = sub.add_parser(
        "batch",
        help="a JSONL job file to WAVs and a manifest, on one process or many",
        description="Runs a job file (one JSON object per line: id, text, duration, seed, optional melody, "
        "guidance_scale, top_k, top_p, temperature, do_sample) into DIR/<id>.wav and DIR/manifest*.jsonl. A rerun "
        "skips finished jobs and retries failed ones. Exits 0 when every job succeeded, 1 when one failed, 2 on "
        "bad arguments.",
    )
    bat.add_argument("--model", required=True, help="checkpoint directory, converted directory, or Hub id")
    bat.add_argument("--jobs", required=True, help="the job file (JSONL); melody paths are relative to its folder")
    bat.add_argument("--out", required=True, help="output folder: <id>.wav per job and the manifest")
    bat.add_argument("--batch-size", type=int, help="rows per compiled batch (default 4)")
    bat.add_argument(
        "--text-length",
        type=int,
        help="tokens every prompt is padded to (default 64); a longer prompt is an error for its job",
    )
    bat.add_argument(
        "--buckets",
        help="durations (s) a job is rounded up to for its compiled shape (default 1,2,4,8,15,30); past the "
        "window, long-form",
    )
    bat.add_argument("--window", type=float, help="long-form window in seconds (default 30)")
    bat.add_argument("--stride", type=float, help="long-form stride in seconds (default 18, or 0.6 of --window)")
    bat.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    bat.add_argument("--matmul-precision", default=None, choices=["highest", "high", "default"])
    _add_distributed_arguments(bat, "processes in the job (jax.distributed.initialize)")
    bat.add_argument("--quiet", action="store_true", help="no progress bar")
    compilation_cache.add_argument(bat)
    bat.set_defaults(func=cmd_batch)

    conv = sub.add_parser("convert", help="HF checkpoint -> musicgen-jax (orbax) directory")
    conv.add_argument("--src", required=True, help="HF checkpoint directory or Hub id")
    conv.add_argument("--dst", required=True)
    conv.add_argument("--dtype", default="auto", choices=["float32", "bfloat16", "auto"])
    conv.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    conv.set_defaults(func=cmd_convert)

    exp = sub.add_parser(
        "export",
        help="training or converted checkpoint -> transformers (HF safetensors) folder",
        description="Writes a folder transformers' MusicgenMelodyForConditionalGeneration / "
        "MusicgenForConditionalGeneration loads: model.safetensors, config.json, generation_config.json and the base "
        "model's tokenizer/preprocessor files. LoRA adapters are merged into the weights.",
    )
    exp.add_argument(
        "--src", required=True, help="a finetune run's checkpoints folder (OUT/checkpoints) or a converted checkpoint"
    )
    exp.add_argument("--dst", required=True, help="new or empty folder (an earlier export there is replaced)")
    exp.add_argument("--step", type=int, help="the training step to export (default: the latest)")
    exp.add_argument("--model", help="the base model folder (default: the one the training checkpoint records)")
    exp.set_defaults(func=cmd_export)

    rnd = sub.add_parser("random-checkpoint", help="write a small random-weight checkpoint (generates noise)")
    rnd.add_argument("dst")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.add_argument(
        "--family",
        default="musicgen_melody",
        choices=["musicgen_melody", "musicgen"],
        help="MusicGen Melody (default; text and melody) or plain MusicGen (text only, cross-attention)",
    )
    rnd.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    rnd.set_defaults(func=cmd_random_checkpoint)

    ft = sub.add_parser(
        "finetune",
        help="fine-tune on a folder of captioned audio files",
        description="Fine-tune MusicGen Melody or MusicGen on a folder of captioned audio files (same-named .txt "
        "captions or a metadata.jsonl), with audiocraft's condition dropout.",
    )
    ft.add_argument("--model", required=True, help="model directory (HF checkpoint with tokenizer files)")
    ft.add_argument(
        "--data",
        required=True,
        help="folder of audio files (any rate, mono or stereo), each with a same-named .txt caption, or with a "
        'metadata.jsonl of {"path": ..., "caption": ...} lines',
    )
    ft.add_argument("--out", required=True, help="output folder: cache/, checkpoints/, samples/, metrics.jsonl")
    ft.add_argument("--steps", type=int, default=1000, help="optimizer steps in total (default 1000)")
    ft.add_argument("--batch-size", type=int, default=4, help="clips per step (default 4)")
    ft.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (default 1e-5)")
    ft.add_argument("--warmup", type=int, default=0, help="linear warmup steps before the cosine decay (default 0)")
    ft.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    ft.add_argument("--clip-norm", type=float, default=1.0, help="global gradient norm clip, 0 for none (default 1)")
    ft.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    ft.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds per training crop: a longer file gives a new random crop each epoch, a shorter one is "
        "padded (default 10)",
    )
    ft.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data order, crops, validation split and condition dropout (default 0)",
    )
    ft.add_argument("--bf16", action="store_true", help="bfloat16 compute over float32 master weights")
    ft.add_argument("--no-dropout", action="store_true", help="turn the config's dropout off")
    ft.add_argument(
        "--remat",
        action="store_true",
        help="gradient checkpointing: recompute each decoder layer in the backward pass (less memory, ~1/3 slower)",
    )
    ft.add_argument("--train-text-encoder", action="store_true", help="train the T5 text encoder too")
    ft.add_argument(
        "--mesh",
        default=None,
        help="DATAxMODEL device mesh, e.g. 8x1 or 2x4 (default: one device; with several processes, data parallel "
        "over every device of the job)",
    )
    ft.add_argument(
        "--cfg-dropout",
        type=float,
        help="probability that a clip drops all its conditions and trains the unconditional branch guidance "
        "contrasts against (default, as audiocraft: 0.2 for melody models, 0.3 for text-only; 0 for none)",
    )
    ft.add_argument(
        "--melody-dropout",
        type=float,
        help="melody models: probability that a clip's melody alone becomes the null chroma (default 0.5)",
    )
    ft.add_argument(
        "--word-dropout",
        type=float,
        help="probability that each word of a caption is dropped (default 0.2 for melody models, 0.3 text-only)",
    )
    ft.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="share of the --data clips held out for validation, drawn by --seed (default 0)",
    )
    ft.add_argument("--val-data", help="a folder of validation clips, laid out like --data")
    ft.add_argument(
        "--val-every",
        type=int,
        help="steps between validation losses (no dropout, fixed crops; default: --save-every)",
    )
    ft.add_argument(
        "--sample-every",
        type=int,
        default=0,
        help="steps between audio samples from the weights being trained, written to OUT/samples/step-N/ "
        "(default 0: none)",
    )
    ft.add_argument(
        "--sample-prompts",
        action="append",
        help="a text to sample, prompt i with seed i; repeat for several (default: two fixed prompts)",
    )
    ft.add_argument("--sample-seconds", type=float, default=5.0, help="seconds per sample (default 5)")
    _add_distributed_arguments(ft, "processes in the job; --batch-size is the global batch")
    ft.add_argument(
        "--lora-rank",
        type=int,
        help="train LoRA adapters of this rank on the decoder instead of all its weights (default: full fine-tuning)",
    )
    ft.add_argument("--lora-alpha", type=float, help="LoRA alpha: the update is scaled by alpha/rank (default: rank)")
    ft.add_argument(
        "--lora-targets",
        help="comma-separated projections to adapt (default q,k,v,out,up,down: self-attention and MLP; plain MusicGen "
        "also has cross_q,cross_k,cross_v,cross_out)",
    )
    ft.add_argument("--log-every", type=int, default=10, help="steps between log lines (default 10)")
    ft.add_argument("--save-every", type=int, default=500, help="steps between checkpoints (default 500)")
    ft.add_argument("--keep", type=int, default=3, help="checkpoints to keep (default 3)")
    compilation_cache.add_argument(ft)
    ft.set_defaults(func=cmd_finetune)

    ver = sub.add_parser(
        "verify",
        help="check a checkpoint on this machine: float32 parity with HF transformers, bfloat16 vs float32",
        description="Check a checkpoint on this machine: T5 states, logits and greedy codes against HF transformers "
        "(float32, CPU), and bfloat16 against float32. Prints a table; exits 0 when every check passes, 1 when one "
        "fails, 2 on bad input.",
    )
    ver.add_argument("--model", required=True, help="HF checkpoint directory, converted directory, or Hub id")
    ver.add_argument(
        "--hf", help="the HF checkpoint to compare against (default --model itself; needed for a converted directory)"
    )
    ver.add_argument("--steps", type=int, default=16, help="greedy decoder steps to compare (default 16)")
    ver.add_argument("--guidance-scale", type=float, help="default: the checkpoint's generation config")
    ver.add_argument(
        "--rtol", type=float, default=1e-4, help="float32 relative error allowed vs HF (states, logits, audio; 1e-4)"
    )
    ver.add_argument(
        "--bf16-rtol", type=float, default=5e-2, help="bfloat16 logits' relative error allowed (default 5e-2)"
    )
    compilation_cache.add_argument(ver)
    ver.set_defaults(func=cmd_verify)
    return parser


def _quiet_libraries() -> None:
    """orbax and tensorstore log through absl at INFO/WARNING; the CLI's own lines are what the user reads."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


def _run(argv: list[str]) -> int:
    try:
        if not os.environ.get("MUSICGEN_JAX_DEBUG"):
            _quiet_libraries()
        args = build_parser().parse_args(argv)
        from musicgen_jax import compilation_cache

        if getattr(args, "no_compilation_cache", False):
            with compilation_cache.refused():
                return args.func(args)
        compilation_cache.enable()
        return args.func(args)
    except KeyboardInterrupt:
        print("musicgen-jax: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # expected failures carry one-line messages; anything else is still one line
        if os.environ.get("MUSICGEN_JAX_DEBUG"):
            raise
        print(f"musicgen-jax: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR


def main(argv: list[str] | None = None, exiting: bool | None = None) -> int:
    """The command line: ``argv`` (default ``sys.argv[1:]``) -> exit status (0, 2 on a reported error).

    ``exiting``: the process ends with this call (default: when ``argv`` is None, as for the console script).
    """
    as_process = argv is None if exiting is None else exiting
    code = _run(sys.argv[1:] if argv is None else list(argv))
    if as_process and code != 0 and not os.environ.get("MUSICGEN_JAX_DEBUG"):
        # The error line is out. Background threads of orbax/tensorstore that still finish while the interpreter
        # shuts down (e.g. "Event loop is closed" from a failed read) must not add tracebacks after it.
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    return code


if __name__ == "__main__":
    sys.exit(main())
