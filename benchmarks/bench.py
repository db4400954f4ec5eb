"""Speed of musicgen-jax against HF transformers (PyTorch) on the same random weights and the same inputs.

One command::

    python benchmarks/bench.py --config small --steps 128 --batch 1 --out benchmarks/results

builds (once, cached) a random-weight HF ``MusicgenMelodyForConditionalGeneration`` checkpoint of real shapes with
``save_pretrained``, loads it into HF (float32, eval) and into musicgen-jax (float32), and times, interleaved
(HF then JAX, ``--repeats`` times; medians reported, warm-up reported separately):

  * ``generate`` end to end (text -> audio: T5, CFG sampling loop, EnCodec), plus JAX's first (compiling) call;
  * the decode loop alone (JAX: ``sampling.decode`` on a prebuilt prefix; HF: ``generate`` minus the T5 and EnCodec
    time measured inside the same call);
  * T5 encode, EnCodec decode of the generated frames, and EnCodec decode of ``--encodec-seconds`` of codes;
  * host RSS, a memory-bandwidth reference, and a breakdown of one JAX decode step (prefill / forward / sampling).

Writes ``<out>/<config>-<device>-b<batch>-s<steps>.json`` and ``.md``, and prints the table.
See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# ---------------------------------------------------------------------------------------------------------------
# Model sizes. "small" is musicgen-small's decoder with MusicGen's T5-base and 32 kHz EnCodec; "melody" is
# musicgen-melody's 1.5B decoder (GPU-sized; only when asked).

T5_BASE = dict(
    vocab_size=32128,
    d_model=768,
    d_kv=64,
    d_ff=3072,
    num_layers=12,
    num_heads=12,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="relu",
)
ENCODEC_32KHZ = dict(
    upsampling_ratios=[8, 5, 4, 4],
    hidden_size=128,
    num_filters=64,
    codebook_size=2048,
    codebook_dim=128,
    target_bandwidths=[2.2],
    sampling_rate=32000,
    compress=2,
    num_lstm_layers=2,
    use_causal_conv=False,
    use_conv_shortcut=False,
    norm_type="weight_norm",
    pad_mode="reflect",
    normalize=False,
)
CONFIGS = {
    "tiny": dict(
        text=dict(T5_BASE, vocab_size=512, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
        # The 32 kHz hop (640 samples, 50 frames/s) with narrow layers: 4 codebooks of 64 need 1.2 kbps.
        audio=dict(
            ENCODEC_32KHZ, hidden_size=16, num_filters=4, codebook_size=64, codebook_dim=16, target_bandwidths=[1.2]
        ),
        decoder=dict(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128),
        top=dict(chroma_length=32),
    ),
    "small": dict(
        text=T5_BASE,
        audio=ENCODEC_32KHZ,
        decoder=dict(vocab_size=2048, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096),
        top=dict(chroma_length=235),
    ),
    "melody": dict(
        text=T5_BASE,
        audio=ENCODEC_32KHZ,
        decoder=dict(vocab_size=2048, hidden_size=1536, num_hidden_layers=48, num_attention_heads=24, ffn_dim=6144),
        top=dict(chroma_length=235),
    ),
}
TOP_K = 250
GUIDANCE = 3.0


def build_checkpoint(name: str, cache_dir: str) -> tuple[str, float]:
    """Saves a random HF checkpoint of ``CONFIGS[name]`` under ``cache_dir/name`` once; returns (path, seconds)."""
    path = os.path.join(cache_dir, name)
    spec = CONFIGS[name]
    marker = os.path.join(path, "bench-spec.json")
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == spec:
                return path, 0.0
    import torch
    from transformers import (
        EncodecConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
        T5Config,
    )

    t0 = time.perf_counter()
    dec = dict(spec["decoder"], num_codebooks=4, pad_token_id=spec["decoder"]["vocab_size"])
    dec["bos_token_id"] = dec["pad_token_id"]
    config = MusicgenMelodyConfig(
        text_encoder=T5Config(**spec["text"]).to_dict(),
        audio_encoder=EncodecConfig(**spec["audio"]).to_dict(),
        decoder=MusicgenMelodyDecoderConfig(**dec).to_dict(),
        **spec["top"],
    )
    torch.manual_seed(0)
    model = MusicgenMelodyForConditionalGeneration(config).eval()
    partial = path + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    with open(os.path.join(partial, "bench-spec.json"), "w") as f:
        json.dump(spec, f)
    del model
    shutil.rmtree(path, ignore_errors=True)
    os.replace(partial, path)
    return path, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------------
# Measurement helpers.


class RssSampler:
    """Polls this process's RSS every ``interval`` s in a thread; ``phase(name)`` records the peak inside a block."""

    def __init__(self, interval: float = 0.01):
        try:
            import psutil

            self._proc = psutil.Process()
        except ImportError:  # fall back to ru_maxrss only
            self._proc = None
        self.interval = interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.phases: dict[str, dict] = {}
        if self._proc is not None:
            threading.Thread(target=self._run, daemon=True).start()

    def rss(self) -> int:
        return self._proc.memory_info().rss if self._proc is not None else 0

    def _run(self):
        while not self._stop.is_set():
            rss = self.rss()
            with self._lock:
                self._peak = max(self._peak, rss)
            time.sleep(self.interval)

    @contextlib.contextmanager
    def phase(self, name: str):
        start = self.rss()
        with self._lock:
            self._peak = start
        yield
        end = self.rss()
        with self._lock:
            peak = max(self._peak, end)
        entry = self.phases.setdefault(name, {"start_bytes": start, "peak_bytes": 0, "peak_increase_bytes": 0})
        entry["peak_bytes"] = max(entry["peak_bytes"], peak)
        entry["peak_increase_bytes"] = max(entry["peak_increase_bytes"], peak - start)

    def close(self):
        self._stop.set()


class CpuLoad:
    """How busy the machine is apart from this process: system CPU seconds minus our own, per wall second."""

    def __init__(self):
        import psutil

        self.psutil = psutil
        self.t0 = time.perf_counter()
        self.sys0 = self._busy()
        self.own0 = self._own()
        self.load0 = os.getloadavg()

    def _busy(self) -> float:
        t = self.psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)

    def _own(self) -> float:
        t = self.psutil.Process().cpu_times()
        return t.user + t.system

    def summary(self) -> dict:
        wall = time.perf_counter() - self.t0
        other = (self._busy() - self.sys0) - (self._own() - self.own0)
        return {
            "wall_s": wall,
            "other_processes_busy_cores": max(other, 0.0) / wall,
            "own_busy_cores": (self._own() - self.own0) / wall,
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


def median(xs):
    return statistics.median(xs) if xs else float("nan")


class Spy:
    """Replaces ``owner.attr`` with a wrapper that times each call (after ``sync`` of its result)."""

    def __init__(self, owner, attr: str, sync=lambda out: out):
        self.owner, self.attr, self.sync = owner, attr, sync
        self.original = getattr(owner, attr)
        self.times: list[float] = []

        @functools.wraps(self.original)  # keeps the signature: HF inspects text_encoder.forward's parameters
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = self.sync(self.original(*args, **kwargs))
            self.times.append(time.perf_counter() - t0)
            return out

        setattr(owner, attr, wrapper)

    def take(self) -> float:
        total = sum(self.times)
        self.times = []
        return total

    def restore(self):
        setattr(self.owner, self.attr, self.original)


def text_inputs(batch: int, length: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed padded text batch: row ``i`` holds ``length - 3 * (i % 3)`` tokens, then pad id 0 (mask 0)."""
    ids = (np.arange(batch * length).reshape(batch, length) * 7919 + 3) % (min(vocab, 32000) - 3) + 3
    mask = np.ones((batch, length), np.int64)
    for i in range(batch):
        valid = max(1, length - 3 * (i % 3))
        ids[i, valid:] = 0
        mask[i, valid:] = 0
    return ids.astype(np.int64), mask


def bandwidth_reference(nbytes: int = 1 << 30, trials: int = 5) -> dict:
    """Large-array bandwidth on this host, best of ``trials``: torch multithreaded copy (read + write bytes), and two
    read-only figures from JAX: a jitted sum and a one-row matrix-vector product (XLA's GEMV streams the matrix at
    the full read rate). ``read_GBps`` is the larger read figure: the floor uses it, so noise can only make the
    floor stricter."""
    import jax
    import jax.numpy as jnp
    import torch

    def best(fn, *args):
        fn(*args)
        times = []
        for _ in range(trials):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - t0)
        return min(times)

    out = {"array_bytes": nbytes}
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    out["torch_copy_GBps"] = 2 * nbytes / best(dst.copy_, src) / 1e9
    del src, dst
    x = jnp.ones((nbytes // 4,), jnp.float32)
    out["jax_sum_read_GBps"] = nbytes / best(jax.jit(jnp.sum), x) / 1e9
    scale = jax.jit(lambda a: a * 0.5, donate_argnums=0)  # in place: no fresh (page-faulting) output buffer
    holder = [scale(x)]
    del x

    def scale_in_place():
        holder[0] = scale(holder[0])
        return holder[0]

    out["jax_scale_inplace_GBps"] = 2 * nbytes / best(scale_in_place) / 1e9
    matrix = holder.pop().reshape(4096, -1)
    out["jax_gemv_read_GBps"] = (
        nbytes / best(jax.jit(lambda v, m: v @ m), jnp.ones((1, 4096), jnp.float32), matrix) / 1e9
    )
    del matrix
    out["read_GBps"] = max(out["jax_sum_read_GBps"], out["jax_gemv_read_GBps"])
    return out


def matmul_reference(n: int = 2048, dtype: str = "float32") -> dict:
    """Dense matmul throughput on this host: a jitted (n, n) @ (n, n) in JAX, best of 5."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), dtype)
    mm = jax.jit(lambda a: a @ a)
    mm(a).block_until_ready()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        mm(a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return {"n": n, "dtype": dtype, "jax_matmul_GFLOPs": 2 * n**3 / min(times) / 1e9}


def hardware_floor(breakdown: dict, bandwidth: dict, matmul: dict) -> dict:
    """One decode step's floor on this host: max(bytes it must read / read bandwidth, FLOPs / matmul throughput),
    and the measured step as a fraction of it (1.0 = at the hardware limit)."""
    bw = bandwidth["read_GBps"] * 1e9
    bytes_s = breakdown["step_read_bytes"] / bw
    flops_s = breakdown["step_flops"] / (matmul["jax_matmul_GFLOPs"] * 1e9)
    floor = max(bytes_s, flops_s)
    return {
        "read_bandwidth_GBps": bandwidth["read_GBps"],
        "matmul_GFLOPs": matmul["jax_matmul_GFLOPs"],
        "bytes_floor_s": bytes_s,
        "flops_floor_s": flops_s,
        "floor_s": floor,
        "bound": "memory" if bytes_s >= flops_s else "compute",
        "scan_step_fraction_of_floor": floor / breakdown["scan_step_s"],
        "gemv_fraction_of_floor": floor / breakdown["gemv_floor_s"],
    }


# ---------------------------------------------------------------------------------------------------------------
# The JAX decode-step breakdown: prefill, one cached forward step and the sampling head, each jitted on its own,
# and the floor: plain GEMVs over the same weight matrices, unstacked (what one step must at least read).


def jax_step_breakdown(model, prefix, fixed, total: int, decode_s: float, steps: int, n: int = 8) -> dict:
    import jax
    import jax.numpy as jnp

    from musicgen_jax import sampling
    from musicgen_jax.decoder import Decoder, is_scanned, unstack_layers

    dec = model.config.decoder
    params = model.params["decoder"]
    scanned = is_scanned(params)
    rows, P = prefix.shape[0], prefix.shape[1]
    S = fixed.shape[-1]
    decoder = Decoder(dec, scan_layers=scanned)
    capacity = P + total
    dtype = jax.tree_util.tree_leaves(params)[0].dtype

    # The library's own prefill, as generate runs it (with the shared unconditional row when it applies).
    shared = sampling.uncond_rows_shared(prefix, fixed)
    spec = sampling._spec(dec, total, True, TOP_K, False, True, shared)

    def prefill(params, prefix, ids):
        state = sampling._prefill_jit(params, prefix, ids, jax.random.PRNGKey(0), spec=spec)
        return state.logits_BKV, state.cache

    @functools.partial(jax.jit, donate_argnums=(2,))
    def forward(params, ids, cache, index):
        ids = jnp.concatenate([ids, ids], axis=0)
        logits, cache = decoder.apply({"params": params}, ids, None, cache=cache, cache_index=index)
        return logits[:, :, -1], cache

    knobs = sampling.SamplingParams(jnp.float32(1.0), jnp.float32(1.0), jnp.float32(GUIDANCE))

    @jax.jit
    def head(logits, rng):
        guided = sampling.guide(logits, knobs.guidance_scale)
        flat = guided.reshape(guided.shape[0] * dec.num_codebooks, -1)
        return sampling.choose(flat, knobs, rng, do_sample=True, top_k=TOP_K, use_top_p=False)

    ids = jnp.asarray(fixed, jnp.int32)
    t0 = time.perf_counter()
    logits, cache = jax.block_until_ready(prefill(params, prefix, ids))
    prefill_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits, cache = jax.block_until_ready(prefill(params, prefix, ids))
    prefill_s = time.perf_counter() - t0

    one = ids[:, :, :1]
    logits, cache = jax.block_until_ready(forward(params, one, cache, P + S))  # compile
    forward_times = []
    for i in range(n):
        t0 = time.perf_counter()
        logits, cache = jax.block_until_ready(forward(params, one, cache, P + S + 1 + i))
        forward_times.append(time.perf_counter() - t0)

    rng = jax.random.PRNGKey(0)
    head(logits, rng).block_until_ready()
    head_times = []
    for _ in range(n):
        t0 = time.perf_counter()
        head(logits, rng).block_until_ready()
        head_times.append(time.perf_counter() - t0)
    kv_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(cache))  # the whole preallocated capacity
    del cache

    # Plain GEMVs: x (rows, D) @ W for every layer matrix, as separate buffers in their natural layout.
    layers = unstack_layers(params) if scanned else params
    D = dec.hidden_size
    mats = []
    for i in range(dec.num_hidden_layers):
        layer = layers[f"layers_{i}"]
        for w in (layer["attn"]["qkv"], layer["attn"]["out"], layer["mlp"]["up"], layer["mlp"]["down"]):
            mats.append(jnp.array(w).reshape(D, -1) if w.shape[0] == D else jnp.array(w).reshape(-1, D))
    x = jnp.ones((rows, max(m.shape[0] for m in mats)), dtype)
    gemvs = jax.jit(lambda x, mats: sum(jnp.sum(x[:, : w.shape[0]] @ w) for w in mats))
    gemvs(x, mats).block_until_ready()
    gemv_times = []
    for _ in range(n):
        t0 = time.perf_counter()
        gemvs(x, mats).block_until_ready()
        gemv_times.append(time.perf_counter() - t0)
    mat_bytes = sum(m.nbytes for m in mats)
    del mats

    weight_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
    forward_s, head_s, gemv_s = median(forward_times), median(head_times), median(gemv_times)
    scan_step_s = (decode_s - prefill_s) / max(steps - 1, 1)
    # The work one step must do: read every decoder weight once (the embedding only for the K rows it looks up)
    # and the keys/values of the positions filled so far (on average the prefix + half the generated steps);
    # FLOPs: 2 per weight per row for the matmuls, plus the attention over those positions.
    itemsize = np.dtype(dtype).itemsize
    embed = params["embed"]
    read_bytes = weight_bytes - embed.nbytes + dec.num_codebooks * embed.shape[-1] * itemsize
    mean_filled = P + S + (total - S) / 2
    kv_needed = 2 * dec.num_hidden_layers * rows * mean_filled * D * itemsize
    matmul_params = (weight_bytes - embed.nbytes) / itemsize
    flops = 2 * rows * matmul_params + 4 * rows * dec.num_hidden_layers * mean_filled * D
    return {
        "prefill_first_call_s": prefill_first,
        "prefill_s": prefill_s,
        "forward_step_s": forward_s,
        "forward_step_min_s": min(forward_times),
        "sampling_head_s": head_s,
        "scan_step_s": scan_step_s,
        "gemv_floor_s": gemv_s,
        "gemv_floor_min_s": min(gemv_times),
        "gemv_floor_GBps": mat_bytes / gemv_s / 1e9,
        "layer_matrix_bytes": mat_bytes,
        "decoder_weight_bytes": weight_bytes,
        "kv_cache_bytes": kv_bytes,
        "prefix_len": P,
        "prefill_shared_uncond": shared,
        "cache_capacity": capacity,
        "rows": rows,
        "scan_step_effective_GBps": (weight_bytes + kv_bytes) / scan_step_s / 1e9,
        "layout": "scanned" if scanned else "unrolled",
        "step_read_bytes": read_bytes + kv_needed,
        "step_kv_needed_bytes": kv_needed,
        "step_flops": flops,
        "forward_step_effective_GBps": (weight_bytes + kv_bytes) / forward_s / 1e9,
    }


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


# ---------------------------------------------------------------------------------------------------------------
# The benchmark.


def run(args) -> dict:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores)
    import jax
    import jax.numpy as jnp
    import transformers
    from transformers import MusicgenMelodyForConditionalGeneration as HFModel

    from musicgen_jax import MusicgenMelodyForConditionalGeneration as JaxModel
    from musicgen_jax import modeling, sampling

    log = functools.partial(print, flush=True)
    result: dict = {"config": args.config, "spec": CONFIGS[args.config], "args": vars(args), "git": library_state()}
    load = CpuLoad()
    others_at_start = load.top_others()
    log(f"[bench] other processes using CPU at start: {others_at_start or 'none'}; loadavg {os.getloadavg()}")

    # Built in a child process, so that the random model's memory does not count in this process's RSS.
    t0 = time.perf_counter()
    build = [sys.executable, os.path.abspath(__file__), "--build-only", "--config", args.config]
    subprocess.run([*build, "--cache-dir", args.cache_dir], check=True)
    path, _ = build_checkpoint(args.config, args.cache_dir)  # cached now: returns at once
    result["checkpoint"] = {"path": path, "ready_s": time.perf_counter() - t0}
    log(f"[bench] checkpoint {path} (ready in {result['checkpoint']['ready_s']:.1f} s)")

    bw_start = bandwidth_reference(args.bandwidth_bytes)  # again at the end; the floor takes the best reading
    wall0 = time.perf_counter()  # the time budget counts from here
    mem = RssSampler()
    B, steps = args.batch, args.steps
    gen_kwargs = dict(do_sample=True, guidance_scale=GUIDANCE, top_k=TOP_K, top_p=1.0, temperature=1.0)

    # -- HF: load, warm up with a short generate (nothing to compile; primes allocators and oneDNN).
    rss0 = mem.rss()
    t0 = time.perf_counter()
    hf = HFModel.from_pretrained(path, dtype=torch.float32).eval()
    hf_load_s = time.perf_counter() - t0
    ids, mask = text_inputs(B, args.text_len, hf.config.text_encoder.vocab_size)
    t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
    hf_t5_spy = Spy(hf.text_encoder, "forward")
    hf_codec_spy = Spy(hf.audio_encoder, "decode")

    def hf_generate(seed, new_tokens=steps):
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            audio = hf.generate(input_ids=t_ids, attention_mask=t_mask, max_new_tokens=new_tokens, **gen_kwargs)
        total = time.perf_counter() - t0
        t5, codec = hf_t5_spy.take(), hf_codec_spy.take()
        return {"total": total, "t5": t5, "encodec": codec, "loop": total - t5 - codec}, tuple(audio.shape)

    warm_steps = min(steps, 8)
    with mem.phase("hf_generate_first"):
        hf_first, _ = hf_generate(0, warm_steps)
    rss_hf = mem.rss()

    # -- JAX: load, first (compiling) generate at the measured shapes.
    t0 = time.perf_counter()
    ours = JaxModel.from_pretrained(path, dtype=jnp.float32)
    jax.block_until_ready(ours.params)
    jax_load_s = time.perf_counter() - t0
    dec = ours.config.decoder
    sync = jax.block_until_ready
    jax_t5_spy = Spy(modeling, "_encode_text", sync)
    jax_loop_spy = Spy(sampling, "decode", sync)  # generate calls sampling.decode on the prefix it has built
    jax_codec_spy = Spy(ours, "decode_audio", sync)

    def jax_generate(seed):
        t0 = time.perf_counter()
        out = ours.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=steps,
            seed=seed,
            return_dict_in_generate=True,
            **gen_kwargs,
        )
        total = time.perf_counter() - t0
        t5, loop, codec = jax_t5_spy.take(), jax_loop_spy.take(), jax_codec_spy.take()
        return {"total": total, "t5": t5, "decode": loop, "encodec": codec, "other": total - t5 - loop - codec}, out

    with mem.phase("jax_generate_first"):
        jax_first, out = jax_generate(0)
    rss_jax = mem.rss()
    for name, part in (("HF text_encoder.forward", hf_first["t5"]), ("HF audio_encoder.decode", hf_first["encodec"])):
        if not part > 0:
            raise RuntimeError(f"{name} was not called inside generate: the HF breakdown would be wrong")
    for name in ("t5", "decode", "encodec"):
        if not jax_first[name] > 0:
            raise RuntimeError(f"the JAX {name} wrapper saw no call inside generate (library entry points moved?)")
    codes = np.asarray(out.audio_codes)
    frames = codes.shape[-1]
    log(
        f"[bench] loaded HF {hf_load_s:.1f} s, JAX {jax_load_s:.1f} s; HF warm-up ({warm_steps} steps) "
        f"{hf_first['total']:.1f} s; JAX first generate {jax_first['total']:.1f} s; {frames} frames"
    )

    # -- EnCodec on long audio: the same random codes through both decoders; JAX's first call compiles.
    long_frames = int(round(args.encodec_seconds * ours.config.audio_encoder.frame_rate))
    long_codes = np.random.default_rng(0).integers(0, ours.config.audio_encoder.codebook_size, (1, 4, long_frames))
    long_t, long_j = torch.from_numpy(long_codes), jnp.asarray(long_codes, jnp.int32)
    t_codes = torch.from_numpy(codes.astype(np.int64))

    def hf_codec(c):
        t0 = time.perf_counter()
        with torch.inference_mode():
            hf_codec_spy.original(c[None], [None])
        return time.perf_counter() - t0

    def jax_codec(c):
        t0 = time.perf_counter()
        ours.audio_encoder.decode(c).block_until_ready()
        return time.perf_counter() - t0

    with mem.phase("jax_encodec_long"):
        jax_long_first = jax_codec(long_j)
    hf_long, jax_long = [], []
    for _ in range(args.encodec_repeats):
        with mem.phase("hf_encodec_long"):
            hf_long.append(hf_codec(long_t))
        with mem.phase("jax_encodec_long"):
            jax_long.append(jax_codec(long_j))
    log(f"[bench] EnCodec {args.encodec_seconds:g} s: HF {median(hf_long):.2f} s, JAX {median(jax_long):.2f} s")

    # -- The interleaved repeats: generate (with its parts), T5, EnCodec on the generated frames.
    def hf_t5():
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(args.inner):
                hf_t5_spy.original(input_ids=t_ids, attention_mask=t_mask)
        return (time.perf_counter() - t0) / args.inner

    def jax_t5():
        t0 = time.perf_counter()
        for _ in range(args.inner):
            ours.encode_text(ids, mask).block_until_ready()
        return (time.perf_counter() - t0) / args.inner

    rows = {k: [] for k in ("hf_gen", "jax_gen", "hf_t5", "jax_t5", "hf_codec", "jax_codec")}
    reserve_s = 30.0  # the step breakdown and bandwidth reference that follow
    stopped_early = False
    for r in range(args.repeats):
        t_repeat = time.perf_counter()
        with mem.phase("hf_generate"):
            rows["hf_gen"].append(hf_generate(r + 1)[0])
        with mem.phase("jax_generate"):
            rows["jax_gen"].append(jax_generate(r + 1)[0])
        rows["hf_t5"].append(hf_t5())
        rows["jax_t5"].append(jax_t5())
        rows["hf_codec"].append(hf_codec(t_codes))
        rows["jax_codec"].append(jax_codec(codes))
        spent = time.perf_counter() - t_repeat
        log(
            f"[bench] repeat {r + 1}/{args.repeats} ({spent:.0f} s): generate HF {rows['hf_gen'][-1]['total']:.2f} s, "
            f"JAX {rows['jax_gen'][-1]['total']:.2f} s (decode loop {rows['jax_gen'][-1]['decode']:.2f} s)"
        )
        elapsed = time.perf_counter() - wall0
        if r + 1 < args.repeats and elapsed + spent + reserve_s > args.budget_s:
            stopped_early = True
            log(f"[bench] stopping after {r + 1} repeats: another would pass --budget-s {args.budget_s:g}")
            break
    for spy in (hf_t5_spy, hf_codec_spy, jax_t5_spy, jax_loop_spy, jax_codec_spy):
        spy.restore()
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the breakdown's extra arrays

    # -- The JAX decode step, taken apart, on the same prefix generate builds; then the host bandwidth reference.
    text = ours.encode_text(ids, mask)
    prefix = modeling._generation_prefix(ours.params, ours.config, text, jnp.asarray(mask), None, True)
    prompt = np.full((B, dec.num_codebooks, 1), dec.bos_token_id, np.int64)
    fixed, _ = sampling.build_delay_pattern(prompt, dec.pad_token_id, steps + 1, dec.audio_channels)
    jax_decode = [x["decode"] for x in rows["jax_gen"]]
    breakdown = jax_step_breakdown(ours, prefix, fixed, steps + 1, median(jax_decode), steps)
    bw_end = bandwidth_reference(args.bandwidth_bytes)
    bw = {k: max(bw_start[k], bw_end[k]) for k in bw_end}
    bw["at_start"], bw["at_end"] = bw_start, bw_end
    mm = matmul_reference()
    floor = hardware_floor(breakdown, bw, mm)
    load_summary = load.summary()
    mem.close()

    def stat(hf_values, jax_values):
        v = {"hf": median(hf_values), "jax": median(jax_values), "hf_min": min(hf_values), "jax_min": min(jax_values)}
        v["hf_over_jax"] = v["hf"] / v["jax"]
        return v

    def field(key, name):
        return [x[name] for x in rows[key]]

    hf_loop, jax_loop = field("hf_gen", "loop"), jax_decode
    figures = {
        "generate_s": stat(field("hf_gen", "total"), field("jax_gen", "total")),
        "decode_loop_s": stat(hf_loop, jax_loop),
        "decode_steps_per_s": stat([steps / x for x in hf_loop], [steps / x for x in jax_loop]),
        "t5_encode_s": stat(rows["hf_t5"], rows["jax_t5"]),
        "encodec_decode_generated_s": stat(rows["hf_codec"], rows["jax_codec"]),
        "encodec_decode_long_s": stat(hf_long, jax_long),
    }
    # steps/s: bigger is better, so its min is the worst; keep "hf_over_jax" as the plain ratio of medians.
    for v in (figures["decode_steps_per_s"],):
        v["hf_min"], v["jax_min"] = max([steps / x for x in hf_loop]), max([steps / x for x in jax_loop])
    rss = {
        "resident_after_load_and_first_call_bytes": {"hf": rss_hf - rss0, "jax": rss_jax - rss_hf},
        "peak_increase_generate_bytes": {
            "hf": mem.phases["hf_generate"]["peak_increase_bytes"],
            "jax": mem.phases["jax_generate"]["peak_increase_bytes"],
        },
        "peak_increase_encodec_long_bytes": {
            "hf": mem.phases["hf_encodec_long"]["peak_increase_bytes"],
            "jax": mem.phases["jax_encodec_long"]["peak_increase_bytes"],
        },
    }
    for v in rss.values():
        v["hf_over_jax"] = v["hf"] / v["jax"] if v["jax"] else float("nan")
    # The issue's memory figure: JAX's resident memory at its peak during generate over what it must hold.
    param_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(ours.params))
    jax_peak = rss["resident_after_load_and_first_call_bytes"]["jax"] + rss["peak_increase_generate_bytes"]["jax"]
    rss["jax_peak_over_weights_and_cache"] = jax_peak / (param_bytes + breakdown["kv_cache_bytes"])
    rss["param_bytes"] = param_bytes
    figures["compile_s"] = jax_first["total"] - median(field("jax_gen", "total"))

    result.update(
        environment={
            "device": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()],
            "cpu": _cpu_name(),
            "cores": cores,
            "torch_threads": torch.get_num_threads(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "hf_attn_implementation": getattr(hf.config, "_attn_implementation", None),
            "versions": {
                "python": platform.python_version(),
                "jax": jax.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            "other_processes_at_start": others_at_start,
            "load": load_summary,
        },
        shapes={
            "batch": B,
            "text_len": args.text_len,
            "max_new_tokens": steps,
            "frames": frames,
            "audio_seconds": frames / ours.config.audio_encoder.frame_rate,
            "encodec_long_frames": long_frames,
        },
        repeats_done=len(rows["hf_gen"]),
        stopped_early_for_budget=stopped_early,
        load_s={"hf": hf_load_s, "jax": jax_load_s},
        figures=figures,
        first_calls={
            "hf_warmup_generate_steps": warm_steps,
            "hf_warmup_generate": hf_first,
            "jax_generate": jax_first,
            "jax_encodec_long_s": jax_long_first,
        },
        raw={**rows, "hf_encodec_long": hf_long, "jax_encodec_long": jax_long},
        jax_step_breakdown=breakdown,
        bandwidth=bw,
        matmul=mm,
        floor=floor,
        rss={**rss, "process_peak_bytes": process_peak, "baseline_bytes": rss0, "phases": mem.phases},
        bench_wall_s=time.perf_counter() - wall0,
    )
    return result


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def _fmt_gb(x: float) -> str:
    return f"{x / 2**30:.2f} GiB"


def markdown(res: dict) -> str:
    f, env, sh, bd, bw = res["figures"], res["environment"], res["shapes"], res["jax_step_breakdown"], res["bandwidth"]
    a, first, load, git = res["args"], res["first_calls"], res["environment"]["load"], res["git"]
    ver = env["versions"]
    changes = f"; uncommitted library changes: {', '.join(git['library_changes'])}" if git["library_changes"] else ""
    lines = [
        f"### {res['config']} on {env['device']} ({env['cores']} cores, {env['cpu']}), batch {sh['batch']}, "
        f"{sh['max_new_tokens']} steps ({sh['frames']} frames, {sh['audio_seconds']:.2f} s of audio)",
        "",
        f"Median [min] of {res['repeats_done']} interleaved repeats (HF then JAX; long EnCodec: "
        f"{a['encodec_repeats']}), warm-up excluded; float32; guidance {GUIDANCE:g}, top-k {TOP_K}, sampling. "
        f"transformers {ver['transformers']} (attn {env['hf_attn_implementation']}, {env['torch_threads']} torch "
        f"threads), torch {ver['torch']}, jax {ver['jax']}; musicgen-jax at {git['commit']}{changes}.",
        "",
        "| figure | HF PyTorch | musicgen-jax | HF / JAX |",
        "| --- | --- | --- | --- |",
    ]
    timed = [
        ("generate, end to end", "generate_s", _fmt_s),
        ("decode loop (HF: generate - T5 - EnCodec)", "decode_loop_s", _fmt_s),
        ("decode steps/s [best]; ratio < 1: JAX faster", "decode_steps_per_s", lambda x: f"{x:.2f}"),
        ("T5 encode", "t5_encode_s", _fmt_s),
        (f"EnCodec decode, {sh['frames']} frames", "encodec_decode_generated_s", _fmt_s),
        (f"EnCodec decode, {a['encodec_seconds']:g} s of codes ({sh['encodec_long_frames']} frames)",
         "encodec_decode_long_s", _fmt_s),
    ]  # fmt: skip
    for label, key, fmt in timed:
        v = f[key]
        lines.append(
            f"| {label} | {fmt(v['hf'])} [{fmt(v['hf_min'])}] | {fmt(v['jax'])} [{fmt(v['jax_min'])}] | "
            f"{v['hf_over_jax']:.2f} |"
        )
    jf, hf1 = first["jax_generate"], first["hf_warmup_generate"]
    lines.append(
        f"| first call: generate (HF: {first['hf_warmup_generate_steps']}-step warm-up; JAX: compile + run) | "
        f"{_fmt_s(hf1['total'])} | {_fmt_s(jf['total'])} | |"
    )
    lines.append(f"| first call: long EnCodec (JAX: compile + run) | | {_fmt_s(first['jax_encodec_long_s'])} | |")
    fl = res["floor"]
    lines.append(f"| compile (JAX first generate - steady state) | | {_fmt_s(f['compile_s'])} | |")
    lines.append(
        f"| decode step [floor: {fl['bound']}-bound, {_fmt_s(fl['floor_s'])}] (fraction of floor) | "
        f"{_fmt_s(f['decode_loop_s']['hf'] / sh['max_new_tokens'])} "
        f"({fl['floor_s'] / (f['decode_loop_s']['hf'] / sh['max_new_tokens']):.0%}) | "
        f"{_fmt_s(bd['scan_step_s'])} ({fl['scan_step_fraction_of_floor']:.0%}) | |"
    )
    for label, key in (
        ("RSS: resident after load + first call", "resident_after_load_and_first_call_bytes"),
        ("RSS: peak increase during generate", "peak_increase_generate_bytes"),
        ("RSS: peak increase during long EnCodec", "peak_increase_encodec_long_bytes"),
    ):
        v = res["rss"][key]
        lines.append(f"| {label} | {_fmt_gb(v['hf'])} | {_fmt_gb(v['jax'])} | {v['hf_over_jax']:.2f} |")
    lines.append(
        f"| JAX peak (resident + generate peak) / (weights {_fmt_gb(res['rss']['param_bytes'])} + KV cache) | | "
        f"{res['rss']['jax_peak_over_weights_and_cache']:.2f}x | |"
    )
    shared_note = "; one shared unconditional row" if bd.get("prefill_shared_uncond") else ""
    lines += [
        "",
        f"- JAX first generate {_fmt_s(jf['total'])} = T5 {_fmt_s(jf['t5'])} + decode loop {_fmt_s(jf['decode'])} + "
        f"EnCodec {_fmt_s(jf['encodec'])} + other {_fmt_s(jf['other'])}; each part includes its compilation "
        f"(compare with the steady-state rows).",
        f"- JAX decode step: prefill {_fmt_s(bd['prefill_s'])} ({bd['prefix_len']} prefix positions + BOS, "
        f"{bd['rows']} rows{shared_note}); scan step (loop - prefill) / (steps - 1) = {_fmt_s(bd['scan_step_s'])}; "
        f"one cached "
        f"forward step jitted alone {_fmt_s(bd['forward_step_s'])}; sampling head (CFG + top-k + draw) "
        f"{_fmt_s(bd['sampling_head_s'])}. Decoder layout: {bd['layout']}.",
        f"- Hardware floor of one step: it must read {_fmt_gb(bd['step_read_bytes'])} (weights + the KV cache of the "
        f"filled positions, {_fmt_gb(bd['step_kv_needed_bytes'])} on average) at {fl['read_bandwidth_GBps']:.1f} GB/s "
        f"= {_fmt_s(fl['bytes_floor_s'])}, and do {bd['step_flops'] / 1e9:.2f} GFLOP at {fl['matmul_GFLOPs']:.0f} "
        f"GFLOP/s (JAX {res['matmul']['n']}^3 matmul) = {_fmt_s(fl['flops_floor_s'])}; the floor is the larger.",
        f"- Floor: plain GEMVs ({bd['rows']} rows) over the same layer matrices ({_fmt_gb(bd['layer_matrix_bytes'])}, "
        f"unstacked) take {_fmt_s(bd['gemv_floor_s'])} ({bd['gemv_floor_GBps']:.1f} GB/s); the scan step moves "
        f"weights {_fmt_gb(bd['decoder_weight_bytes'])} + KV cache {_fmt_gb(bd['kv_cache_bytes'])} (capacity "
        f"{bd['cache_capacity']}) at an effective {bd['scan_step_effective_GBps']:.1f} GB/s. Host: torch copy "
        f"{bw['torch_copy_GBps']:.1f} GB/s (read + write), JAX sum {bw['jax_sum_read_GBps']:.1f} GB/s (read), JAX "
        f"one-row GEMV {bw['jax_gemv_read_GBps']:.1f} GB/s (read), JAX in-place scale "
        f"{bw['jax_scale_inplace_GBps']:.1f} GB/s (read + write); best of the readings at the start and the end.",
        f"- Process peak RSS (both models resident): {_fmt_gb(res['rss']['process_peak_bytes'])}. Load: HF "
        f"{res['load_s']['hf']:.1f} s, JAX {res['load_s']['jax']:.1f} s (convert + cast).",
        f"- Machine: other processes used {load['other_processes_busy_cores']:.2f} of {env['cores']} cores on average "
        f"(loadavg {load['loadavg_start'][0]:.2f} -> {load['loadavg_end'][0]:.2f}); busy at start: "
        f"{', '.join(env['other_processes_at_start']) or 'nothing'}. Benchmark wall time {res['bench_wall_s']:.0f} s "
        f"(checkpoint {res['checkpoint']['ready_s']:.0f} s apart)"
        + ("; stopped early for --budget-s." if res["stopped_early_for_budget"] else "."),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    p.add_argument("--steps", default="128", help="max_new_tokens (decoder steps), or a comma list paired with --batch")
    p.add_argument("--batch", default="1", help="text rows, or a comma list (1,4,16): one fresh process each")
    p.add_argument("--repeats", type=int, default=3, help="interleaved HF/JAX repeats (fewer if --budget-s is hit)")
    p.add_argument("--budget-s", type=float, default=540.0, help="stop repeating once another repeat would pass this")
    p.add_argument("--encodec-seconds", type=float, default=30.0, help="length of the long EnCodec decode")
    p.add_argument("--encodec-repeats", type=int, default=2, help="repeats of the long EnCodec decode")
    p.add_argument("--text-len", type=int, default=12, help="padded text length in tokens")
    p.add_argument("--inner", type=int, default=5, help="calls averaged per repeat for T5")
    p.add_argument("--bandwidth-bytes", type=int, default=1 << 30)
    p.add_argument("--cache-dir", default=os.path.join("/tmp", "musicgen-bench"))
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.build_only:
        os.makedirs(args.cache_dir, exist_ok=True)
        build_checkpoint(args.config, args.cache_dir)
        return {}
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
    os.makedirs(args.cache_dir, exist_ok=True)
    if len(batches) > 1:  # one fresh process per batch size: no memory or allocator state carried between them
        rest = list(argv if argv is not None else sys.argv[1:])
        for b, n in zip(batches, steps, strict=True):
            child = _replace_option(_replace_option(rest, "--batch", str(b)), "--steps", str(n))
            subprocess.run([sys.executable, os.path.abspath(__file__), *child], check=True)
        return {}
    args.batch, args.steps = batches[0], steps[0]
    res = run(args)
    os.makedirs(args.out, exist_ok=True)
    stem = f"{args.config}-{res['environment']['device']}-b{args.batch}-s{args.steps}"
    with open(os.path.join(args.out, stem + ".json"), "w") as fh:
        json.dump(res, fh, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    table = markdown(res)
    with open(os.path.join(args.out, stem + ".md"), "w") as fh:
        fh.write(table)
    print(table)
    print(f"[bench] wrote {os.path.join(args.out, stem)}.json and .md")
    return res


def _replace_option(argv: list[str], name: str, value: str) -> list[str]:
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


if __name__ == "__main__":
    main()
