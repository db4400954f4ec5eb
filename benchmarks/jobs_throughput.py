"""The batch job runner's throughput (issue 19) against HF looping over the same jobs at the same batch size.

    python benchmarks/jobs_throughput.py --config small --batch 1,4,16      # ~40 min on 2 cores
    python benchmarks/jobs_throughput.py --config tiny --batch 1,4          # smoke test, ~1 min

16 jobs of at most 2 s (mixed durations 0.6-2 s, every third with a melody, guidance 3, top-k 250, sampling) on the
benchmark's random checkpoint (``benchmarks/bench/specs.py``) with a tiny T5 tokenizer beside it. Each batch size
runs in a fresh process:

- musicgen-jax: ``musicgen_jax.jobs.run`` over the job file (WAVs and manifest written), twice: the first pass
  pays the compilation (reported; the persistent compilation cache is off), the second, into a new folder, is the
  steady state;
- HF: the same jobs in the same groups and batches, each batch one ``generate`` call (HF's T5 tokenizer pads the
  texts, the chroma from our feature extractor as HF has no torchaudio here, the batch's longest duration as
  ``max_new_tokens``, each row cut to its own duration, one WAV per job).

Reports audio seconds per wall second for both, the ratio, and the compile share of the runner's first pass.
Writes ``benchmarks/results/jobs-<config>.json``. Public API only (and ``musicgen_jax.jobs``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = 16


def job_lines() -> list[dict]:
    """The 16 jobs: durations 0.6-2.0 s, every third with the melody."""
    texts = ["lofi hip hop beat", "epic orchestral score", "jazz trio at night", "ambient drone", "rock anthem"]
    rows = []
    for i in range(JOBS):
        row = {
            "id": f"job{i:02d}",
            "text": texts[i % len(texts)],
            "duration": round(0.6 + (i * 7 % 15) * 0.1, 2),
            "seed": i,
            "do_sample": True,
            "guidance_scale": 3.0,
            "top_k": 250,
        }
        if i % 3 == 0:
            row["melody"] = "tune.wav"
        rows.append(row)
    return rows


def prepare(config: str, cache_dir: str, folder: str) -> str:
    """The checkpoint (with a tokenizer), the job file and the melody; returns the checkpoint's path."""
    sys.path.insert(0, REPO)
    import soundfile

    from benchmarks.bench import specs
    from tests.helpers import save_tiny_tokenizer

    path, _ = specs.build_checkpoint(config, cache_dir)
    if not os.path.exists(os.path.join(path, "spiece.model")):
        save_tiny_tokenizer(path)
    os.makedirs(folder, exist_ok=True)
    t = np.arange(32000 * 4) / 32000
    soundfile.write(os.path.join(folder, "tune.wav"), 0.3 * np.sin(2 * np.pi * 220 * t * (1 + t / 8)), 32000)
    with open(os.path.join(folder, "jobs.jsonl"), "w") as f:
        for row in job_lines():
            f.write(json.dumps(row) + "\n")
    return path


def ours(path: str, folder: str, batch: int) -> dict:
    import musicgen_jax
    from musicgen_jax import jobs
    from musicgen_jax.tokenizer import T5TextTokenizer

    model = musicgen_jax.MusicgenMelodyForConditionalGeneration.from_pretrained(path)
    tokenizer = T5TextTokenizer.from_pretrained(path)
    settings = jobs.Settings(batch_size=batch, text_length=32)  # the tiny tokenizer's pieces are short
    passes = []
    for name in ("first", "steady"):
        out = os.path.join(folder, f"ours-b{batch}-{name}")
        shutil.rmtree(out, ignore_errors=True)  # this script's own output of an earlier run: start afresh
        job_file = os.path.join(folder, "jobs.jsonl")
        summary = jobs.run(lambda: (model, tokenizer), job_file, out, settings, progress=False)
        assert summary.failed == 0, out
        passes.append(summary)
    first, steady = passes
    return {
        "first_wall_s": first.wall_seconds,
        "first_compile_s": first.compile_seconds,
        "steady_wall_s": steady.wall_seconds,
        "audio_s": steady.audio_seconds,
    }


def hf(path: str, folder: str, batch: int) -> dict:
    """HF: the runner's batches (same groups, same order), one generate call each."""
    import torch
    from transformers import MusicgenMelodyForConditionalGeneration

    from musicgen_jax import audio, jobs

    torch.manual_seed(0)
    model = MusicgenMelodyForConditionalGeneration.from_pretrained(path).eval()
    from transformers import AutoTokenizer

    from musicgen_jax import MusicgenMelodyFeatureExtractor

    # HF's feature extractor needs torchaudio, which this machine lacks: ours computes the same chroma (tests/
    # test_chroma.py checks it against HF's) and HF gets it as input_features
    tokenizer, chroma = AutoTokenizer.from_pretrained(path), MusicgenMelodyFeatureExtractor()
    items = [item for item in jobs.read_jobs(os.path.join(folder, "jobs.jsonl")) if isinstance(item, jobs.Job)]
    groups: dict = {}
    for job in items:  # as the runner groups them: melody or not (the rest is the same for every job here)
        groups.setdefault(job.melody is not None, []).append(job)
    batches = [g[i : i + batch] for g in groups.values() for i in range(0, len(g), batch)]
    melody, rate = audio.load(os.path.join(folder, "tune.wav"))
    out = os.path.join(folder, f"hf-b{batch}")
    os.makedirs(out, exist_ok=True)
    fr, sr = model.config.audio_encoder.frame_rate, model.config.audio_encoder.sampling_rate
    total_audio, start = 0.0, time.perf_counter()
    for rows in batches:
        inputs = dict(tokenizer([job.text for job in rows], padding=True, return_tensors="pt"))
        if rows[0].melody is not None:
            feats = chroma([np.asarray(melody).mean(0)] * len(rows), sampling_rate=rate)["input_features"]
            inputs["input_features"] = torch.from_numpy(np.asarray(feats))
        frames = [int(np.ceil(job.duration * fr - 1e-6)) for job in rows]
        with torch.no_grad():
            wave = model.generate(
                **inputs, do_sample=True, guidance_scale=3.0, top_k=250, max_new_tokens=max(frames) + 3
            ).numpy()
        hop = sr // fr
        for job, n, w in zip(rows, frames, wave, strict=True):
            audio.save_wav(os.path.join(out, f"{job.id}.wav"), w[:, : n * hop], sr)
            total_audio += n * hop / sr
    return {"wall_s": time.perf_counter() - start, "audio_s": total_audio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--batch", default="1,4,16")
    parser.add_argument("--cache-dir", default="/tmp/musicgen-bench")
    parser.add_argument("--work", default="/tmp/musicgen-bench/jobs")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "side:batch" in a child
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = parser.parse_args()
    folder = os.path.join(args.work, args.config)
    if args.one is not None:
        side, batch = args.one.split(":")
        path = prepare(args.config, args.cache_dir, folder)
        result = (ours if side == "ours" else hf)(path, folder, int(batch))
        print("ROW " + json.dumps(result), flush=True)
        return
    sys.path.insert(0, REPO)
    from benchmarks.bench import probes, specs

    specs.checkpoint(args.config, args.cache_dir)  # built once, in a child process
    rows = []
    for batch in (int(b) for b in args.batch.split(",")):
        row = {"batch": batch}
        for side in ("ours", "hf"):
            cmd = [sys.executable, __file__, "--config", args.config, "--one", f"{side}:{batch}"]
            cmd += ["--cache-dir", args.cache_dir, "--work", args.work]
            # no persistent compilation cache: the first pass pays the whole compilation, as on a new machine
            env = {**os.environ, "MUSICGEN_JAX_COMPILATION_CACHE": "0"}
            result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False, env=env)
            line = [x for x in result.stdout.splitlines() if x.startswith("ROW ")]
            if result.returncode or not line:
                sys.exit(f"{side} batch {batch}: failed\n{result.stderr[-3000:]}")
            row[side] = json.loads(line[0][4:])
        rows.append(row)
        print(json.dumps(row), flush=True)
    cpu = probes.cpu_name()
    what = f"{JOBS} jobs of 0.6-2 s (a third with a melody), CFG 3, top-k 250"
    print(f"\n{args.config}, {what}; {cpu}, {probes.cores()} cores\n")
    print("| batch | HF audio s/s | musicgen-jax audio s/s (steady) | ratio | first pass | of which compile |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        o, h = r["ours"], r["hf"]
        ours_rate, hf_rate = o["audio_s"] / o["steady_wall_s"], h["audio_s"] / h["wall_s"]
        print(
            f"| {r['batch']} | {hf_rate:.3f} | {ours_rate:.3f} | **{ours_rate / hf_rate:.2f}** | "
            f"{o['first_wall_s']:.1f} s | {o['first_compile_s']:.1f} s "
            f"({o['first_compile_s'] / o['first_wall_s']:.0%}) |"
        )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"jobs-{args.config}.json"), "w") as f:
        json.dump({"cpu": cpu, "jobs": JOBS, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
