"""Time to first audio (issue 20): a fresh process that imports, loads a checkpoint, generates 1 s and has the audio.

    python benchmarks/first_audio.py --config small                 # ~3 min on 2 cores
    python benchmarks/first_audio.py --config tiny --repeats 1      # smoke test, ~30 s

Three fresh processes per repeat, run in turn on the benchmark's random checkpoint (``benchmarks/bench/specs.py``;
the page cache is warmed for both formats first):

- HF: ``import torch, transformers``, ``from_pretrained`` of the safetensors, one ``generate``;
- musicgen-jax, first run: ``from_pretrained`` of the converted (orbax) checkpoint and one ``generate`` with an
  empty persistent compilation cache folder (everything compiles and is written to it);
- musicgen-jax, second run: the same with that folder filled (what every later run of a job or a CLI sees).

Each generates ``--seconds`` of audio (guidance 3, top-k 250, sampling; the benchmark's fixed text batch of
``--batch`` rows) and measures from the process's start, the interpreter's own start-up included (the parent times
the whole child), with the child's phases: imports, load, first generate. Writes
``benchmarks/results/first-audio-<config>.{json,md}``. Public API only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = time.perf_counter()


def child(side: str, path: str, steps: int, batch: int) -> dict:
    """One fresh process's phases (seconds from its first line)."""
    import numpy as np

    sys.path.insert(0, REPO)
    from benchmarks.bench import specs

    spec = specs.CONFIGS[os.environ["FIRST_AUDIO_CONFIG"]]
    ids, mask = specs.text_inputs(batch, 12, spec["text"].get("vocab_size", 32128))
    kwargs = {"do_sample": True, "guidance_scale": 3.0, "top_k": 250, "max_new_tokens": steps}
    t_start = time.perf_counter()
    if side == "hf":
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        model_class = specs.hf_class(spec)
        t_import = time.perf_counter()
        model = model_class.from_pretrained(path, dtype=torch.float32).eval()
        t_load = time.perf_counter()
        torch.manual_seed(0)
        with torch.inference_mode():
            audio = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **kwargs)
        audio = audio.numpy()
    else:
        import jax

        model_class = specs.jax_class(spec)
        t_import = time.perf_counter()
        model = model_class.from_pretrained(path)
        jax.block_until_ready(model.params)
        t_load = time.perf_counter()
        audio = np.asarray(model.generate(input_ids=ids, attention_mask=mask, seed=0, **kwargs))
    t_audio = time.perf_counter()
    return {
        "imports_s": (t_import - t_start) + (t_start - T0),
        "load_s": t_load - t_import,
        "generate_s": t_audio - t_load,
        "in_process_s": t_audio - T0,
        "audio_shape": list(audio.shape),
        "finite": bool(np.isfinite(audio).all()),
    }


def run_child(side: str, path: str, args, cache_dir: str | None) -> dict:
    env = {**os.environ, "FIRST_AUDIO_CONFIG": args.config, "PYTHONPATH": REPO}
    env.pop("XLA_FLAGS", None)
    if cache_dir is not None:
        env["MUSICGEN_JAX_CACHE_DIR"] = cache_dir
        env.pop("MUSICGEN_JAX_COMPILATION_CACHE", None)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", side, "--path", path]
    cmd += ["--steps", str(args.steps), "--batch", str(args.batch), "--config", args.config]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"first_audio: the {side} child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def warm_page_cache(*folders: str) -> None:
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                with open(os.path.join(root, name), "rb") as f:
                    while f.read(1 << 24):
                        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--seconds", type=float, default=1.0, help="audio to generate (default 1)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache-dir", default=os.path.join("/tmp", "musicgen-bench"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--child", choices=["hf", "jax"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.path, args.steps, args.batch)))
        return

    sys.path.insert(0, REPO)
    from benchmarks.bench import probes, specs

    spec = specs.CONFIGS[args.config]
    hop = 1
    for ratio in spec["audio"]["upsampling_ratios"]:
        hop *= ratio
    frame_rate = spec["audio"]["sampling_rate"] / hop
    codebooks = spec["decoder"].get("num_codebooks", 4)
    args.steps = int(round(args.seconds * frame_rate)) + codebooks - 1  # the delay pattern's K - 1 extra steps
    os.makedirs(args.cache_dir, exist_ok=True)
    hf_path = specs.checkpoint(args.config, args.cache_dir)["path"]
    jax_path = specs.converted(args.config, args.cache_dir)["path"]
    warm_page_cache(hf_path, jax_path)
    rows = {"hf": [], "jax_first": [], "jax_second": []}
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="first-audio-xla-") as xla_cache:
            rows["hf"].append(run_child("hf", hf_path, args, None))
            rows["jax_first"].append(run_child("jax", jax_path, args, xla_cache))
            rows["jax_second"].append(run_child("jax", jax_path, args, xla_cache))
        line = "  ".join(f"{k} {v[-1]['wall_s']:.2f} s" for k, v in rows.items())
        print(f"[first-audio] repeat {r + 1}/{args.repeats}: {line}", flush=True)

    def med(key, field):
        return statistics.median(x[field] for x in rows[key])

    hf_wall = med("hf", "wall_s")
    result = {
        "config": args.config,
        "seconds_of_audio": args.seconds,
        "steps": args.steps,
        "batch": args.batch,
        "cpu": probes.cpu_name(),
        "cores": probes.cores(),
        "repeats": args.repeats,
        "runs": rows,
        "ratio_hf_over_jax_first": hf_wall / med("jax_first", "wall_s"),
        "ratio_hf_over_jax_second": hf_wall / med("jax_second", "wall_s"),
    }
    lines = [
        f"# Time to first audio: {args.config}, {args.seconds:g} s of audio, batch {args.batch}",
        "",
        f"CPU: {result['cpu']} ({result['cores']} cores); medians of {args.repeats} fresh processes each; "
        f"`python benchmarks/first_audio.py --config {args.config} --seconds {args.seconds:g} --batch {args.batch}`",
        "",
        "| run | whole process | imports | load | first generate (compile included) | HF / this |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    names = {
        "hf": "HF transformers (safetensors)",
        "jax_first": "musicgen-jax, empty compilation cache",
        "jax_second": "musicgen-jax, compilation cache filled",
    }
    for key, name in names.items():
        ratio = hf_wall / med(key, "wall_s")
        cells = [f"{med(key, f):.2f} s" for f in ("wall_s", "imports_s", "load_s", "generate_s")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"first-audio-{args.config}")
    from musicgen_jax.files import atomic_write

    for suffix, text in ((".json", json.dumps(result, indent=1)), (".md", markdown)):
        with atomic_write(stem + suffix, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
