#!/usr/bin/env bash
# The main job on the built-in demo: synthetic study -> info -> train (fast preset) -> predict -> evaluate -> export.
set -euo pipefail
OUT=${1:-out/demo}
BIN=${BIN:-.venv/bin}
# glibc's allocator makes CPU training memory-bound; larger thresholds roughly halve the time (benchmarks/README)
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1000000000}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1000000000}
export MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-268435456}
rm -rf "$OUT"
mkdir -p "$OUT"
echo "== 1. synthetic demo study -> $OUT/study"
"$BIN/covidseg" demo --out "$OUT/study" > /dev/null
echo "== 2. what it holds"
"$BIN/covidseg" info "$OUT/study/volume/ct.nii.gz" | head -12
echo "== 3. train: slice labels -> classifier -> fused CAMs -> pseudo masks -> lightweight U-Net"
"$BIN/covidseg" train --data "$OUT/study" --out "$OUT/run" --fast
echo "== 4. predict the image slices and the NIfTI volume"
"$BIN/covidseg" predict --run "$OUT/run" --input "$OUT/study" --out "$OUT/pred"
"$BIN/covidseg" predict --run "$OUT/run" --input "$OUT/study/volume/ct.nii.gz" --out "$OUT/pred_volume"
echo "== 5. evaluate against the demo's ground truth"
"$BIN/covidseg" evaluate --pred "$OUT/pred" --gt "$OUT/study/masks" | tee "$OUT/evaluation.json"
echo "Done. Masks: $OUT/pred (PNG) and $OUT/pred_volume (NIfTI in the scan's geometry)."
