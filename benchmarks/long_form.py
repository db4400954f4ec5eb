"""Long-form generation (issue 18): per-step time and peak memory against duration, one fresh process per duration.

    python benchmarks/long_form.py --config small --durations 30,120,300      # ~40 min on 2 cores
    python benchmarks/long_form.py --config tiny --durations 30,120           # smoke test, ~1 min

Each row: ``generate(text, duration=D)`` (sampling, top-k 250, guidance 3, batch 1; windows of 30 s every 18 s past
30 s) on the benchmark's random checkpoint (``benchmarks/bench/specs.py``), after one warm-up call of the same
duration's first window shapes (a 30 s call) so that the row's figures are steady state; the peak RSS (VmHWM) of the
process. HF cannot generate past its position table (~36 s for musicgen-small): there is no HF row past 30 s.
Prints a markdown table and writes ``benchmarks/results/long-form-<config>.json``. Public API only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def one(config: str, duration: float, cache_dir: str) -> dict:
    """One duration, in this process."""
    sys.path.insert(0, REPO)
    import musicgen_jax
    from benchmarks.bench import specs

    path, _ = specs.build_checkpoint(config, cache_dir)
    model = musicgen_jax.MusicgenMelodyForConditionalGeneration.from_pretrained(path)
    ids, mask = specs.text_inputs(1, 12, specs.CONFIGS[config]["text"]["vocab_size"])
    kwargs = dict(specs.GENERATE_KWARGS, return_dict_in_generate=True, seed=0)
    model.generate(ids, mask, duration=min(duration, 30.0), **kwargs)  # compile the programs once
    if duration > 30.0:
        model.generate(ids, mask, duration=48.5, **kwargs)  # and the long-form ones (2 windows, the last partial)
    loaded_rss = _kib("VmRSS")
    start = time.perf_counter()
    out = model.generate(ids, mask, duration=duration, **kwargs)
    wall = time.perf_counter() - start
    stats = out.stats
    return {
        "config": config,
        "duration_s": duration,
        "windows": stats["windows"],
        "decode_steps": stats["decode_steps"],
        "step_ms": 1000 * stats["decode_seconds"] / stats["decode_steps"],
        "prefill_s": stats["prefill_seconds"],
        "codec_s": stats["codec_decode_seconds"],
        "compile_s": stats["compile_seconds"],
        "wall_s": wall,
        "rss_before_gib": loaded_rss / 2**20,
        "peak_rss_gib": _kib("VmHWM") / 2**20,
        "audio_s": stats["audio_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--durations", default="30,120,300")
    parser.add_argument("--cache-dir", default="/tmp/musicgen-bench")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # internal: one duration in a child
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = parser.parse_args()
    if args.one is not None:
        print("ROW " + json.dumps(one(args.config, args.one, args.cache_dir)), flush=True)
        return
    sys.path.insert(0, REPO)
    from benchmarks.bench import probes, specs

    specs.checkpoint(args.config, args.cache_dir)  # built once, in a child process
    rows = []
    for duration in (float(d) for d in args.durations.split(",")):
        cmd = [sys.executable, __file__, "--config", args.config, "--one", str(duration), "--cache-dir", args.cache_dir]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
        line = [x for x in result.stdout.splitlines() if x.startswith("ROW ")]
        if result.returncode or not line:
            sys.exit(f"duration {duration}: failed\n{result.stderr[-2000:]}")
        rows.append(json.loads(line[0][4:]))
        print(json.dumps(rows[-1]), flush=True)
    cpu = probes.cpu_name()
    print(f"\n{args.config}, batch 1, {cpu}, {probes.cores()} cores\n")
    print("| audio | windows | decode steps | step | prefill (all windows) | codec | RSS before | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['duration_s']:g} s | {r['windows']} | {r['decode_steps']} | {r['step_ms']:.1f} ms | "
            f"{r['prefill_s']:.1f} s | {r['codec_s']:.1f} s | {r['rss_before_gib']:.2f} GiB | "
            f"{r['peak_rss_gib']:.2f} GiB |"
        )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"long-form-{args.config}.json"), "w") as f:
        json.dump({"cpu": cpu, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
