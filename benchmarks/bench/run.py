"""One configuration (``--config``, one batch size, one step count, one ``--device`` / ``--dtype``) end to end:
checkpoint, both models (HF only where torch runs: not on TPU, not with ``--jax-only``), the interleaved repeats, the
optional greedy comparison, the decode-step breakdown and the probes; returns the result dict."""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import resource
import time

import numpy as np

from benchmarks.bench import breakdown, device, probes, report, specs
from benchmarks.bench.device import Target
from benchmarks.bench.probes import median
from benchmarks.bench.sides import HFSide, JaxSide

log = functools.partial(print, flush=True)

# On an accelerator each bandwidth reading times this many back-to-back calls (one 1 GiB sum is ~0.3 ms of HBM
# traffic: a single call would time the launch); the matmul probe is 8192^3 there (2048^3 on CPU, as before).
ACCELERATOR_PROBE_REPS = 20
ACCELERATOR_MATMUL_N = 8192


class Bench:
    """The state of one run, filled in order by ``start``, ``load``, ``long_encodec``, ``repeat``, ``finish``."""

    def __init__(self, args, target: Target, numerics: dict):
        self.args, self.steps, self.batch, self.target = args, args.steps, args.batch, target
        self.hf, self.spec = None, specs.CONFIGS[args.config]
        self.result: dict = {
            "config": args.config,
            "spec": specs.CONFIGS[args.config],
            "args": vars(args),
            "target": {**dataclasses.asdict(target), "accelerator": target.accelerator},
            "numerics": numerics,
            "git": probes.library_state(),
        }

    @property
    def probe_reps(self) -> int:
        return ACCELERATOR_PROBE_REPS if self.target.accelerator else 1

    def bandwidth(self, when: str) -> dict:
        a = self.args
        bw = probes.bandwidth_reference(
            a.bandwidth_bytes,
            a.bandwidth_window,
            a.bandwidth_tolerance,
            a.bandwidth_cap_s,
            reps=self.probe_reps,
            torch_device=self.target.torch_device,
        )
        log(f"[bench] read bandwidth, best / median: {probes.bandwidth_line(when, bw)}")
        return bw

    def start(self):
        """Machine load, the checkpoint, the first bandwidth reading; the time budget counts from its end."""
        self.load = probes.CpuLoad()
        self.others_at_start = self.load.top_others()
        log(f"[bench] other processes using CPU at start: {self.others_at_start or 'none'}; loadavg {os.getloadavg()}")
        self.result["checkpoint"] = specs.checkpoint(self.args.config, self.args.cache_dir)
        log(f"[bench] checkpoint {self.result['checkpoint']['path']} ({self.result['checkpoint']['ready_s']:.1f} s)")
        self.jax_path = self.result["checkpoint"]["path"]
        if self.args.jax_weights == "converted":
            self.result["jax_checkpoint"] = specs.converted(self.args.config, self.args.cache_dir)
            self.jax_path = self.result["jax_checkpoint"]["path"]
            log(f"[bench] JAX loads {self.jax_path} ({self.result['jax_checkpoint']['ready_s']:.1f} s)")
        self.bw_start = self.bandwidth("start")  # again at the end; the floor takes the best reading
        # Device memory (accelerators): JAX's peak cannot be reset, so its value after the probe is kept apart.
        self.jax_dev_after_probe = probes.jax_device_memory()
        if self.target.torch_device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()  # the torch copy probe's buffers are not HF's
        self.wall0 = time.perf_counter()
        self.mem = probes.RssSampler()

    def load_models(self):
        """HF (where it runs): load, warm up with a short generate (nothing to compile; primes allocators and oneDNN
        or cuBLAS). JAX: load, first (compiling) generate at the measured shapes."""
        path, mem = self.result["checkpoint"]["path"], self.mem
        self.rss0 = mem.rss()
        spec_vocab = specs.CONFIGS[self.args.config]["text"]["vocab_size"]
        ids, mask = specs.text_inputs(self.batch, self.args.text_len, spec_vocab)
        self.warm_steps = min(self.steps, 8)
        self.hf_first, self.hf_attn, self.hf_load_s = None, None, None
        if self.target.runs_hf:
            self.hf = HFSide(path, self.steps, self.args.inner, self.target, self.spec)
            self.hf_load_s = self.hf.load_s
            self.hf_attn = getattr(self.hf.model.config, "_attn_implementation", None)
            self.hf.set_inputs(ids, mask)
            with mem.phase("hf_generate_first"):
                self.hf_first = self.hf.generate(0, self.warm_steps)
        self.rss_hf = mem.rss()
        self.hf_dev_after_load = probes.torch_device_memory(self.target.torch_device)
        self.ours = JaxSide(self.jax_path, self.steps, self.args.inner, self.target, self.spec)
        self.ours.set_inputs(ids, mask)
        with mem.phase("jax_generate_first"):
            self.jax_first, out = self.ours.generate(0)
        self.rss_jax = mem.rss()
        self.jax_dev_after_load = probes.jax_device_memory()
        if self.hf_first is not None:
            for name, part in (
                ("HF text_encoder.forward", self.hf_first["t5"]),
                ("HF audio_encoder.decode", self.hf_first["encodec"]),
            ):
                if not part > 0:
                    raise RuntimeError(f"{name} was not called inside generate: the HF breakdown would be wrong")
        self.codes = np.asarray(out.audio_codes)
        if out.stats["decode_steps"] != self.steps:
            raise RuntimeError(f"JAX generated {out.stats['decode_steps']} steps, not {self.steps}")
        hf = f"HF {self.hf.load_s:.1f} s, " if self.hf else ""
        warm = (
            f"HF warm-up ({self.warm_steps} steps) {self.hf_first['total']:.1f} s; "
            if self.hf_first
            else f"HF not run ({self.target.hf_absent}); "
        )
        log(
            f"[bench] loaded {hf}JAX {self.ours.load_s:.1f} s; {warm}JAX first generate "
            f"{self.jax_first['total']:.1f} s "
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
            if self.hf:
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
        rows, hf = self.rows, self.hf
        if hf:
            with self.mem.phase("hf_generate"):
                rows["hf_gen"].append(hf.generate(r + 1))
        with self.mem.phase("jax_generate"):
            rows["jax_gen"].append(self.ours.generate(r + 1)[0])
        if hf:
            rows["hf_t5"].append(hf.t5())
        rows["jax_t5"].append(self.ours.t5())
        if hf:
            rows["hf_codec"].append(hf.codec(self.codes))
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
            ours = self.rows["jax_gen"][-1]
            hf = f"{self.rows['hf_gen'][-1]['total']:.2f} s" if self.hf else "n/a"
            log(
                f"[bench] repeat {r + 1}/{n} ({spent:.0f} s): generate HF {hf}, JAX "
                f"{ours['total']:.2f} s (decode loop {ours['decode']:.2f} s)"
            )
            if r + 1 < n and time.perf_counter() - self.wall0 + spent + reserve_s > self.args.budget_s:
                self.stopped_early = True
                log(f"[bench] stopping after {r + 1} repeats: another would pass --budget-s {self.args.budget_s:g}")
                break
        self.process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the breakdown
        self.dev_mem_end = {
            "hf": probes.torch_device_memory(self.target.torch_device),
            "jax": probes.jax_device_memory(),
        }

    def greedy(self):
        """``--check-greedy``: the codes of a short greedy generate (``--greedy-steps``, same text, same guidance) in
        both frameworks, compared code by code; then HF is released (the rest measures JAX alone)."""
        self.greedy_result = None
        if self.args.check_greedy and not self.hf:
            self.greedy_result = {"ran": False, "why": self.target.hf_absent}
        elif self.args.check_greedy:
            n, t0 = self.args.greedy_steps, time.perf_counter()
            hf_codes = self.hf.greedy_codes(n)
            jax_codes = self.ours.greedy_codes(n)
            self.greedy_result = {
                "ran": True,
                "steps": n,
                "dtype": self.target.dtype,
                **report.codes_agreement(hf_codes, jax_codes),
                "seconds": time.perf_counter() - t0,
            }
            g = self.greedy_result
            log(
                f"[bench] greedy {n} steps: codes {'identical' if g['identical'] else 'differ'} ({g['agreement']:.2%} "
                f"of {g['codes']} agree; first differing frame {g['first_mismatch_frame']}; {g['seconds']:.0f} s)"
            )
        if self.hf:
            self.hf.close()
            self.hf = None

    def finish(self):
        """The JAX decode step taken apart on the conditions generate builds (melody: the prefix; plain MusicGen: the
        cross-attention text states); then the host probes again."""
        model = self.ours.model
        conditions = breakdown.generation_conditions(model, self.ours.ids, self.ours.mask)
        self.breakdown = breakdown.decode_step_breakdown(
            model, conditions, self.batch, self.steps, self.rows["jax_gen"]
        )
        self.breakdown["prefill_first_call_s"] = self.jax_first["prefill"]
        self.bw = probes.combine_bandwidth(self.bw_start, self.bandwidth("end"))
        if self.target.accelerator:
            self.matmul = probes.matmul_reference(ACCELERATOR_MATMUL_N, self.target.dtype, reps=5)
        else:
            self.matmul = probes.matmul_reference()
        self.floor = breakdown.hardware_floor(self.breakdown, self.bw, self.matmul)
        self.load_summary = self.load.summary()
        self.mem.close()


def run(args, target: Target, numerics: dict) -> dict:
    """One configuration on ``target`` (whose environment and matmul settings ``device`` has applied)."""
    if target.runs_hf:
        import torch

        torch.set_num_threads(probes.cores())
    bench = Bench(args, target, numerics)
    bench.start()
    bench.load_models()
    bench.long_encodec()
    bench.repeats()
    bench.greedy()
    bench.finish()
    return assemble(bench)


def versions() -> dict:
    import jax

    out = {"python": platform.python_version(), "jax": jax.__version__}
    for name in ("torch", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def environment(bench: Bench) -> dict:
    import jax

    target = bench.target
    threads = None
    if target.runs_hf:
        import torch

        threads = torch.get_num_threads()
    return {
        "device": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        **(probes.accelerator_names(target.torch_device) if target.accelerator else {}),
        "torch_device": target.torch_device,
        "hf_absent": target.hf_absent,
        "cpu": probes.cpu_name(),
        "cores": probes.cores(),
        "torch_threads": threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_environment": device.jax_environment(),
        "hf_attn_implementation": bench.hf_attn,
        "versions": versions(),
        "other_processes_at_start": bench.others_at_start,
        "load": bench.load_summary,
    }


def assemble(bench: Bench) -> dict:
    """The result dict (the JSON written next to the markdown table)."""
    import jax

    model, frames = bench.ours.model, bench.codes.shape[-1]
    param_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(model.params))
    kv_bytes = bench.breakdown["kv_cache_bytes"]
    after_hf = bench.rss_hf if bench.target.runs_hf else None
    rss = report.rss_figures(bench.mem, bench.rss0, after_hf, bench.rss_jax, param_bytes, kv_bytes)
    device_memory = None
    if bench.target.accelerator:
        device_memory = report.device_memory_figures(
            bench.jax_dev_after_probe,
            {"hf": bench.hf_dev_after_load, "jax": bench.jax_dev_after_load},
            bench.dev_mem_end,
            param_bytes,
            kv_bytes,
        )
    res = {
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
        "repeats_done": len(bench.rows["jax_gen"]),
        "stopped_early_for_budget": bench.stopped_early,
        "load_s": {"hf": bench.hf_load_s, "jax": bench.ours.load_s},
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
        "device_memory": device_memory,
        "greedy": bench.greedy_result,
        "bench_wall_s": time.perf_counter() - bench.wall0,
    }
    res["targets"] = report.targets(res) if bench.target.accelerator else None
    return res
