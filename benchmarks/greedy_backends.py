"""HF and musicgen-jax on every backend this machine has: greedy codes and forward logits, float32, pairwise.

    python benchmarks/greedy_backends.py --config small --steps 16     # CPU only here; + CUDA on a GPU machine

One fresh process per side (HF on cpu / cuda; ours on cpu unrolled, and on the GPU scanned and unrolled), on the
random checkpoint ``benchmarks/bench`` builds (seed 0), the same padded text and guidance as the bench's
``--check-greedy``. Each side writes its greedy codes ``(B, K, frames)`` and the logits of one forward over fixed
decoder codes; the parent prints every pair's code agreement and the largest logit difference, and the smallest gap
between the best two logits at the first side's last forward position (a near tie would let rounding alone change a
greedy pick). Every side asks for full float32: ``jax_default_matmul_precision=highest``; torch with TF32 off.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.bench import specs  # noqa: E402
from musicgen_jax import files  # noqa: E402

SIDES = {  # name: (framework, platform, scan_layers)
    "hf-cpu": ("hf", "cpu", None),
    "hf-cuda": ("hf", "cuda", None),
    "jax-cpu": ("jax", "cpu", False),
    "jax-cpu-scan": ("jax", "cpu", True),
    "jax-gpu-scan": ("jax", "gpu", True),
    "jax-gpu-unrolled": ("jax", "gpu", False),
}


def inputs(spec: dict, batch: int, text_len: int, tgt_len: int = 8):
    ids, mask = specs.text_inputs(batch, text_len, spec["text"]["vocab_size"])
    k = spec["decoder"].get("num_codebooks", 4)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, spec["decoder"]["vocab_size"], (batch * k, tgt_len)).astype(np.int64)
    return ids, mask, codes


def run_side(name: str, path: str, spec: dict, args, out: str) -> None:
    framework, platform, scan = SIDES[name]
    ids, mask, codes = inputs(spec, args.batch, args.text_len)
    greedy = dict(do_sample=False, guidance_scale=specs.GUIDANCE, max_new_tokens=args.steps)
    if framework == "hf":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        dev = torch.device(platform)
        model = specs.hf_class(spec).from_pretrained(path, dtype=torch.float32).to(dev).eval()
        t = {k: torch.from_numpy(v).to(dev) for k, v in dict(ids=ids, mask=mask, codes=codes).items()}
        with torch.inference_mode():
            logits = model(input_ids=t["ids"], attention_mask=t["mask"], decoder_input_ids=t["codes"]).logits
            seen = []
            decode = model.audio_encoder.decode
            model.audio_encoder.decode = lambda c, *a, **kw: (seen.append(c), decode(c, *a, **kw))[1]
            model.generate(input_ids=t["ids"], attention_mask=t["mask"], **greedy)
        np.save(os.path.join(out, f"{name}-logits.npy"), logits.float().cpu().numpy())
        np.save(os.path.join(out, f"{name}-codes.npy"), seen[0][0].cpu().numpy())
        return
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    model = specs.jax_class(spec).from_pretrained(path, dtype="float32", scan_layers=scan)
    logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=codes).logits
    res = model.generate(input_ids=ids, attention_mask=mask, return_dict_in_generate=True, **greedy)
    np.save(os.path.join(out, f"{name}-logits.npy"), np.asarray(logits, np.float32))
    np.save(os.path.join(out, f"{name}-codes.npy"), np.asarray(res.audio_codes))


def available() -> list[str]:
    names = ["hf-cpu", "jax-cpu"]
    probe = "import torch; print(torch.cuda.is_available())"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "True":
        names.insert(1, "hf-cuda")
    probe = "import jax; print(any(d.platform == 'gpu' for d in jax.devices()))"
    env = {**os.environ, "JAX_PLATFORMS": ""}
    if subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout.strip() == "True":
        names += ["jax-gpu-scan", "jax-gpu-unrolled"]
    return names


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="small", choices=sorted(specs.CONFIGS))
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "musicgen-bench"))
    p.add_argument("--sides", default=None, help="comma list of " + ", ".join(SIDES))
    p.add_argument("--out", default=None, help="folder for the arrays and the summary (default: a temporary one)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    spec = specs.CONFIGS[args.config]
    out = args.out or tempfile.mkdtemp(prefix="greedy-backends-")
    os.makedirs(out, exist_ok=True)
    path, _ = specs.build_checkpoint(args.config, args.cache_dir)
    if args.child:
        run_side(args.child, path, spec, args, out)
        return 0
    names = args.sides.split(",") if args.sides else available()
    for name in names:
        platform = SIDES[name][1]
        env = {**os.environ, "JAX_PLATFORMS": "cpu" if platform == "cpu" else "cuda"}
        if platform == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        cmd = [sys.executable, __file__, "--child", name, "--out", out, *sys.argv[1:]]
        rc = subprocess.run(cmd, env=env, cwd=REPO).returncode
        print(f"[greedy-backends] {name}: {'done' if rc == 0 else f'failed (exit {rc})'}", flush=True)
    done = [n for n in names if os.path.exists(os.path.join(out, f"{n}-codes.npy"))]
    load = {n: {k: np.load(os.path.join(out, f"{n}-{k}.npy")) for k in ("codes", "logits")} for n in done}
    summary = {"config": args.config, "steps": args.steps, "batch": args.batch, "pairs": {}}
    if done:
        ref = load[done[0]]["logits"]
        top2 = np.sort(ref[:, -1, :], axis=-1)[:, -2:]
        summary["reference_forward_top2_gap_min"] = float((top2[:, 1] - top2[:, 0]).min())
        gap = summary["reference_forward_top2_gap_min"]
        print(f"[greedy-backends] {done[0]} forward, last position: smallest best-two logit gap {gap:.3g}")
    for a, b in itertools.combinations(done, 2):
        ca, cb = load[a]["codes"], load[b]["codes"]
        agree = float((ca == cb).mean()) if ca.shape == cb.shape else 0.0
        la, lb = load[a]["logits"], load[b]["logits"]
        diff = float(np.abs(la - lb).max()) if la.shape == lb.shape else float("nan")
        summary["pairs"][f"{a} vs {b}"] = {"codes_agree": agree, "logits_max_abs_diff": diff}
        print(f"[greedy-backends] {a} vs {b}: codes agree {agree:.2%}; forward logits max |diff| {diff:.3g}")
    with files.atomic_write(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
