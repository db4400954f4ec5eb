"""Probes: read bandwidth (repeated until stable), matmul throughput, process RSS and device memory, machine load,
git state.

The bandwidth and matmul figures, measured on JAX's default device (the host on CPU, its HBM on an accelerator), set
the hardware floor of a decode step (``breakdown.hardware_floor``); RSS, device memory and load say what else ran and
how much memory each framework held.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import threading
import time

from benchmarks.bench import REPO


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# Bandwidth and matmul throughput.


def time_call(fn, *args, reps: int = 1) -> float:
    """Seconds per call of ``fn(*args)``, over ``reps`` back-to-back calls and one wait, for the last one's JAX
    results (a device runs its queue in order; an earlier result may have been donated to the next call). On an
    accelerator the calls queue, so the launch overhead overlaps the device's work."""
    import jax

    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / reps


def best_of(fn, *args, trials: int = 5, reps: int = 1) -> float:
    """The fastest of ``trials`` timings (``time_call``), after one warm-up call."""
    time_call(fn, *args)
    return min(time_call(fn, *args, reps=reps) for _ in range(trials))


def spread(values) -> float:
    """How far the slowest reading lies below the fastest: (max - min) / max."""
    return (max(values) - min(values)) / max(values)


def until_stable(rate, *, window: int, tolerance: float, cap_s: float) -> dict:
    """Calls ``rate()`` (GB/s) until its last ``window`` readings lie within ``tolerance`` of each other
    (``spread``), or ``cap_s`` seconds have passed (after at least ``window`` readings); summarizes the readings."""
    values, t0 = [], time.perf_counter()
    while True:
        values.append(rate())
        last = values[-window:]
        stable = len(last) == window and spread(last) <= tolerance
        if stable or (len(values) >= window and time.perf_counter() - t0 >= cap_s):
            break
    return {
        "best_GBps": max(values),
        "median_GBps": median(values),
        "worst_GBps": min(values),
        "spread_pct": 100 * spread(values),
        "window_spread_pct": 100 * spread(last),
        "readings": len(values),
        "stable": stable,
        "seconds": time.perf_counter() - t0,
        "values_GBps": values,
    }


def torch_copy_GBps(nbytes: int, dev: str = "cpu", reps: int = 1) -> float:
    """A torch copy of ``nbytes`` on ``dev`` (multithreaded on CPU), best of 5 (read + write bytes)."""
    import torch

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    src = torch.ones(nbytes // 4, device=dev)
    dst = torch.empty_like(src)

    def seconds():
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            dst.copy_(src)
        sync()
        return (time.perf_counter() - t0) / reps

    seconds()  # warm-up
    best = min(seconds() for _ in range(5))
    src = dst = None  # the closure's buffers, released
    if dev == "cuda":
        torch.cuda.empty_cache()  # give the probe's buffers back: JAX allocates from the same device memory
    return 2 * nbytes / best / 1e9


def bandwidth_reference(
    nbytes: int = 1 << 30,
    window: int = 5,
    tolerance: float = 0.03,
    cap_s: float = 15.0,
    reps: int = 1,
    torch_device: str | None = "cpu",
):
    """Large-array read bandwidth of JAX's default device (host memory on CPU, HBM on an accelerator). The two read
    figures the floor uses, a jitted JAX sum and a one-row JAX matrix-vector product (XLA's GEMV streams the matrix
    at the full read rate), are repeated until stable (``until_stable``); each reading times ``reps`` back-to-back
    calls. ``read_GBps`` is the best reading of either, so noise can only make the floor stricter. References, best
    of 5: a torch copy on ``torch_device`` (None: not measured) and a jitted in-place JAX scale (read + write)."""
    import jax
    import jax.numpy as jnp

    def rate(fn, *args):
        return lambda: nbytes / time_call(fn, *args, reps=reps) / 1e9

    stable = dict(window=window, tolerance=tolerance, cap_s=cap_s)
    out = {"array_bytes": nbytes, "reps_per_reading": reps}
    out["torch_copy_GBps"] = None if torch_device is None else torch_copy_GBps(nbytes, torch_device, reps)
    x = jnp.ones((nbytes // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    time_call(total, x)  # compile
    out["jax_sum_read"] = until_stable(rate(total, x), **stable)
    scale = jax.jit(lambda a: a * 0.5, donate_argnums=0)  # in place: no fresh (page-faulting) output buffer
    holder = [scale(x)]
    del x

    def scale_in_place():
        holder[0] = scale(holder[0])
        return holder[0]

    out["jax_scale_inplace_GBps"] = 2 * nbytes / best_of(scale_in_place, reps=reps) / 1e9
    matrix, vector = holder.pop().reshape(4096, -1), jnp.ones((1, 4096), jnp.float32)
    gemv = jax.jit(lambda v, m: v @ m)
    time_call(gemv, vector, matrix)  # compile
    out["jax_gemv_read"] = until_stable(rate(gemv, vector, matrix), **stable)
    del matrix
    out["jax_sum_read_GBps"] = out["jax_sum_read"]["best_GBps"]
    out["jax_gemv_read_GBps"] = out["jax_gemv_read"]["best_GBps"]
    out["read_GBps"] = max(out["jax_sum_read_GBps"], out["jax_gemv_read_GBps"])
    return out


BANDWIDTH_FIGURES = ("torch_copy_GBps", "jax_sum_read_GBps", "jax_scale_inplace_GBps", "jax_gemv_read_GBps")


def combine_bandwidth(start: dict, end: dict) -> dict:
    """The best of the readings at the start and at the end of the run, with both kept."""
    best = {k: None if start[k] is None else max(start[k], end[k]) for k in BANDWIDTH_FIGURES}
    out = {"array_bytes": end["array_bytes"], "reps_per_reading": end.get("reps_per_reading", 1), **best}
    out["read_GBps"] = max(start["read_GBps"], end["read_GBps"])
    out["at_start"], out["at_end"] = start, end
    return out


def bandwidth_line(name: str, bw: dict) -> str:
    """One reading of the read probes, for the log and the report."""
    parts = []
    for label, key in (("sum", "jax_sum_read"), ("GEMV", "jax_gemv_read")):
        r = bw[key]
        parts.append(
            f"{label} {r['best_GBps']:.1f} / {r['median_GBps']:.1f} GB/s, spread {r['spread_pct']:.0f}% over "
            f"{r['readings']} readings ({'stable' if r['stable'] else 'capped'}, last {r['window_spread_pct']:.0f}%)"
        )
    return f"{name}: " + "; ".join(parts)


def matmul_reference(n: int = 2048, dtype: str = "float32", reps: int = 1) -> dict:
    """Dense matmul throughput of JAX's default device: a jitted (n, n) @ (n, n), best of 5 (``reps`` calls each)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), dtype)
    seconds = best_of(jax.jit(lambda a: a @ a), a, reps=reps)
    return {"n": n, "dtype": dtype, "jax_matmul_GFLOPs": 2 * n**3 / seconds / 1e9}


# ---------------------------------------------------------------------------------------------------------------
# Memory and machine load.


class RssSampler:
    """Polls this process's RSS every ``interval`` s in a thread; ``phase(name)`` records the peak inside a block."""

    def __init__(self, interval: float = 0.01):
        try:
            import psutil

            self.proc = psutil.Process()
        except ImportError:  # RSS then reads 0
            self.proc = None
        self.interval = interval
        self.peak = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.phases: dict[str, dict] = {}
        if self.proc is not None:
            threading.Thread(target=self.poll, daemon=True).start()

    def rss(self) -> int:
        return self.proc.memory_info().rss if self.proc is not None else 0

    def poll(self):
        while not self.stopped.is_set():
            rss = self.rss()
            with self.lock:
                self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    @contextlib.contextmanager
    def phase(self, name: str):
        start = self.rss()
        with self.lock:
            self.peak = start
        yield
        end = self.rss()
        with self.lock:
            peak = max(self.peak, end)
        entry = self.phases.setdefault(name, {"start_bytes": start, "peak_bytes": 0, "peak_increase_bytes": 0})
        entry["peak_bytes"] = max(entry["peak_bytes"], peak)
        entry["peak_increase_bytes"] = max(entry["peak_increase_bytes"], peak - start)

    def close(self):
        self.stopped.set()


class CpuLoad:
    """How busy the machine is apart from this process: system CPU seconds minus our own, per wall second."""

    def __init__(self):
        import psutil

        self.psutil = psutil
        self.t0 = time.perf_counter()
        self.sys0 = self.busy()
        self.own0 = self.own()
        self.load0 = os.getloadavg()

    def busy(self) -> float:
        t = self.psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)

    def own(self) -> float:
        t = self.psutil.Process().cpu_times()
        return t.user + t.system

    def summary(self) -> dict:
        wall = time.perf_counter() - self.t0
        other = (self.busy() - self.sys0) - (self.own() - self.own0)
        return {
            "wall_s": wall,
            "other_processes_busy_cores": max(other, 0.0) / wall,
            "own_busy_cores": (self.own() - self.own0) / wall,
            "loadavg_start": self.load0,
            "loadavg_end": os.getloadavg(),
        }

    def top_others(self, sample_s: float = 1.0, n: int = 5) -> list[str]:
        """Other processes using CPU right now (name and percent of one core), busiest first."""
        me = os.getpid()
        procs = [p for p in self.psutil.process_iter(["pid", "name"]) if p.info["pid"] != me]
        for p in procs:
            with contextlib.suppress(Exception):
                p.cpu_percent(None)
        time.sleep(sample_s)
        usage = []
        for p in procs:
            with contextlib.suppress(Exception):
                pct = p.cpu_percent(None)
                if pct >= 5:
                    usage.append((pct, p.info["name"]))
        return [f"{name} {pct:.0f}%" for pct, name in sorted(usage, reverse=True)[:n]]


def jax_device_memory() -> dict | None:
    """JAX's allocator on its default device: bytes in use now and the peak since the process started (no reset
    exists); None where the backend keeps no such statistics (CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return {
        "in_use_bytes": stats.get("bytes_in_use", 0),
        "peak_bytes": stats.get("peak_bytes_in_use", 0),
        "limit_bytes": stats.get("bytes_limit"),
    }


def torch_device_memory(dev: str | None) -> dict | None:
    """torch's CUDA caching allocator: bytes allocated now and the peak since the last reset; None off CUDA."""
    if dev != "cuda":
        return None
    import torch

    return {"in_use_bytes": torch.cuda.memory_allocated(), "peak_bytes": torch.cuda.max_memory_allocated()}


# ---------------------------------------------------------------------------------------------------------------
# What ran where.


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def accelerator_names(torch_device: str | None) -> dict:
    """What JAX (and torch, on CUDA) run on: device kind and count."""
    import jax

    out = {"jax_device_kind": jax.devices()[0].device_kind, "jax_device_count": jax.device_count()}
    if torch_device == "cuda":
        import torch

        out["torch_device_name"] = torch.cuda.get_device_name()
    return out


def library_state() -> dict:
    """The commit of this checkout and whether the library files differ from it (the tree may be shared)."""

    def git(*cmd):
        try:
            out = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=30)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "musicgen_jax", "convert")
    return {"commit": git("rev-parse", "--short", "HEAD"), "library_changes": dirty.splitlines() if dirty else []}
