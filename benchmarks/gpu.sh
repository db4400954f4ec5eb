#!/usr/bin/env bash
# The GPU benchmark sequence (benchmarks/README.md, "On a GPU or TPU"). From the repository root of a checkout with
# jax[cuda], a CUDA build of torch, transformers and psutil installed:
#
#   benchmarks/gpu.sh              # every stage below, in order: about 10 min of GPU time (estimated, not yet measured)
#   benchmarks/gpu.sh small bf16   # only the stages named: check | small | melody | bf16 | summary
#
# Everything lands under ${OUT:-benchmarks/results}: each run's <config>-gpu-b<batch>-s<steps>[-bf16].json and .md, a
# log per stage (gpu-<stage>.log) and gpu-summary.md (the targets block of every GPU result). Random-weight
# checkpoints are built once under ${CACHE:-/tmp/musicgen-bench} (small 2 GB, melody 6 GB; no network needed).
# Each stage fits one 10-minute command on its own; expected times (H200-class GPU, 16 host cores), first run:
#   check   ~15 s   the plan, nvidia-smi, and that JAX and torch both see the GPU (exits 2 otherwise)
#   small   ~3.5 min  musicgen-small decoder, float32, batch 1 / 4 / 16 at 256 / 128 / 64 steps (3 processes)
#   melody  ~4 min  musicgen-melody decoder, float32, batch 1, 1500 steps (30 s of audio), + 32 greedy steps vs HF
#   bf16    ~2.5 min  the same in bfloat16 (both sides), reusing the melody checkpoint
# HF's eager 1500-step generate (~1 min, guessed) is most of the melody stages; --budget-s caps the repeats.
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
[ ${#stages[@]} -gt 0 ] || stages=(check small melody bf16 summary)
for s in "${stages[@]}"; do
    case $s in
    check | small | melody | bf16 | summary) run_stage "$s" ;;
    *)
        echo "unknown stage $s (check | small | melody | bf16 | summary)" >&2
        exit 2
        ;;
    esac
done
