"""Fine-tuning memory (issue 21): the compiled train step's memory and the process's peak RSS, full fine-tuning vs
LoRA, with and without gradient checkpointing (``--remat``), per batch size; one fresh process per row.

    python benchmarks/finetune_memory.py                                   # small, batch 1,2,4,8, all four modes
    python benchmarks/finetune_memory.py --batches 1 --modes lora --remat on   # one row (a smoke test, ~2 min)
    python benchmarks/finetune_memory.py --config tiny --batches 1,2          # seconds

Each row builds the benchmark's model shape (``benchmarks/bench/specs.py``: "small" is musicgen-small's decoder with
T5-base and the 32 kHz EnCodec, as MusicGen Melody) with random float32 weights (no checkpoint, no torch), the
finetune command's optimizer (AdamW, global-norm clip) and train step (frozen T5 and EnCodec; LoRA: rank
``--lora-rank`` adapters on q, k, v, out, up, down, the decoder frozen), compiles the step for a batch of
``--duration`` seconds of codes (50 frames/s, 4 delayed codebooks), a ``--text-length`` token caption and its chroma,
and reads XLA's ``memory_analysis()`` (temporaries, arguments: the train state and the batch; outputs alias the
donated state), then runs ``--steps`` steps and reads the process's peak RSS (VmHWM). A row whose process dies
(out of memory) reads "did not fit". Prints a markdown table naming the CPU and writes
``benchmarks/results/finetune-memory-<config>.json``. Public API only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
MODES = ("full", "lora")
MiB = 2**20


def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def model_config(name: str):
    """Our config of a benchmark spec, read by the strict HF-json parser (no transformers needed)."""
    from benchmarks.bench import specs
    from musicgen_jax.config import MusicgenMelodyConfig

    spec = specs.CONFIGS[name]
    if specs.family(spec) != "melody":
        raise SystemExit(f"--config {name}: this table is for the MusicGen Melody shapes (tiny, small, melody)")
    decoder = dict(spec["decoder"], num_codebooks=4, pad_token_id=spec["decoder"]["vocab_size"])
    decoder["bos_token_id"] = decoder["pad_token_id"]
    return MusicgenMelodyConfig.from_hf(
        {
            "model_type": "musicgen_melody",
            "text_encoder": {"model_type": "t5", **spec["text"]},
            "audio_encoder": {"model_type": "encodec", **spec["audio"]},
            "decoder": {"model_type": "musicgen_melody_decoder", **decoder},
            **spec.get("top", {}),
        },
        where=f"benchmarks spec {name}",
    )


def batch_of(config, batch: int, duration: float, text_length: int) -> dict:
    """A random training batch of the finetune command's shapes (numpy)."""
    import numpy as np

    from musicgen_jax import training

    rng = np.random.default_rng(0)
    dec, codec = config.decoder, config.audio_encoder
    frames = round(duration * codec.frame_rate)
    codes = rng.integers(0, dec.vocab_size, (batch, dec.num_codebooks, frames))
    chroma_frames = min(config.chroma_length, round(duration * codec.sampling_rate / 4096) + 1)  # HF hop 4096
    return {
        "input_ids": rng.integers(2, config.text_encoder.vocab_size, (batch, text_length)).astype(np.int32),
        "attention_mask": np.ones((batch, text_length), np.int32),
        "input_features": np.eye(config.num_chroma, dtype=np.float32)[
            rng.integers(0, config.num_chroma, (batch, chroma_frames))
        ],
        "labels": training.delay_labels(codes, dec.pad_token_id).astype(np.int32),
    }


def one(args) -> dict:
    """One row, in this process."""
    import jax
    import jax.numpy as jnp

    from musicgen_jax import lora, training

    config = model_config(args.config)
    params = training.init_params(config, seed=0)
    optimizer = training.make_optimizer(1e-5)
    lora_config = lora.LoraConfig(args.lora_rank) if args.mode == "lora" else None
    if lora_config is None:
        trainable = training.default_trainable(params)
    else:
        params = {**params, lora.PART: lora.init(jax.random.PRNGKey(0), params["decoder"], lora_config)}
        trainable = (lora.PART,)
    state = training.init_train_state(params, optimizer, trainable)
    del params
    step = training.make_train_step(config, optimizer, trainable=trainable, lora=lora_config, remat=args.remat == "on")
    batch = jax.tree_util.tree_map(jnp.asarray, batch_of(config, args.batch, args.duration, args.text_length))
    started = time.perf_counter()
    compiled = step.jitted.lower(state, batch).compile()
    compile_s = time.perf_counter() - started
    memory = compiled.memory_analysis()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        state, metrics = step(state, batch)
        float(metrics["loss"])
        times.append(time.perf_counter() - started)
    return {
        "mode": args.mode,
        "remat": args.remat == "on",
        "batch": args.batch,
        "positions": int(batch["labels"].shape[1]),
        "temp_bytes": int(memory.temp_size_in_bytes),
        "argument_bytes": int(memory.argument_size_in_bytes),
        "output_bytes": int(memory.output_size_in_bytes),
        "alias_bytes": int(memory.alias_size_in_bytes),
        "peak_rss_bytes": _kib("VmHWM") * 1024,
        "compile_s": compile_s,
        "step_s": min(times[1:] or times),
        "trainable_numbers": sum(x.size for x in jax.tree_util.tree_leaves({k: state.params[k] for k in trainable})),
    }


def _row_cmd(args, mode: str, remat: str, batch: int) -> list[str]:
    flags = ["--config", args.config, "--duration", str(args.duration), "--text-length", str(args.text_length)]
    flags += ["--lora-rank", str(args.lora_rank), "--steps", str(args.steps)]
    return [sys.executable, os.path.abspath(__file__), "--one", mode, remat, str(batch), *flags]


def table(rows: list[dict], args, cpu: str) -> str:
    lines = [
        f"Fine-tuning memory, `{args.config}` (MusicGen Melody), {args.duration:g} s clips, caption of "
        f"{args.text_length} tokens, float32, LoRA rank {args.lora_rank}; {cpu}, JAX CPU backend",
        "",
        "| mode | remat | batch | temp MiB | arguments MiB | temp + arguments MiB | peak RSS MiB | step s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        head = f"| {r['mode']} | {'on' if r['remat'] else 'off'} | {r['batch']} |"
        if "error" in r:
            lines.append(f"{head} did not fit ({r['error']}) | | | | |")
            continue
        temp, arg = r["temp_bytes"] / MiB, r["argument_bytes"] / MiB
        lines.append(
            f"{head} {temp:,.0f} | {arg:,.0f} | {temp + arg:,.0f} | {r['peak_rss_bytes'] / MiB:,.0f} | "
            f"{r['step_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small", help="benchmarks/bench/specs.py shape (default small)")
    parser.add_argument("--batches", default="1,2,4,8", help="comma-separated batch sizes (default 1,2,4,8)")
    parser.add_argument("--modes", default="full,lora", help="full, lora or both (default both)")
    parser.add_argument("--remat", default="off,on", help="off, on or both (default both)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of audio per clip (default 10)")
    parser.add_argument("--text-length", type=int, default=16, help="caption tokens (default 16)")
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--steps", type=int, default=2, help="steps run after compiling (default 2)")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--one", nargs=3, metavar=("MODE", "REMAT", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        args.mode, args.remat, args.batch = args.one[0], args.one[1], int(args.one[2])
        print(json.dumps(one(args)))
        return 0

    modes = [m for m in args.modes.split(",") if m]
    remats = [r for r in args.remat.split(",") if r]
    batches = [int(b) for b in args.batches.split(",") if b]
    if not set(modes) <= set(MODES) or not set(remats) <= {"off", "on"} or not batches:
        parser.error("--modes takes full,lora; --remat off,on; --batches positive integers")
    cpu = cpu_name()
    rows = []
    for mode in modes:
        for remat in remats:
            for batch in batches:
                result = subprocess.run(_row_cmd(args, mode, remat, batch), capture_output=True, text=True, cwd=REPO)
                if result.returncode == 0:
                    rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
                else:
                    reason = "killed" if result.returncode < 0 else f"exit {result.returncode}"
                    tail = (result.stderr.strip().splitlines() or [""])[-1][:120]
                    print(f"[{mode} remat {remat} batch {batch}] {reason}: {tail}", file=sys.stderr)
                    rows.append({"mode": mode, "remat": remat == "on", "batch": batch, "error": reason})
                print(table(rows[-1:], args, cpu).splitlines()[-1], flush=True)
    print()
    print(table(rows, args, cpu))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"finetune-memory-{args.config}.json")
    from musicgen_jax.files import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump({"cpu": cpu, "config": args.config, "duration": args.duration, "rows": rows}, f, indent=2)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
