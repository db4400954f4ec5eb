"""The KV cache's layout A/B: the buffer in phases (``sampling.phase_ends``) against one buffer for the whole loop,
and the last buffer's slack (``sampling.buffer_slack``) on and off; generate's time, interleaved in one process per
batch.

    python benchmarks/cache_phases.py --config small --batch 1,4 --steps 1500 --settings 0,512,1024  # 30 s of audio
    python benchmarks/cache_phases.py --config small --batch 1 --steps 256 --settings 0,0-noslack      # the slack
    python benchmarks/cache_phases.py --config tiny --batch 1 --steps 300          # smoke test, ~1 min

Each batch runs in a fresh process with a fresh, empty compilation cache folder (so each setting's first call
compiles cold): a short warm-up call (T5), then for each setting (``--settings``: a phase length, 0 for one buffer,
with ``-noslack`` for no slack) one call, then ``--repeats`` more rounds of one call each, interleaved. Every call is
``generate`` on the benchmark's random checkpoint (``benchmarks/bench/specs.py``: sampling, top-k 250, guidance 3,
seed 0), so the codes of every setting must be the same. Prints a markdown table; writes
``benchmarks/results/cache-phases-<config>-s<steps>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def one(config: str, batch: int, steps: int, settings: list[str], repeats: int, cache_dir: str) -> dict:
    """One batch, in this process."""
    sys.path.insert(0, REPO)
    import numpy as np

    import musicgen_jax
    from benchmarks.bench import specs
    from musicgen_jax import sampling

    path, _ = specs.build_checkpoint(config, cache_dir)
    model = musicgen_jax.MusicgenMelodyForConditionalGeneration.from_pretrained(path)
    ids, mask = specs.text_inputs(batch, 12, specs.CONFIGS[config]["text"]["vocab_size"])
    kwargs = dict(specs.GENERATE_KWARGS, return_dict_in_generate=True, seed=0)
    model.generate(ids, mask, **{**kwargs, "max_new_tokens": 8})  # T5 and the short programs, out of the way
    runs = {s: [] for s in settings}
    codes = {}
    one_thread = sampling.ONE_THREAD_GEMV
    for round_ in range(1 + repeats):
        for s in settings:
            length, _, flag = s.partition("-")
            sampling.PHASE_LENGTH = int(length)
            sampling.ONE_THREAD_GEMV = 0 if flag == "noslack" else one_thread
            out = model.generate(ids, mask, **{**kwargs, "max_new_tokens": steps})
            runs[s].append({k: float(v) for k, v in out.stats.items() if isinstance(v, int | float)})
            codes.setdefault(s, np.asarray(out.audio_codes))
            print(f"  batch {batch} setting {s} round {round_}: {runs[s][-1]['decode_seconds']:.2f} s", flush=True)
    base = codes[settings[0]]
    rows = []
    for s in settings:
        decode = [r["decode_seconds"] for r in runs[s]]
        length, _, flag = s.partition("-")
        rows.append(
            {
                "setting": s,
                "phase_length": int(length),
                "slack": flag != "noslack",
                "phases": len(sampling.phase_ends(1, steps + 1, int(length))),
                "decode_s": decode,
                "decode_median_s": statistics.median(decode),
                "step_ms": 1000 * statistics.median(decode) / (steps - 1),
                "first_call_compile_s": runs[s][0]["compile_seconds"],
                "same_codes": bool(np.array_equal(codes[s], base)),
            }
        )
    return {"config": config, "batch": batch, "steps": steps, "cpu": _cpu(), "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--batch", default="1,4")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument(
        "--settings",
        default="0,1024",
        help="phase lengths (0: one buffer), '-noslack' for no slack; the first is the reference",
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "musicgen-bench"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = args.settings.split(",")
    if args.one:
        result = one(args.config, int(args.batch), args.steps, settings, args.repeats, args.cache_dir)
        print("RESULT " + json.dumps(result))
        return 0
    results = []
    for batch in [int(b) for b in args.batch.split(",")]:
        with tempfile.TemporaryDirectory() as xla_cache:
            env = dict(os.environ, MUSICGEN_JAX_CACHE_DIR=xla_cache)
            cmd = [sys.executable, os.path.abspath(__file__), "--one", "--batch", str(batch)]
            cmd += ["--config", args.config, "--steps", str(args.steps), "--settings", args.settings]
            cmd += ["--repeats", str(args.repeats), "--cache-dir", args.cache_dir]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            return 1
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    print(f"CPU: {results[0]['cpu']}; config {args.config}, {args.steps} steps")
    print("| batch | phase length | slack | phases | decode (median) | per step | first call's compile | same codes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for res in results:
        for row in res["rows"]:
            print(
                f"| {res['batch']} | {row['phase_length'] or 'one buffer'} | {'on' if row['slack'] else 'off'} "
                f"| {row['phases']} "
                f"| {row['decode_median_s']:.2f} s | {row['step_ms']:.1f} ms | {row['first_call_compile_s']:.1f} s "
                f"| {row['same_codes']} |"
            )
    os.makedirs(args.out, exist_ok=True)
    target = os.path.join(args.out, f"cache-phases-{args.config}-s{args.steps}.json")
    with tempfile.NamedTemporaryFile("w", dir=args.out, delete=False, suffix=".tmp") as f:
        json.dump(results, f, indent=1)
    os.replace(f.name, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
