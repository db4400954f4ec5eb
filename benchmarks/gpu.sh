#!/usr/bin/env bash
# The GPU benchmark sequence (benchmarks/README.md, "On a GPU or TPU"). From the repository root of a checkout with
# jax[cuda], a CUDA build of torch, transformers and psutil installed:
#
#   benchmarks/gpu.sh              # every stage below, in order: ~18 min of GPU time (measured, 2026-12-04, below)
#   benchmarks/gpu.sh greedy melody  # only the stages named: check | greedy | small | melody | bf16 | summary
#
# Everything lands under ${OUT:-benchmarks/results}: each run's <config>-gpu-b<batch>-s<steps>[-bf16].json and .md, a
# log per stage (gpu-<stage>.log) and gpu-summary.md (the targets block of every GPU result). Random-weight
# checkpoints are built once under ${CACHE:-/tmp/musicgen-bench} (small 2 GB, melody 6 GB; no network needed).
# A bench writes its .json/.md only at its end: a stage cut short leaves its log alone, so give each stage its time.
# Measured on one H200 (16 host cores, Intel Xeon; jax 0.11.2, torch 2.11, transformers 5.17), first run:
#   check    7 s    the plan, nvidia-smi, and that JAX and torch both see the GPU (exits 2 otherwise)
#   greedy  ~3 min  (estimated) benchmarks/greedy_backends.py: HF cpu/cuda and ours cpu/gpu (scanned, unrolled), small
#   small   ~5 min  (estimated) musicgen-small decoder, float32, batch 1 / 4 / 16 at 256 / 128 / 64 steps (3 processes)
#   melody  >4 min  checkpoint 41 s, loads 14 + 12 s, JAX's first generate 61 s (XLA compile 47 s), one repeat 61 s
#                   (HF 34.5 s, JAX 13.1 s for 1500 steps), greedy 11 s; the step breakdown after it (a second
#                   compile) did not finish inside 240 s
#   bf16    >2.5 min  loads 14 + 10 s, first generate 21 s (compile 13 s); the repeat did not finish inside 150 s
# A device lease of 15 minutes fits check + greedy + melody, or check + small; not all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/results}
CACHE=${CACHE:-/tmp/musicgen-bench}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 # local random checkpoints only
PROBE=(--bandwidth-cap-s 5)                    # GPU readings settle in milliseconds; 5 s per probe at most

bench() { python benchmarks/bench.py --device gpu --out "$OUT" --cache-dir "$CACHE" "${PROBE[@]}" "$@"; }

run_stage() {
    local name=$1 start=$SECONDS
    echo "== $name ($(date -u +%H:%M:%S) UTC)" | tee -a "$OUT/gpu-$name.log"
    "stage_$name" 2>&1 | tee -a "$OUT/gpu-$name.log"
    echo "== $name done in $((SECONDS - start)) s" | tee -a "$OUT/gpu-$name.log"
}

stage_check() {
    nvidia-smi || true
    bench --dry-run --config melody --batch 1 --steps 1500 --check-greedy
}

stage_greedy() {
    python benchmarks/greedy_backends.py --config small --steps 16 --cache-dir "$CACHE" --out "$OUT/greedy-backends"
}

stage_small() {
    bench --config small --batch 1,4,16 --steps 256,128,64 --repeats 2 --budget-s 150
}

stage_melody() {
    bench --config melody --batch 1 --steps 1500 --repeats 1 --check-greedy --greedy-steps 32 --budget-s 240
}

stage_bf16() {
    bench --config melody --batch 1 --steps 1500 --repeats 1 --dtype bfloat16 --budget-s 200
}

stage_summary() {
    # The targets block of every GPU result, one heading per run.
    {
        echo "# GPU targets ($(date -u +%Y-%m-%d))"
        for md in "$OUT"/*-gpu-*.md; do
            [ -e "$md" ] || continue
            echo
            echo "## $(basename "$md" .md)"
            echo
            awk '/^Targets:/ {on = 1; next} on && /^- / {exit} on' "$md"
        done
    } >"$OUT/gpu-summary.md"
    cat "$OUT/gpu-summary.md"
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(check greedy small melody bf16 summary)
for s in "${stages[@]}"; do
    case $s in
    check | greedy | small | melody | bf16 | summary) run_stage "$s" ;;
    *)
        echo "unknown stage $s (check | greedy | small | melody | bf16 | summary)" >&2
        exit 2
        ;;
    esac
done
