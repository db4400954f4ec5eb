"""The command line: ``python -m benchmarks.bench ...`` from the repository root (or ``python benchmarks/bench.py``).

A comma list of batch sizes runs each in a fresh process (no memory or allocator state carried between them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

if __package__ in (None, ""):  # run as a path (python benchmarks/bench): make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.bench import REPO, specs  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="Speed of musicgen-jax against HF transformers (PyTorch) on the same random weights and inputs.",
    )
    p.add_argument("--config", choices=sorted(specs.CONFIGS), default="tiny")
    p.add_argument("--steps", default="128", help="max_new_tokens (decoder steps), or a comma list paired with --batch")
    p.add_argument("--batch", default="1", help="text rows, or a comma list (1,4,16): one fresh process each")
    p.add_argument("--repeats", type=int, default=3, help="interleaved HF/JAX repeats (fewer if --budget-s is hit)")
    p.add_argument("--budget-s", type=float, default=540.0, help="stop repeating once another repeat would pass this")
    p.add_argument("--encodec-seconds", type=float, default=30.0, help="length of the long EnCodec decode")
    p.add_argument("--encodec-repeats", type=int, default=2, help="repeats of the long EnCodec decode")
    p.add_argument("--text-len", type=int, default=12, help="padded text length in tokens")
    p.add_argument("--inner", type=int, default=5, help="calls averaged per repeat for T5")
    p.add_argument("--bandwidth-bytes", type=int, default=1 << 30, help="buffer of the bandwidth probes")
    p.add_argument("--bandwidth-window", type=int, default=5, help="bandwidth: readings that must agree")
    p.add_argument("--bandwidth-tolerance", type=float, default=0.03, help="bandwidth: their (max - min) / max")
    p.add_argument("--bandwidth-cap-s", type=float, default=15.0, help="bandwidth: seconds per probe at most")
    p.add_argument("--cache-dir", default=os.path.join("/tmp", "musicgen-bench"))
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    return p


def sizes(p: argparse.ArgumentParser, args) -> tuple[list[int], list[int]]:
    """The (batch, steps) pairs asked for, validated."""
    try:
        batches = [int(x) for x in str(args.batch).split(",")]
        steps = [int(x) for x in str(args.steps).split(",")]
    except ValueError:
        p.error(f"--batch {args.batch!r} / --steps {args.steps!r}: integers or comma lists of integers")
    if len(steps) == 1:
        steps = steps * len(batches)
    if len(steps) != len(batches):
        p.error(f"--steps gives {len(steps)} values for {len(batches)} batch sizes")
    if min(steps) < 4 or min(batches) < 1:
        p.error("--steps must be >= 4 (the delay pattern of 4 codebooks) and --batch >= 1")
    if args.bandwidth_window < 2 or not 0 < args.bandwidth_tolerance < 1:
        p.error("--bandwidth-window must be >= 2 and --bandwidth-tolerance in (0, 1)")
    return batches, steps


def replace_option(argv: list[str], name: str, value: str) -> list[str]:
    """``argv`` with ``name``'s value set to ``value`` (``--name v`` or ``--name=v``; appended when absent)."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == name and i + 1 < len(argv):
            skip = True
            continue
        if a.startswith(name + "="):
            continue
        out.append(a)
    return [*out, name, value]


def main(argv=None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    if args.build_only:
        os.makedirs(args.cache_dir, exist_ok=True)
        specs.build_checkpoint(args.config, args.cache_dir)
        return {}
    batches, steps = sizes(p, args)
    os.makedirs(args.cache_dir, exist_ok=True)
    if len(batches) > 1:
        rest = list(argv if argv is not None else sys.argv[1:])
        for b, n in zip(batches, steps, strict=True):
            child = replace_option(replace_option(rest, "--batch", str(b)), "--steps", str(n))
            subprocess.run([sys.executable, "-m", "benchmarks.bench", *child], check=True, cwd=REPO)
        return {}
    args.batch, args.steps = batches[0], steps[0]
    from benchmarks.bench import report, run

    res = run.run(args)
    path = report.write(res, args.out)
    print(report.markdown(res))
    print(f"[bench] wrote {path}.json and .md")
    return res


if __name__ == "__main__":
    main()
