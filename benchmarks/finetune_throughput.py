"""Fine-tuning throughput (issue 21): musicgen-jax's train step against a plain PyTorch step of HF's model.

    python benchmarks/finetune_throughput.py --config small --batch 2 --seconds 2     # ~5 min on 2 cores
    python benchmarks/finetune_throughput.py --config tiny --batch 4 --steps 3        # smoke test, ~1 min

Both sides train the same random checkpoint (``benchmarks/bench/specs.py``) on the same batch: ``--batch`` rows of
the benchmark's fixed text, a random chroma (one-hot frames) and random codes of ``--seconds`` of audio in HF's
delayed label layout. The step is what ``musicgen-jax finetune`` runs by default, without dropout on either side so
that the losses can be compared: the decoder and both projections train, T5 and EnCodec are frozen; AdamW (lr 1e-5,
weight decay 0.01) after global-norm clipping at 1.0.

- HF: ``model(..., labels=...).loss`` (its own loss), ``loss.backward()``, ``clip_grad_norm_``,
  ``torch.optim.AdamW.step`` over the trainable parameters (``model.eval()``: no dropout; gradients flow);
- musicgen-jax: ``training.make_train_step`` (one jitted program) over the layout fine-tuning loads
  (``scan_layers=True``; ``--layout unrolled`` for the other).

The first step of each is a warm-up (JAX: compilation), then ``--steps`` steps alternate. Reports both losses at
step 1 (they must agree: same weights, same batch, same loss), steps/s and tokens/s (rows x positions x codebooks)
and the ratio, with the CPU model. Writes ``benchmarks/results/finetune-<config>.{json,md}``. Public API only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch_arrays(spec: dict, batch: int, seconds: float, chroma_length: int, seed: int = 0) -> dict:
    from benchmarks.bench import specs

    rng = np.random.default_rng(seed)
    hop = int(np.prod(spec["audio"]["upsampling_ratios"]))
    frames = int(round(seconds * spec["audio"]["sampling_rate"] / hop))
    K, V = spec["decoder"].get("num_codebooks", 4), spec["decoder"]["vocab_size"]
    ids, mask = specs.text_inputs(batch, 12, spec["text"].get("vocab_size", 32128))
    codes = rng.integers(0, V, (batch, K, frames))
    labels = np.full((batch, frames + K - 1, K), V, np.int64)  # the delay pattern: codebook k starts k late
    for k in range(K):
        labels[:, k : k + frames, k] = codes[:, k]
    chroma = np.eye(12, dtype=np.float32)[rng.integers(0, 12, (batch, chroma_length))]
    return {"input_ids": ids, "attention_mask": mask, "input_features": chroma, "labels": labels}


class HfTrainer:
    def __init__(self, path: str, spec: dict):
        import torch

        from benchmarks.bench import specs

        self.torch = torch
        self.model = specs.hf_class(spec).from_pretrained(path, dtype=torch.float32).eval()
        frozen = ("text_encoder.", "audio_encoder.")
        self.params = []
        for name, p in self.model.named_parameters():
            p.requires_grad_(not name.startswith(frozen))
            if p.requires_grad:
                self.params.append(p)
        self.opt = torch.optim.AdamW(self.params, lr=1e-5, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)

    def step(self, batch: dict) -> float:
        torch = self.torch
        inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
        self.opt.zero_grad(set_to_none=True)
        loss = self.model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return float(loss.detach())


class JaxTrainer:
    def __init__(self, path: str, spec: dict, layout: str):
        import jax
        import jax.numpy as jnp

        from benchmarks.bench import specs
        from musicgen_jax import training

        self.jax, self.jnp = jax, jnp
        model = specs.jax_class(spec).from_pretrained(path, scan_layers=layout == "scanned")
        optimizer = training.make_optimizer(1e-5, weight_decay=0.01, clip_norm=1.0)
        trainable = training.default_trainable(model.params)
        self.state = training.init_train_state(model.params, optimizer, trainable, seed=0)
        self.train_step = training.make_train_step(model.config, optimizer, trainable=trainable, dropout=False)
        self.chroma_length = model.config.chroma_length

    def step(self, batch: dict) -> float:
        batch = {k: self.jnp.asarray(v) for k, v in batch.items()}
        self.state, metrics = self.train_step(self.state, batch)
        return float(metrics["loss"])  # waits for the step


def timed(fn, *args) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per row (default 2)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side after the warm-up (default 4)")
    parser.add_argument("--layout", choices=["scanned", "unrolled"], default="scanned")
    parser.add_argument("--cache-dir", default=os.path.join("/tmp", "musicgen-bench"))
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    import torch

    from benchmarks.bench import probes, specs

    torch.set_num_threads(probes.cores())
    spec = specs.CONFIGS[args.config]
    path = specs.checkpoint(args.config, args.cache_dir)["path"]
    hf = HfTrainer(path, spec)
    ours = JaxTrainer(path, spec, args.layout)
    batch = batch_arrays(spec, args.batch, args.seconds, ours.chroma_length)
    B, T, K = batch["labels"].shape

    hf_first, hf_warm = timed(hf.step, batch)
    jax_first, jax_warm = timed(ours.step, batch)
    times = {"hf": [], "jax": []}
    losses = {"hf": [hf_first], "jax": [jax_first]}
    for i in range(args.steps):
        for side, trainer in (("hf", hf), ("jax", ours)):
            loss, seconds = timed(trainer.step, batch)
            times[side].append(seconds)
            losses[side].append(loss)
        print(f"[finetune] step {i + 2}: HF {times['hf'][-1]:.2f} s, JAX {times['jax'][-1]:.2f} s", flush=True)
    med = {side: statistics.median(ts) for side, ts in times.items()}
    tokens = B * T * K
    result = {
        "config": args.config,
        "batch": B,
        "positions": T,
        "codebooks": K,
        "seconds_of_audio": args.seconds,
        "layout": args.layout,
        "cpu": probes.cpu_name(),
        "cores": probes.cores(),
        "step_s": med,
        "steps": times,
        "losses": losses,
        "first_loss_abs_diff": abs(hf_first - jax_first),
        "warmup_s": {"hf": hf_warm, "jax": jax_warm},
        "ratio_hf_over_jax": med["hf"] / med["jax"],
    }
    md = [
        f"# Fine-tuning step: {args.config}, batch {B} x {T} positions x {K} codebooks ({args.seconds:g} s of audio)",
        "",
        f"CPU: {result['cpu']} ({result['cores']} cores); medians of {args.steps} alternated steps after a warm-up; "
        f"`python benchmarks/finetune_throughput.py --config {args.config} --batch {B} --seconds {args.seconds:g}"
        f" --layout {args.layout}`",
        "",
        f"Loss at step 1: HF {hf_first:.6f}, musicgen-jax {jax_first:.6f} "
        f"(difference {abs(hf_first - jax_first):.1e}).",
        "",
        "| side | step | steps/s | tokens/s | warm-up step (JAX: compile) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for side, name in (("hf", "HF PyTorch (AdamW, clip 1.0)"), ("jax", f"musicgen-jax ({args.layout})")):
        md.append(
            f"| {name} | {med[side]:.2f} s | {1 / med[side]:.3f} | {tokens / med[side]:.0f} | "
            f"{result['warmup_s'][side]:.1f} s |"
        )
    md += ["", f"HF / JAX step time: **{result['ratio_hf_over_jax']:.2f}x**"]
    markdown = "\n".join(md) + "\n"
    print(markdown)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"finetune-{args.config}")
    from musicgen_jax.files import atomic_write

    for suffix, text in ((".json", json.dumps(result, indent=1)), (".md", markdown)):
        with atomic_write(stem + suffix, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
