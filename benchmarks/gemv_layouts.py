"""Which kernel orientation XLA:CPU streams fastest for the decode step's few-row products (NOTES #20).

    python benchmarks/gemv_layouts.py                      # musicgen-small's MLP shapes, 24 layers, rows 1,2,5,8,32,496
    python benchmarks/gemv_layouts.py --d 1536 --f 6144 --rows 2

A chain of ``--layers`` (up, down) pairs, each layer's input the tanh of the one before (as in the step), float32
at HIGHEST precision, in three forms over the same numbers:

- ``x @ W``: kernels stored ``(in, out)``, activations on the left (the decoder's layout today);
- ``W @ x.T``: kernels stored ``(out, in)`` (PyTorch's ``nn.Linear`` layout), the kernel on the left, the output
  ``(out, rows)`` transposed back (tiny);
- ``x @ W.T``: kernels stored ``(out, in)``, contracted on their last axis with the output ``(rows, out)``.

Prints each form's median time, the weight bytes read per second, and its largest difference from the first form.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST
ROWS_LAST = (((1,), (1,)), ((), ()))  # x (R, K) with W (N, K): contract K with K


def x_at_w(x, up, down):
    for a, b in zip(up, down, strict=True):
        x = jnp.tanh(jnp.dot(jnp.tanh(jnp.dot(x, a, precision=HIGHEST)), b, precision=HIGHEST))
    return x


def w_at_xt(x, up_t, down_t):
    for a, b in zip(up_t, down_t, strict=True):
        h = jnp.tanh(jnp.dot(a, x.T, precision=HIGHEST)).T
        x = jnp.tanh(jnp.dot(b, h.T, precision=HIGHEST)).T
    return x


def x_at_wt(x, up_t, down_t):
    for a, b in zip(up_t, down_t, strict=True):
        h = jnp.tanh(jax.lax.dot_general(x, a, ROWS_LAST, precision=HIGHEST))
        x = jnp.tanh(jax.lax.dot_general(h, b, ROWS_LAST, precision=HIGHEST))
    return x


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=1024, help="model width (in of up, out of down)")
    p.add_argument("--f", type=int, default=4096, help="ffn width")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--rows", default="1,2,5,8,32,496", help="comma list of rows (decoder rows x positions)")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    up = [rng.standard_normal((args.d, args.f), np.float32) / np.sqrt(args.d) for _ in range(args.layers)]
    down = [rng.standard_normal((args.f, args.d), np.float32) / np.sqrt(args.f) for _ in range(args.layers)]
    stored = {
        "x @ W": ([jnp.asarray(a) for a in up], [jnp.asarray(b) for b in down]),
        "W @ x.T": ([jnp.asarray(a.T.copy()) for a in up], [jnp.asarray(b.T.copy()) for b in down]),
    }
    stored["x @ W.T"] = stored["W @ x.T"]
    forms = {"x @ W": x_at_w, "W @ x.T": w_at_xt, "x @ W.T": x_at_wt}
    gb = 2 * args.layers * args.d * args.f * 4 / 1e9
    print(f"{cpu_name()}, {jax.device_count()} JAX device(s), jax {jax.__version__}; weights {gb:.2f} GB")
    print("| rows | form | ms | GB/s | max diff |\n| --- | --- | --- | --- | --- |")
    for rows in (int(r) for r in args.rows.split(",")):
        x = jnp.asarray(rng.standard_normal((rows, args.d), np.float32))
        first = None
        for name, fn in forms.items():
            run = jax.jit(fn)
            out = run(x, *stored[name]).block_until_ready()
            first = out if first is None else first
            times = []
            for _ in range(args.repeats if rows < 100 else max(1, args.repeats // 2)):
                t0 = time.perf_counter()
                run(x, *stored[name]).block_until_ready()
                times.append(time.perf_counter() - t0)
            t = float(np.median(times))
            diff = float(jnp.abs(out - first).max())
            print(f"| {rows} | `{name}` | {t * 1e3:.1f} | {gb / t:.1f} | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
