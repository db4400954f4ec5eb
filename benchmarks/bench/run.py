"""One configuration (``--config``, one batch size, one step count) end to end: checkpoint, both models, the
interleaved repeats, the decode-step breakdown and the host probes; returns the result dict."""

from __future__ import annotations

import functools
import os
import platform
import resource
import time

import numpy as np

from benchmarks.bench import breakdown, probes, report, specs
from benchmarks.bench.probes import median
from benchmarks.bench.sides import HFSide, JaxSide

log = functools.partial(print, flush=True)


class Bench:
    """The state of one run, filled in order by ``start``, ``load``, ``long_encodec``, ``repeat``, ``finish``."""

    def __init__(self, args):
        self.args, self.steps, self.batch = args, args.steps, args.batch
        self.result: dict = {
            "config": args.config,
            "spec": specs.CONFIGS[args.config],
            "args": vars(args),
            "git": probes.library_state(),
        }

    def bandwidth(self, when: str) -> dict:
        a = self.args
        bw = probes.bandwidth_reference(a.bandwidth_bytes, a.bandwidth_window, a.bandwidth_tolerance, a.bandwidth_cap_s)
        log(f"[bench] read bandwidth, best / median: {probes.bandwidth_line(when, bw)}")
        return bw

    def start(self):
        """Machine load, the checkpoint, the first bandwidth reading; the time budget counts from its end."""
        self.load = probes.CpuLoad()
        self.others_at_start = self.load.top_others()
        log(f"[bench] other processes using CPU at start: {self.others_at_start or 'none'}; loadavg {os.getloadavg()}")
        self.result["checkpoint"] = specs.checkpoint(self.args.config, self.args.cache_dir)
        log(f"[bench] checkpoint {self.result['checkpoint']['path']} ({self.result['checkpoint']['ready_s']:.1f} s)")
        self.bw_start = self.bandwidth("start")  # again at the end; the floor takes the best reading
        self.wall0 = time.perf_counter()
        self.mem = probes.RssSampler()

    def load_models(self):
        """HF: load, warm up with a short generate (nothing to compile; primes allocators and oneDNN). JAX: load,
        first (compiling) generate at the measured shapes."""
        path, mem = self.result["checkpoint"]["path"], self.mem
        self.rss0 = mem.rss()
        self.hf = HFSide(path, self.steps, self.args.inner)
        ids, mask = specs.text_inputs(self.batch, self.args.text_len, self.hf.model.config.text_encoder.vocab_size)
        self.hf.set_inputs(ids, mask)
        self.warm_steps = min(self.steps, 8)
        with mem.phase("hf_generate_first"):
            self.hf_first = self.hf.generate(0, self.warm_steps)
        self.rss_hf = mem.rss()
        self.ours = JaxSide(path, self.steps, self.args.inner)
        self.ours.set_inputs(ids, mask)
        with mem.phase("jax_generate_first"):
            self.jax_first, out = self.ours.generate(0)
        self.rss_jax = mem.rss()
        for name, part in (
            ("HF text_encoder.forward", self.hf_first["t5"]),
            ("HF audio_encoder.decode", self.hf_first["encodec"]),
        ):
            if not part > 0:
                raise RuntimeError(f"{name} was not called inside generate: the HF breakdown would be wrong")
        self.codes = np.asarray(out.audio_codes)
        if out.stats["decode_steps"] != self.steps:
            raise RuntimeError(f"JAX generated {out.stats['decode_steps']} steps, not {self.steps}")
        log(
            f"[bench] loaded HF {self.hf.load_s:.1f} s, JAX {self.ours.load_s:.1f} s; HF warm-up ({self.warm_steps} "
            f"steps) {self.hf_first['total']:.1f} s; JAX first generate {self.jax_first['total']:.1f} s "
            f"(compile {self.jax_first['compile']:.1f} s); {self.codes.shape[-1]} frames"
        )

    def long_encodec(self):
        """The same random codes of ``--encodec-seconds`` through both decoders; JAX's first call compiles."""
        import jax.numpy as jnp

        codec = self.ours.model.config.audio_encoder
        self.long_frames = int(round(self.args.encodec_seconds * codec.frame_rate))
        codes = np.random.default_rng(0).integers(0, codec.codebook_size, (1, 4, self.long_frames))
        codes_j = jnp.asarray(codes, jnp.int32)
        with self.mem.phase("jax_encodec_long"):
            self.jax_long_first = self.ours.codec(codes_j)
        self.hf_long, self.jax_long = [], []
        for _ in range(self.args.encodec_repeats):
            with self.mem.phase("hf_encodec_long"):
                self.hf_long.append(self.hf.codec(codes))
            with self.mem.phase("jax_encodec_long"):
                self.jax_long.append(self.ours.codec(codes_j))
        log(
            f"[bench] EnCodec {self.args.encodec_seconds:g} s: HF {median(self.hf_long):.2f} s, "
            f"JAX {median(self.jax_long):.2f} s"
        )

    def repeat(self, r: int):
        """One interleaved repeat: generate (with its parts), T5, EnCodec on the generated frames."""
        rows = self.rows
        with self.mem.phase("hf_generate"):
            rows["hf_gen"].append(self.hf.generate(r + 1))
        with self.mem.phase("jax_generate"):
            rows["jax_gen"].append(self.ours.generate(r + 1)[0])
        rows["hf_t5"].append(self.hf.t5())
        rows["jax_t5"].append(self.ours.t5())
        rows["hf_codec"].append(self.hf.codec(self.codes))
        rows["jax_codec"].append(self.ours.codec(self.codes))

    def repeats(self):
        """``--repeats`` interleaved repeats, fewer when another would end past ``--budget-s``."""
        self.rows = {k: [] for k in ("hf_gen", "jax_gen", "hf_t5", "jax_t5", "hf_codec", "jax_codec")}
        reserve_s = 30.0 + 4 * self.args.bandwidth_cap_s  # the step breakdown and bandwidth reference that follow
        self.stopped_early, n = False, self.args.repeats
        for r in range(n):
            t_repeat = time.perf_counter()
            self.repeat(r)
            spent = time.perf_counter() - t_repeat
            hf, ours = self.rows["hf_gen"][-1], self.rows["jax_gen"][-1]
            log(
                f"[bench] repeat {r + 1}/{n} ({spent:.0f} s): generate HF {hf['total']:.2f} s, JAX "
                f"{ours['total']:.2f} s (decode loop {ours['decode']:.2f} s)"
            )
            if r + 1 < n and time.perf_counter() - self.wall0 + spent + reserve_s > self.args.budget_s:
                self.stopped_early = True
                log(f"[bench] stopping after {r + 1} repeats: another would pass --budget-s {self.args.budget_s:g}")
                break
        self.hf.close()
        self.process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the breakdown

    def finish(self):
        """The JAX decode step taken apart on the prefix generate builds; then the host probes again."""
        model = self.ours.model
        prefix = breakdown.generation_prefix(model, self.ours.ids, self.ours.mask)
        self.breakdown = breakdown.decode_step_breakdown(model, prefix, self.batch, self.steps, self.rows["jax_gen"])
        self.breakdown["prefill_first_call_s"] = self.jax_first["prefill"]
        self.bw = probes.combine_bandwidth(self.bw_start, self.bandwidth("end"))
        self.matmul = probes.matmul_reference()
        self.floor = breakdown.hardware_floor(self.breakdown, self.bw, self.matmul)
        self.load_summary = self.load.summary()
        self.mem.close()


def run(args) -> dict:
    import torch

    torch.set_num_threads(probes.cores())
    bench = Bench(args)
    bench.start()
    bench.load_models()
    bench.long_encodec()
    bench.repeats()
    bench.finish()
    return assemble(bench)


def environment(bench: Bench) -> dict:
    import jax
    import torch
    import transformers

    return {
        "device": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "cpu": probes.cpu_name(),
        "cores": probes.cores(),
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "hf_attn_implementation": getattr(bench.hf.model.config, "_attn_implementation", None),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "other_processes_at_start": bench.others_at_start,
        "load": bench.load_summary,
    }


def assemble(bench: Bench) -> dict:
    """The result dict (the JSON written next to the markdown table)."""
    import jax

    model, frames = bench.ours.model, bench.codes.shape[-1]
    param_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(model.params))
    rss = report.rss_figures(
        bench.mem, bench.rss0, bench.rss_hf, bench.rss_jax, param_bytes, bench.breakdown["kv_cache_bytes"]
    )
    return {
        **bench.result,
        "environment": environment(bench),
        "shapes": {
            "batch": bench.batch,
            "text_len": bench.args.text_len,
            "max_new_tokens": bench.steps,
            "frames": frames,
            "audio_seconds": frames / model.config.audio_encoder.frame_rate,
            "encodec_long_frames": bench.long_frames,
        },
        "repeats_done": len(bench.rows["hf_gen"]),
        "stopped_early_for_budget": bench.stopped_early,
        "load_s": {"hf": bench.hf.load_s, "jax": bench.ours.load_s},
        "figures": report.figures(bench.rows, bench.steps, bench.hf_long, bench.jax_long, bench.jax_first),
        "first_calls": {
            "hf_warmup_generate_steps": bench.warm_steps,
            "hf_warmup_generate": bench.hf_first,
            "jax_generate": bench.jax_first,
            "jax_encodec_long_s": bench.jax_long_first,
        },
        "raw": {**bench.rows, "hf_encodec_long": bench.hf_long, "jax_encodec_long": bench.jax_long},
        "jax_step_breakdown": bench.breakdown,
        "bandwidth": bench.bw,
        "matmul": bench.matmul,
        "floor": bench.floor,
        "rss": {
            **rss,
            "process_peak_bytes": bench.process_peak,
            "baseline_bytes": bench.rss0,
            "phases": bench.mem.phases,
        },
        "bench_wall_s": time.perf_counter() - bench.wall0,
    }
