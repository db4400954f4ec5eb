"""The command line: ``python -m benchmarks.bench ...`` from the repository root (or ``python benchmarks/bench.py``).

A comma list of batch sizes runs each in a fresh process (no memory or allocator state carried between them); the
parent then never initializes JAX (a TPU is held by one process; a GPU's memory would be shared with the children).
``--device gpu|tpu`` where JAX sees no such device exits 2 with one line; ``--dry-run`` prints the plan and checks
the devices without loading anything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

if __package__ in (None, ""):  # run as a path (python benchmarks/bench): make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from benchmarks.bench import REPO, device, specs  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="Speed of musicgen-jax against HF transformers (PyTorch) on the same random weights and inputs.",
    )
    p.add_argument("--config", choices=sorted(specs.CONFIGS), default="tiny")
    p.add_argument("--device", choices=device.DEVICES, default="cpu", help="JAX's backend; HF on cpu / cuda / not")
    p.add_argument("--dtype", choices=device.DTYPES, default="float32", help="both sides' weights and activations")
    p.add_argument("--jax-only", action="store_true", help="time musicgen-jax alone (HF columns n/a)")
    p.add_argument("--check-greedy", action="store_true", help="compare the codes of a short greedy run with HF's")
    p.add_argument("--greedy-steps", type=int, default=32, help="max_new_tokens of the --check-greedy run")
    p.add_argument("--dry-run", action="store_true", help="print the plan and check the devices; load nothing")
    p.add_argument(
        "--jax-weights",
        choices=("hf", "converted"),
        default="hf",
        help="musicgen-jax loads the HF checkpoint (converted at load) or its own converted copy (orbax, built once)",
    )
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
    if args.greedy_steps < 4:
        p.error("--greedy-steps must be >= 4")
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


def plan_lines(args, target: device.Target, batches: list[int], steps: list[int], env_set: dict) -> list[str]:
    """What a run would do, for ``--dry-run``."""
    from benchmarks.bench import report

    hf = f"HF PyTorch on {target.torch_device}" if target.runs_hf else f"HF not run ({target.hf_absent})"
    lines = [
        f"[bench] plan: --config {args.config}, --device {target.device} ({hf}; JAX on its default {target.device} "
        f"backend), --dtype {target.dtype}",
        f"[bench] environment set before importing JAX: {env_set or 'nothing'}",
    ]
    for b, n in zip(batches, steps, strict=True):
        fake = {
            "config": args.config,
            "shapes": {"batch": b, "max_new_tokens": n},
            "environment": {"device": target.device},
            "target": {**vars(target), "accelerator": target.accelerator},
        }
        greedy = f", then {args.greedy_steps} greedy steps compared with HF" if args.check_greedy else ""
        lines.append(
            f"[bench]   batch {b}, {n} steps{greedy} -> {os.path.join(args.out, report.result_stem(fake))}.json/.md"
        )
    return lines


def fail_unless_visible(target: device.Target):
    """Exit 2 with one line when JAX (or torch, for HF on CUDA) does not see the target's device."""
    problem = device.check(target)
    if problem:
        print(f"[bench] {problem}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    if args.build_only:
        os.makedirs(args.cache_dir, exist_ok=True)
        specs.build_checkpoint(args.config, args.cache_dir)
        if args.jax_weights == "converted":
            specs.build_converted(args.config, args.cache_dir)
        return {}
    batches, steps = sizes(p, args)
    target = device.plan(args.device, args.dtype, args.jax_only)
    if target.device == "tpu" and args.jax_only:
        p.error("--jax-only is implied on TPU")
    args.env_set = device.prepare_environment(target)  # before anything imports JAX
    import musicgen_jax  # noqa: F401  (before any JAX operation: one CPU device per core, musicgen_jax.cpu_devices)

    if args.dry_run:
        print("\n".join(plan_lines(args, target, batches, steps, args.env_set)))
        fail_unless_visible(target)
        print(f"[bench] devices: {device.describe(target)}; settings: {device.configure(target)}")
        return {}
    os.makedirs(args.cache_dir, exist_ok=True)
    if len(batches) > 1:
        rest = list(argv if argv is not None else sys.argv[1:])
        for b, n in zip(batches, steps, strict=True):
            child = replace_option(replace_option(rest, "--batch", str(b)), "--steps", str(n))
            rc = subprocess.run([sys.executable, "-m", "benchmarks.bench", *child], cwd=REPO).returncode
            if rc:
                sys.exit(rc)
        return {}
    args.batch, args.steps = batches[0], steps[0]
    fail_unless_visible(target)
    numerics = device.configure(target)
    from benchmarks.bench import report, run

    res = run.run(args, target, numerics)
    path = report.write(res, args.out)
    print(report.markdown(res))
    print(f"[bench] wrote {path}.json and .md")
    return res


if __name__ == "__main__":
    main()
