"""Figures from the raw timings, the result JSON and the markdown table (with, on an accelerator, the targets)."""

from __future__ import annotations

import json
import os

from benchmarks.bench.device import Target, numerics_line
from benchmarks.bench.probes import bandwidth_line, median
from benchmarks.bench.specs import GUIDANCE, TOP_K

# ---------------------------------------------------------------------------------------------------------------
# Figures.


def stat(hf_values, jax_values) -> dict:
    """Median and minimum of each side; ``hf_over_jax`` is the ratio of medians (HF: None where it did not run)."""
    if not hf_values:
        return {"hf": None, "jax": median(jax_values), "hf_min": None, "jax_min": min(jax_values), "hf_over_jax": None}
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
        # HF: its decoder's first forward inside generate (HFSide spies it); JAX: generate's own prefill_seconds
        "prefill_s": stat(field("hf_gen", "prefill"), field("jax_gen", "prefill")),
        "decode_steps_per_s": stat(hf_rate, jax_rate),
        "t5_encode_s": stat(rows["hf_t5"], rows["jax_t5"]),
        "encodec_decode_generated_s": stat(rows["hf_codec"], rows["jax_codec"]),
        "encodec_decode_long_s": stat(hf_long, jax_long),
    }
    # steps/s: bigger is better, so the bracket holds the best; "hf_over_jax" stays the plain ratio of medians.
    out["decode_steps_per_s"]["hf_min"] = max(hf_rate) if hf_rate else None
    out["decode_steps_per_s"]["jax_min"] = max(jax_rate)
    out["compile_s"] = jax_first["total"] - median(field("jax_gen", "total"))
    return out


def rss_figures(mem, baseline: int, after_hf: int | None, after_jax: int, param_bytes: int, kv_bytes: int) -> dict:
    """RSS growth over each framework's load and first call, and the peak increase during each timed phase (HF:
    None where it did not run, ``after_hf`` None)."""

    def peaks(name):
        out = {}
        for side in ("hf", "jax"):
            phase = mem.phases.get(f"{side}_{name}")
            out[side] = None if phase is None else phase["peak_increase_bytes"]
        return out

    hf_resident = None if after_hf is None else after_hf - baseline
    rss = {
        "resident_after_load_and_first_call_bytes": {
            "hf": hf_resident,
            "jax": after_jax - (baseline if after_hf is None else after_hf),
        },
        "peak_increase_generate_bytes": peaks("generate"),
        "peak_increase_encodec_long_bytes": peaks("encodec_long"),
    }
    for v in rss.values():
        v["hf_over_jax"] = v["hf"] / v["jax"] if v["jax"] and v["hf"] is not None else float("nan")
    # JAX's resident memory at its peak during generate, over what it must hold.
    jax_peak = rss["resident_after_load_and_first_call_bytes"]["jax"] + rss["peak_increase_generate_bytes"]["jax"]
    rss["jax_peak_over_weights_and_cache"] = jax_peak / (param_bytes + kv_bytes)
    rss["param_bytes"] = param_bytes
    return rss


def device_memory_figures(jax_after_probe, after_load: dict, end: dict, param_bytes: int, kv_bytes: int) -> dict:
    """Accelerator memory from each allocator (None where it keeps no statistics or HF did not run): in use after
    load + first call, and the peak from the load through the repeats. torch's peak is reset after the start probe;
    JAX's cannot be, so where it does not exceed the probe's (``jax_peak_is_probe``) it says nothing of the model."""

    def field(snapshot, key):
        return None if snapshot is None else snapshot[key]

    probe_peak = field(jax_after_probe, "peak_bytes") or 0
    jax_peak = field(end["jax"], "peak_bytes")
    out = {
        "in_use_after_load_and_first_call_bytes": {
            "hf": field(after_load["hf"], "in_use_bytes"),
            "jax": field(after_load["jax"], "in_use_bytes"),
        },
        "peak_bytes": {"hf": field(end["hf"], "peak_bytes"), "jax": jax_peak},
        "jax_peak_after_probe_bytes": probe_peak,
        "jax_peak_is_probe": jax_peak is not None and jax_peak <= probe_peak,
        "jax_limit_bytes": field(end["jax"], "limit_bytes"),
    }
    for key in ("in_use_after_load_and_first_call_bytes", "peak_bytes"):
        v = out[key]
        v["hf_over_jax"] = v["hf"] / v["jax"] if v["hf"] is not None and v["jax"] else None
    ok = jax_peak is not None and not out["jax_peak_is_probe"]
    out["jax_peak_over_weights_and_cache"] = jax_peak / (param_bytes + kv_bytes) if ok else None
    return out


def codes_agreement(hf_codes, jax_codes) -> dict:
    """How far two code arrays ``(batch, K, frames)`` agree: identical or not, the fraction of equal codes, and the
    first frame where any row or codebook differs (None when none does)."""
    import numpy as np

    hf_codes, jax_codes = np.asarray(hf_codes), np.asarray(jax_codes)
    same_shape = hf_codes.shape == jax_codes.shape
    equal = hf_codes == jax_codes if same_shape else np.zeros((0,), bool)
    differing = np.flatnonzero(~equal.all(axis=(0, 1))) if same_shape else np.array([0])
    return {
        "identical": bool(same_shape and equal.all()),
        "agreement": float(equal.mean()) if same_shape else 0.0,
        "codes": int(hf_codes.size),
        "first_mismatch_frame": int(differing[0]) if differing.size else None,
        "hf_shape": list(hf_codes.shape),
        "jax_shape": list(jax_codes.shape),
    }


# What the project checks when an accelerator is lent (a GPU; on TPU the HF-relative ones are n/a).
FLOOR_TARGET = 2.0  # the decode step within this factor of the HBM weight-read floor
SPEEDUP_TARGET = 10.0  # end to end against HF eager
SPEEDUP_SHAPE = dict(config="melody", batch=1, steps=1500)  # 30 s of melody-sized audio (1497 frames at 50 Hz)


def targets(res: dict) -> list[dict]:
    """The accelerator targets, each with what was measured and PASS / FAIL (or n/a, with the reason)."""
    tgt, sh, g, fl = res["target"], res["shapes"], res.get("greedy"), res["floor"]
    out = []
    if g is None:
        measured, verdict = "not run (add --check-greedy)", "n/a"
    elif not g["ran"]:
        measured, verdict = f"not run ({g['why']})", "n/a"
    else:
        measured = (
            f"{g['agreement']:.2%} of {g['codes']} codes agree ({g['steps']} greedy steps, {g['dtype']}"
            + ("" if g["first_mismatch_frame"] is None else f"; first differing frame {g['first_mismatch_frame']}")
            + ")"
        )
        verdict = ("PASS" if g["identical"] else "FAIL") if g["dtype"] == "float32" else "n/a (float32 only)"
    out.append({"target": "greedy codes identical to HF (float32)", "measured": measured, "result": verdict})

    step, bytes_floor = res["jax_step_breakdown"]["scan_step_s"], fl["bytes_floor_s"]
    ratio = step / bytes_floor
    out.append(
        {
            "target": f"decode step within {FLOOR_TARGET:g}x of the HBM weight-read floor",
            "measured": f"{fmt_fine(step)} = {ratio:.2f}x the {fmt_fine(bytes_floor)} floor "
            f"({fl['read_bandwidth_GBps']:.0f} GB/s)",
            "result": "PASS" if ratio <= FLOOR_TARGET else "FAIL",
            "value": ratio,
        }
    )

    speedup = res["figures"]["generate_s"]["hf_over_jax"]
    shape = dict(config=res["config"], batch=sh["batch"], steps=sh["max_new_tokens"])
    want = SPEEDUP_SHAPE
    name = (
        f"at least {SPEEDUP_TARGET:g}x HF eager end to end, {want['config']} batch {want['batch']}, 30 s "
        f"({want['steps']} steps)"
    )
    if speedup is None:
        out.append({"target": name, "measured": f"HF not run ({tgt['hf_absent']})", "result": "n/a"})
    else:
        here = f"{speedup:.2f}x ({shape['config']}, batch {shape['batch']}, {shape['steps']} steps)"
        same = (shape["config"], shape["batch"]) == (want["config"], want["batch"])
        applies = same and shape["steps"] >= want["steps"]
        if applies:
            verdict = "PASS" if speedup >= SPEEDUP_TARGET else "FAIL"
        else:
            verdict = f"n/a (needs --config {want['config']} --batch {want['batch']} --steps {want['steps']})"
        out.append({"target": name, "measured": here, "result": verdict, "value": speedup})
    return out


# ---------------------------------------------------------------------------------------------------------------
# Output.


def write(res: dict, out_dir: str) -> str:
    """Writes ``<config>-<device>-b<batch>-s<steps>.json`` and ``.md`` under ``out_dir``; returns the stem path."""
    os.makedirs(out_dir, exist_ok=True)
    stem = result_stem(res)
    path = os.path.join(out_dir, stem)
    with open(path + ".json", "w") as fh:
        json.dump(res, fh, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    with open(path + ".md", "w") as fh:
        fh.write(markdown(res))
    return path


def result_stem(res: dict) -> str:
    """``<config>-<device>-b<batch>-s<steps>``, then ``-bf16`` for bfloat16 and ``-jax`` for a JAX-only run where HF
    could have run (float32 with both sides keeps the name of earlier results)."""
    sh, tgt = res["shapes"], res["target"]
    stem = f"{res['config']}-{res['environment']['device']}-b{sh['batch']}-s{sh['max_new_tokens']}"
    if tgt["dtype"] == "bfloat16":
        stem += "-bf16"
    if tgt["torch_device"] is None and tgt["device"] != "tpu":
        stem += "-jax"
    return stem


def fmt_fine(x: float) -> str:
    """Like ``fmt_s``, with microseconds below 10 ms (an accelerator's decode step)."""
    return f"{x * 1e3:.3f} ms" if x < 0.01 else fmt_s(x)


def step_fmt(res: dict):
    """The formatter of per-step times: ``fmt_fine`` on an accelerator, ``fmt_s`` (as before) on CPU."""
    return fmt_fine if res["target"]["accelerator"] else fmt_s


def fmt_s(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def fmt_gb(x: float) -> str:
    return f"{x / 2**30:.2f} GiB"


def markdown(res: dict) -> str:
    return "\n".join([*header(res), *table(res), "", *targets_block(res), *notes(res)]) + "\n"


def targets_block(res: dict) -> list[str]:
    """The accelerator targets under the table (nothing on CPU)."""
    if not res.get("targets"):
        return []
    lines = ["Targets:", "", "| target | measured | result |", "| --- | --- | --- |"]
    lines += [f"| {t['target']} | {t['measured']} | {t['result']} |" for t in res["targets"]]
    return [*lines, ""]


def header(res: dict) -> list[str]:
    env, sh, git, ver = res["environment"], res["shapes"], res["git"], res["environment"]["versions"]
    tgt = res["target"]
    changes = f"; uncommitted library changes: {', '.join(git['library_changes'])}" if git["library_changes"] else ""
    where = f"{env['cores']} cores, {env['cpu']}"
    if tgt["accelerator"]:
        where = f"{env['jax_device_kind']}; host: {where}"
    numerics = numerics_line(Target(tgt["device"], tgt["dtype"], tgt["torch_device"]), res.get("numerics", {}))
    if tgt["torch_device"] is None:
        hf = f"HF not run ({tgt['hf_absent']})"
    else:
        on = f" on {tgt['torch_device']}" if tgt["accelerator"] else ""
        hf = (
            f"transformers {ver['transformers']}{on} (attn {env['hf_attn_implementation']}, {env['torch_threads']} "
            f"torch threads), torch {ver['torch']}"
        )
    return [
        f"### {res['config']} on {env['device']} ({where}), batch {sh['batch']}, "
        f"{sh['max_new_tokens']} steps ({sh['frames']} frames, {sh['audio_seconds']:.2f} s of audio)",
        "",
        f"Median [min] of {res['repeats_done']} interleaved repeats (HF then JAX; long EnCodec: "
        f"{res['args']['encodec_repeats']}), warm-up excluded; {numerics}; guidance {GUIDANCE:g}, top-k {TOP_K}, "
        f"sampling. {hf}, jax {ver['jax']}; musicgen-jax at {git['commit']}{changes}.",
        "",
        "| figure | HF PyTorch | musicgen-jax | HF / JAX |",
        "| --- | --- | --- | --- |",
    ]


def hf_missing(res: dict) -> str:
    return f"n/a ({res['target']['hf_absent']})"


def ratio_cell(x) -> str:
    return "" if x is None else f"{x:.2f}"


def table(res: dict) -> list[str]:
    f, sh, a, first = res["figures"], res["shapes"], res["args"], res["first_calls"]
    na = hf_missing(res)
    timed = [
        ("generate, end to end", "generate_s", fmt_s),
        ("decode loop (HF: generate - T5 - EnCodec)", "decode_loop_s", fmt_s),
        ("decode steps/s [best]; ratio < 1: JAX faster", "decode_steps_per_s", lambda x: f"{x:.2f}"),
        ("prefill (HF: the decoder's first forward in generate)", "prefill_s", fmt_s),
        ("T5 encode", "t5_encode_s", fmt_s),
        (f"EnCodec decode, {sh['frames']} frames", "encodec_decode_generated_s", fmt_s),
        (f"EnCodec decode, {a['encodec_seconds']:g} s of codes ({sh['encodec_long_frames']} frames)",
         "encodec_decode_long_s", fmt_s),
    ]  # fmt: skip
    lines = []
    for label, key, fmt in timed:
        v = f[key]
        hf = na if v["hf"] is None else f"{fmt(v['hf'])} [{fmt(v['hf_min'])}]"
        lines.append(f"| {label} | {hf} | {fmt(v['jax'])} [{fmt(v['jax_min'])}] | {ratio_cell(v['hf_over_jax'])} |")
    jf, hf1, fl, sf = first["jax_generate"], first["hf_warmup_generate"], res["floor"], step_fmt(res)
    if f["decode_loop_s"]["hf"] is None:
        hf_first, hf_step_cell = na, na
    else:
        hf_step = f["decode_loop_s"]["hf"] / sh["max_new_tokens"]
        hf_first, hf_step_cell = fmt_s(hf1["total"]), f"{sf(hf_step)} ({fl['floor_s'] / hf_step:.0%})"
    lines += [
        f"| first call: generate (HF: {first['hf_warmup_generate_steps']}-step warm-up; JAX: compile + run) | "
        f"{hf_first} | {fmt_s(jf['total'])} | |",
        f"| first call: long EnCodec (JAX: compile + run) | | {fmt_s(first['jax_encodec_long_s'])} | |",
        f"| compile (JAX first generate - steady state) | | {fmt_s(f['compile_s'])} | |",
        f"| decode step [floor: {fl['bound']}-bound, {sf(fl['floor_s'])}] (fraction of floor) | {hf_step_cell} | "
        f"{sf(res['jax_step_breakdown']['scan_step_s'])} ({fl['scan_step_fraction_of_floor']:.0%}) | |",
    ]
    for label, key in (
        ("RSS: resident after load + first call", "resident_after_load_and_first_call_bytes"),
        ("RSS: peak increase during generate", "peak_increase_generate_bytes"),
        ("RSS: peak increase during long EnCodec", "peak_increase_encodec_long_bytes"),
    ):
        v = res["rss"][key]
        hf = na if v["hf"] is None else fmt_gb(v["hf"])
        ratio = "" if v["hf"] is None else f"{v['hf_over_jax']:.2f}"
        lines.append(f"| {label} | {hf} | {fmt_gb(v['jax'])} | {ratio} |")
    weights = fmt_gb(res["rss"]["param_bytes"])
    dm = res.get("device_memory")
    if dm is None:
        lines.append(
            f"| JAX peak (resident + generate peak) / (weights {weights} + KV cache) | | "
            f"{res['rss']['jax_peak_over_weights_and_cache']:.2f}x | |"
        )
        return lines
    return lines + device_memory_rows(res, dm, weights)


def device_memory_rows(res: dict, dm: dict, weights: str) -> list[str]:
    """Accelerator memory as each allocator reports it (torch: CUDA caching allocator; JAX: PJRT's)."""
    na = hf_missing(res)

    def cell(x, side):
        if x is None:
            return na if side == "hf" and res["target"]["torch_device"] is None else "n/a"
        return fmt_gb(x)

    lines = []
    v = dm["in_use_after_load_and_first_call_bytes"]
    lines.append(
        f"| device memory: in use after load + first call | {cell(v['hf'], 'hf')} | {cell(v['jax'], 'jax')} | "
        f"{ratio_cell(v['hf_over_jax'])} |"
    )
    v = dm["peak_bytes"]
    jax_peak = cell(v["jax"], "jax")
    if dm["jax_peak_is_probe"]:
        jax_peak = f"<= {fmt_gb(dm['jax_peak_after_probe_bytes'])} (the start probe's peak)"
    lines.append(
        f"| device memory: peak, load through the repeats | {cell(v['hf'], 'hf')} | {jax_peak} | "
        f"{'' if dm['jax_peak_is_probe'] else ratio_cell(v['hf_over_jax'])} |"
    )
    ratio = dm["jax_peak_over_weights_and_cache"]
    lines.append(
        f"| JAX device peak / (weights {weights} + KV cache) | | "
        f"{'n/a (peak not above the probe)' if ratio is None else f'{ratio:.2f}x'} | |"
    )
    return lines


def notes(res: dict) -> list[str]:
    jf, bd, fl, sf = res["first_calls"]["jax_generate"], res["jax_step_breakdown"], res["floor"], step_fmt(res)
    shared = "; one shared unconditional row" if bd.get("prefill_shared_uncond") else ""
    if bd.get("prefill_common_prefix"):
        shared += f"; the first {bd['prefill_common_prefix']} prefix positions (the same in every row) as one row"
    text_kv = " and of the text (cross-attention)" if bd.get("cross_attention_text_len") else ""
    m = res["matmul"]
    if res["target"]["accelerator"]:
        floor = (
            f"- HBM weight-read floor of one step: it must read {fmt_gb(bd['step_read_bytes'])} (decoder weights + the "
            f"KV cache of the filled positions{text_kv}, {fmt_gb(bd['step_kv_needed_bytes'])} on average) at "
            f"{fl['read_bandwidth_GBps']:.0f} GB/s (the device's read bandwidth, below) = "
            f"{fmt_fine(fl['bytes_floor_s'])}; "
            f"the scan step is {bd['scan_step_s'] / fl['bytes_floor_s']:.2f}x that. Compute: "
            f"{bd['step_flops'] / 1e9:.2f} GFLOP at {fl['matmul_GFLOPs']:.0f} GFLOP/s (JAX {m['n']}^3 {m['dtype']} "
            f"matmul) = {fmt_fine(fl['flops_floor_s'])}; the table's floor is the larger."
        )
    else:
        floor = (
            f"- Hardware floor of one step: it must read {fmt_gb(bd['step_read_bytes'])} (weights + the KV cache of "
            f"the filled positions{text_kv}, {fmt_gb(bd['step_kv_needed_bytes'])} on average) at "
            f"{fl['read_bandwidth_GBps']:.1f} GB/s = {fmt_s(fl['bytes_floor_s'])}, and do "
            f"{bd['step_flops'] / 1e9:.2f} GFLOP at {fl['matmul_GFLOPs']:.0f} GFLOP/s (JAX {m['n']}^3 matmul) = "
            f"{fmt_s(fl['flops_floor_s'])}; the floor is the larger."
        )
    return [
        f"- JAX first generate {fmt_s(jf['total'])} = T5 {fmt_s(jf['t5'])} + decode loop {fmt_s(jf['decode'])} + "
        f"EnCodec {fmt_s(jf['encodec'])} + compile {fmt_s(jf['compile'])} + other {fmt_s(jf['other'])} "
        f"(generate's stats: each part without its compilation, which is counted apart).",
        f"- JAX decode step (from generate's stats): prefill {fmt_s(bd['prefill_s'])} ({prefill_what(bd)}, "
        f"{bd['rows']} rows{shared}); scan step decode / (steps - 1) = {sf(bd['scan_step_s'])}; "
        f"jitted alone: one cached forward step {sf(bd['forward_step_s'])}, sampling head (CFG + top-k + draw) "
        f"{sf(bd['sampling_head_s'])}. Decoder layout: {bd['layout']}"
        f"{f', over {d} CPU devices (tensor parallel)' if (d := bd.get('devices', 1)) > 1 else ''}.",
        *hf_forward_notes(res),
        floor,
        *greedy_notes(res),
        *bandwidth_notes(res),
        *machine_notes(res),
    ]


def hf_forward_notes(res: dict) -> list[str]:
    """HF's decoder forwards inside its generate (the spy's times): the prefill and the median one-position step."""
    hf_rows = res.get("raw", {}).get("hf_gen") or []
    steps = [r["decoder_step"] for r in hf_rows if r.get("decoder_step") is not None]
    if not steps:
        return []
    sf, prefill = step_fmt(res), median([r["prefill"] for r in hf_rows])
    return [
        f"- HF inside its generate: the decoder's first forward (the prefill) {fmt_s(prefill)}, "
        f"its later forwards {sf(median(steps))} each (median; sampling apart)."
    ]


def placed(bd: dict) -> str:
    """How the decoder's weights are placed, when not on one device."""
    devices = bd.get("devices", 1)
    return f", split over {devices} CPU devices as the model's" if devices > 1 else ""


def one_device(bd: dict) -> str:
    """The same GEMVs on one device, when the model spans several."""
    if bd.get("devices", 1) <= 1:
        return ""
    ratio = bd["gemv_one_device_s"] / bd["scan_step_s"]
    return f" (on one device {fmt_s(bd['gemv_one_device_s'])}: the step is at {ratio:.0%} of that)"


def prefill_what(bd: dict) -> str:
    """What the prefill runs: melody's prefix positions + BOS; plain MusicGen's BOS with the text's cross-attention
    keys and values (computed once there, then carried in the KV cache)."""
    text = bd.get("cross_attention_text_len")
    if text is None:
        return f"{bd['prefix_len']} prefix positions + BOS"
    return f"BOS + the cross-attention keys/values of {text} text positions, kept in the KV cache"


def moved_weights(bd: dict) -> str:
    """The decoder weights a scan step reads (plain MusicGen: without the prefill-only cross-attention K/V
    projections)."""
    unread = bd.get("prefill_only_weight_bytes")
    if unread is None:
        return fmt_gb(bd["decoder_weight_bytes"])
    return (
        f"{fmt_gb(bd['decoder_weight_bytes'] - unread)} (not the cross-attention K/V projections, "
        f"{fmt_gb(unread)}, run at the prefill only)"
    )


def greedy_notes(res: dict) -> list[str]:
    g = res.get("greedy")
    if not g:
        return []
    if not g["ran"]:
        return [f"- Greedy check: not run ({g['why']})."]
    where = "" if g["first_mismatch_frame"] is None else f"; first differing frame {g['first_mismatch_frame']}"
    return [
        f"- Greedy check (--check-greedy): {g['steps']} greedy steps, guidance {GUIDANCE:g}, the same text, "
        f"{g['dtype']}: codes {'identical' if g['identical'] else 'differ'}, {g['agreement']:.2%} of {g['codes']} "
        f"agree (HF {tuple(g['hf_shape'])}, JAX {tuple(g['jax_shape'])}{where}); {g['seconds']:.1f} s with JAX's "
        "compilation of the greedy loop."
    ]


def bandwidth_notes(res: dict) -> list[str]:
    bd, bw, tgt = res["jax_step_breakdown"], res["bandwidth"], res["target"]
    where = f"Device ({res['environment'].get('jax_device_kind', '')})" if tgt["accelerator"] else "Host"
    torch_copy = ""
    if bw["torch_copy_GBps"] is not None:
        on = f" on {tgt['torch_device']}" if tgt["accelerator"] else ""
        torch_copy = f"torch copy{on} {bw['torch_copy_GBps']:.1f} GB/s (read + write), "
    reps = bw.get("reps_per_reading", 1)
    per = f"; each reading times {reps} back-to-back calls" if reps > 1 else ""
    return [
        f"- Floor: plain GEMVs ({bd['rows']} rows) over the same layer matrices ({fmt_gb(bd['layer_matrix_bytes'])}, "
        f"unstacked{placed(bd)}) take {fmt_s(bd['gemv_floor_s'])} ({bd['gemv_floor_GBps']:.1f} GB/s){one_device(bd)}; "
        f"the step is at {bd['gemv_floor_s'] / bd['scan_step_s']:.0%} of them; the scan step moves "
        f"weights {moved_weights(bd)} + KV cache {fmt_gb(bd['kv_cache_bytes'])} (capacity "
        f"{bd['cache_capacity']}) at an effective {bd['scan_step_effective_GBps']:.1f} GB/s. {where}: {torch_copy}"
        f"JAX sum {bw['jax_sum_read_GBps']:.1f} GB/s (read), JAX "
        f"one-row GEMV {bw['jax_gemv_read_GBps']:.1f} GB/s (read), JAX in-place scale "
        f"{bw['jax_scale_inplace_GBps']:.1f} GB/s (read + write); best of the readings at the start and the end.",
        f"- Read bandwidth over {fmt_gb(bw['array_bytes'])}, best / median, spread (max - min) / max, repeated until "
        f"the last {res['args']['bandwidth_window']} readings lie within {res['args']['bandwidth_tolerance']:.0%} "
        f"(or {res['args']['bandwidth_cap_s']:g} s){per}: {bandwidth_line('start', bw['at_start'])}; "
        f"{bandwidth_line('end', bw['at_end'])}.",
    ]


def jax_load_kind(res: dict) -> str:
    if res["args"].get("jax_weights") == "converted":
        return "orbax restore of the converted checkpoint + cast"
    return "convert + cast"


def machine_notes(res: dict) -> list[str]:
    env, load = res["environment"], res["environment"]["load"]
    hf_load = "n/a" if res["load_s"]["hf"] is None else f"{res['load_s']['hf']:.1f} s"
    both = "both models resident" if res["target"]["torch_device"] else "JAX alone"
    return [
        f"- Process peak RSS ({both}): {fmt_gb(res['rss']['process_peak_bytes'])}. Load: HF "
        f"{hf_load}, JAX {res['load_s']['jax']:.1f} s ({jax_load_kind(res)}).",
        f"- Machine: other processes used {load['other_processes_busy_cores']:.2f} of {env['cores']} cores on average "
        f"(loadavg {load['loadavg_start'][0]:.2f} -> {load['loadavg_end'][0]:.2f}); busy at start: "
        f"{', '.join(env['other_processes_at_start']) or 'nothing'}. Benchmark wall time {res['bench_wall_s']:.0f} s "
        f"(checkpoint {res['checkpoint']['ready_s']:.0f} s apart)"
        + ("; stopped early for --budget-s." if res["stopped_early_for_budget"] else "."),
    ]
