"""Figures from the raw timings, the result JSON and the markdown table."""

from __future__ import annotations

import json
import os

from benchmarks.bench.probes import bandwidth_line, median
from benchmarks.bench.specs import GUIDANCE, TOP_K

# ---------------------------------------------------------------------------------------------------------------
# Figures.


def stat(hf_values, jax_values) -> dict:
    """Median and minimum of each side; ``hf_over_jax`` is the ratio of medians."""
    v = {"hf": median(hf_values), "jax": median(jax_values), "hf_min": min(hf_values), "jax_min": min(jax_values)}
    v["hf_over_jax"] = v["hf"] / v["jax"]
    return v


def figures(rows: dict, steps: int, hf_long: list, jax_long: list, jax_first: dict) -> dict:
    """The table's timed rows (median, min, HF / JAX) from the interleaved repeats."""

    def field(key, name):
        return [x[name] for x in rows[key]]

    hf_loop, jax_loop = field("hf_gen", "loop"), field("jax_gen", "decode")
    hf_rate, jax_rate = [steps / x for x in hf_loop], [steps / x for x in jax_loop]
    out = {
        "generate_s": stat(field("hf_gen", "total"), field("jax_gen", "total")),
        "decode_loop_s": stat(hf_loop, jax_loop),
        "decode_steps_per_s": stat(hf_rate, jax_rate),
        "t5_encode_s": stat(rows["hf_t5"], rows["jax_t5"]),
        "encodec_decode_generated_s": stat(rows["hf_codec"], rows["jax_codec"]),
        "encodec_decode_long_s": stat(hf_long, jax_long),
    }
    # steps/s: bigger is better, so the bracket holds the best; "hf_over_jax" stays the plain ratio of medians.
    out["decode_steps_per_s"]["hf_min"], out["decode_steps_per_s"]["jax_min"] = max(hf_rate), max(jax_rate)
    out["compile_s"] = jax_first["total"] - median(field("jax_gen", "total"))
    return out


def rss_figures(mem, baseline: int, after_hf: int, after_jax: int, param_bytes: int, kv_bytes: int) -> dict:
    """RSS growth over each framework's load and first call, and the peak increase during each timed phase."""

    def peaks(name):
        return {side: mem.phases[f"{side}_{name}"]["peak_increase_bytes"] for side in ("hf", "jax")}

    rss = {
        "resident_after_load_and_first_call_bytes": {"hf": after_hf - baseline, "jax": after_jax - after_hf},
        "peak_increase_generate_bytes": peaks("generate"),
        "peak_increase_encodec_long_bytes": peaks("encodec_long"),
    }
    for v in rss.values():
        v["hf_over_jax"] = v["hf"] / v["jax"] if v["jax"] else float("nan")
    # JAX's resident memory at its peak during generate, over what it must hold.
    jax_peak = rss["resident_after_load_and_first_call_bytes"]["jax"] + rss["peak_increase_generate_bytes"]["jax"]
    rss["jax_peak_over_weights_and_cache"] = jax_peak / (param_bytes + kv_bytes)
    rss["param_bytes"] = param_bytes
    return rss


# ---------------------------------------------------------------------------------------------------------------
# Output.


def write(res: dict, out_dir: str) -> str:
    """Writes ``<config>-<device>-b<batch>-s<steps>.json`` and ``.md`` under ``out_dir``; returns the stem path."""
    os.makedirs(out_dir, exist_ok=True)
    sh = res["shapes"]
    stem = f"{res['config']}-{res['environment']['device']}-b{sh['batch']}-s{sh['max_new_tokens']}"
    path = os.path.join(out_dir, stem)
    with open(path + ".json", "w") as fh:
        json.dump(res, fh, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    with open(path + ".md", "w") as fh:
        fh.write(markdown(res))
    return path


def fmt_s(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def fmt_gb(x: float) -> str:
    return f"{x / 2**30:.2f} GiB"


def markdown(res: dict) -> str:
    return "\n".join([*header(res), *table(res), "", *notes(res)]) + "\n"


def header(res: dict) -> list[str]:
    env, sh, git, ver = res["environment"], res["shapes"], res["git"], res["environment"]["versions"]
    changes = f"; uncommitted library changes: {', '.join(git['library_changes'])}" if git["library_changes"] else ""
    return [
        f"### {res['config']} on {env['device']} ({env['cores']} cores, {env['cpu']}), batch {sh['batch']}, "
        f"{sh['max_new_tokens']} steps ({sh['frames']} frames, {sh['audio_seconds']:.2f} s of audio)",
        "",
        f"Median [min] of {res['repeats_done']} interleaved repeats (HF then JAX; long EnCodec: "
        f"{res['args']['encodec_repeats']}), warm-up excluded; float32; guidance {GUIDANCE:g}, top-k {TOP_K}, "
        f"sampling. transformers {ver['transformers']} (attn {env['hf_attn_implementation']}, {env['torch_threads']} "
        f"torch threads), torch {ver['torch']}, jax {ver['jax']}; musicgen-jax at {git['commit']}{changes}.",
        "",
        "| figure | HF PyTorch | musicgen-jax | HF / JAX |",
        "| --- | --- | --- | --- |",
    ]


def table(res: dict) -> list[str]:
    f, sh, a, first = res["figures"], res["shapes"], res["args"], res["first_calls"]
    timed = [
        ("generate, end to end", "generate_s", fmt_s),
        ("decode loop (HF: generate - T5 - EnCodec)", "decode_loop_s", fmt_s),
        ("decode steps/s [best]; ratio < 1: JAX faster", "decode_steps_per_s", lambda x: f"{x:.2f}"),
        ("T5 encode", "t5_encode_s", fmt_s),
        (f"EnCodec decode, {sh['frames']} frames", "encodec_decode_generated_s", fmt_s),
        (f"EnCodec decode, {a['encodec_seconds']:g} s of codes ({sh['encodec_long_frames']} frames)",
         "encodec_decode_long_s", fmt_s),
    ]  # fmt: skip
    lines = []
    for label, key, fmt in timed:
        v = f[key]
        lines.append(
            f"| {label} | {fmt(v['hf'])} [{fmt(v['hf_min'])}] | {fmt(v['jax'])} [{fmt(v['jax_min'])}] | "
            f"{v['hf_over_jax']:.2f} |"
        )
    jf, hf1, fl = first["jax_generate"], first["hf_warmup_generate"], res["floor"]
    hf_step = f["decode_loop_s"]["hf"] / sh["max_new_tokens"]
    lines += [
        f"| first call: generate (HF: {first['hf_warmup_generate_steps']}-step warm-up; JAX: compile + run) | "
        f"{fmt_s(hf1['total'])} | {fmt_s(jf['total'])} | |",
        f"| first call: long EnCodec (JAX: compile + run) | | {fmt_s(first['jax_encodec_long_s'])} | |",
        f"| compile (JAX first generate - steady state) | | {fmt_s(f['compile_s'])} | |",
        f"| decode step [floor: {fl['bound']}-bound, {fmt_s(fl['floor_s'])}] (fraction of floor) | "
        f"{fmt_s(hf_step)} ({fl['floor_s'] / hf_step:.0%}) | "
        f"{fmt_s(res['jax_step_breakdown']['scan_step_s'])} ({fl['scan_step_fraction_of_floor']:.0%}) | |",
    ]
    for label, key in (
        ("RSS: resident after load + first call", "resident_after_load_and_first_call_bytes"),
        ("RSS: peak increase during generate", "peak_increase_generate_bytes"),
        ("RSS: peak increase during long EnCodec", "peak_increase_encodec_long_bytes"),
    ):
        v = res["rss"][key]
        lines.append(f"| {label} | {fmt_gb(v['hf'])} | {fmt_gb(v['jax'])} | {v['hf_over_jax']:.2f} |")
    lines.append(
        f"| JAX peak (resident + generate peak) / (weights {fmt_gb(res['rss']['param_bytes'])} + KV cache) | | "
        f"{res['rss']['jax_peak_over_weights_and_cache']:.2f}x | |"
    )
    return lines


def notes(res: dict) -> list[str]:
    jf, bd, fl = res["first_calls"]["jax_generate"], res["jax_step_breakdown"], res["floor"]
    shared = "; one shared unconditional row" if bd.get("prefill_shared_uncond") else ""
    return [
        f"- JAX first generate {fmt_s(jf['total'])} = T5 {fmt_s(jf['t5'])} + decode loop {fmt_s(jf['decode'])} + "
        f"EnCodec {fmt_s(jf['encodec'])} + compile {fmt_s(jf['compile'])} + other {fmt_s(jf['other'])} "
        f"(generate's stats: each part without its compilation, which is counted apart).",
        f"- JAX decode step (from generate's stats): prefill {fmt_s(bd['prefill_s'])} ({bd['prefix_len']} prefix "
        f"positions + BOS, {bd['rows']} rows{shared}); scan step decode / (steps - 1) = {fmt_s(bd['scan_step_s'])}; "
        f"jitted alone: one cached forward step {fmt_s(bd['forward_step_s'])}, sampling head (CFG + top-k + draw) "
        f"{fmt_s(bd['sampling_head_s'])}. Decoder layout: {bd['layout']}.",
        f"- Hardware floor of one step: it must read {fmt_gb(bd['step_read_bytes'])} (weights + the KV cache of the "
        f"filled positions, {fmt_gb(bd['step_kv_needed_bytes'])} on average) at {fl['read_bandwidth_GBps']:.1f} GB/s "
        f"= {fmt_s(fl['bytes_floor_s'])}, and do {bd['step_flops'] / 1e9:.2f} GFLOP at {fl['matmul_GFLOPs']:.0f} "
        f"GFLOP/s (JAX {res['matmul']['n']}^3 matmul) = {fmt_s(fl['flops_floor_s'])}; the floor is the larger.",
        *bandwidth_notes(res),
        *machine_notes(res),
    ]


def bandwidth_notes(res: dict) -> list[str]:
    bd, bw = res["jax_step_breakdown"], res["bandwidth"]
    return [
        f"- Floor: plain GEMVs ({bd['rows']} rows) over the same layer matrices ({fmt_gb(bd['layer_matrix_bytes'])}, "
        f"unstacked) take {fmt_s(bd['gemv_floor_s'])} ({bd['gemv_floor_GBps']:.1f} GB/s); the scan step moves "
        f"weights {fmt_gb(bd['decoder_weight_bytes'])} + KV cache {fmt_gb(bd['kv_cache_bytes'])} (capacity "
        f"{bd['cache_capacity']}) at an effective {bd['scan_step_effective_GBps']:.1f} GB/s. Host: torch copy "
        f"{bw['torch_copy_GBps']:.1f} GB/s (read + write), JAX sum {bw['jax_sum_read_GBps']:.1f} GB/s (read), JAX "
        f"one-row GEMV {bw['jax_gemv_read_GBps']:.1f} GB/s (read), JAX in-place scale "
        f"{bw['jax_scale_inplace_GBps']:.1f} GB/s (read + write); best of the readings at the start and the end.",
        f"- Read bandwidth over {fmt_gb(bw['array_bytes'])}, best / median, spread (max - min) / max, repeated until "
        f"the last {res['args']['bandwidth_window']} readings lie within {res['args']['bandwidth_tolerance']:.0%} "
        f"(or {res['args']['bandwidth_cap_s']:g} s): {bandwidth_line('start', bw['at_start'])}; "
        f"{bandwidth_line('end', bw['at_end'])}.",
    ]


def machine_notes(res: dict) -> list[str]:
    env, load = res["environment"], res["environment"]["load"]
    return [
        f"- Process peak RSS (both models resident): {fmt_gb(res['rss']['process_peak_bytes'])}. Load: HF "
        f"{res['load_s']['hf']:.1f} s, JAX {res['load_s']['jax']:.1f} s (convert + cast).",
        f"- Machine: other processes used {load['other_processes_busy_cores']:.2f} of {env['cores']} cores on average "
        f"(loadavg {load['loadavg_start'][0]:.2f} -> {load['loadavg_end'][0]:.2f}); busy at start: "
        f"{', '.join(env['other_processes_at_start']) or 'nothing'}. Benchmark wall time {res['bench_wall_s']:.0f} s "
        f"(checkpoint {res['checkpoint']['ready_s']:.0f} s apart)"
        + ("; stopped early for --budget-s." if res["stopped_early_for_budget"] else "."),
    ]
