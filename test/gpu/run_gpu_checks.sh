#!/usr/bin/env bash
# One command for a lent CUDA machine (a few minutes on an H100/H200):
#   1. the CUDA-only tests (CUDA vs CPU on the same scenes, cuda:N, memory flat),
#   2. a short `sap_bench engine` on CUDA (random weights unless SAM2_CHECKPOINT is set),
#      once plain and once with model.compile_image_encoder.
# Usage, from the repository root:  PY=python3 OUT=bench_out test/gpu/run_gpu_checks.sh
# Needs torch with CUDA and the runtime dependencies importable (sam2, hydra-core, omegaconf,
# iopath, opencv, pytest, scipy); nothing is installed here. Logs and JSON land in $OUT.
set -uo pipefail
PY=${PY:-python3}
OUT=${OUT:-bench_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")' \
  || exit 1
status=0
"$PY" -m pytest -q -p no:cacheprovider -rs test/gpu test/engine/test_frame_path.py \
  test/sphere/test_sampler.py test/engine/test_pipeline_frame_path.py \
  test/engine/test_sam2_adapter.py 2>&1 | tee "$OUT/gpu_tests.log" || status=1
BENCH=(engine --device cuda --image-size 1024 --erp-width 4096 --dtype bfloat16 --frames 5
       --repeats 2 --culling-frames 1 --nonnetwork-repeats 3 --rss-frames 300 --oracle-frames 5
       --schedule-frames 6 ${SAM2_CHECKPOINT:+--checkpoint "$SAM2_CHECKPOINT"})
"$PY" -m sap_ros.bench.cli "${BENCH[@]}" --json "$OUT/engine_gpu.json" 2>&1 \
  | tee "$OUT/engine_gpu.log" || status=1
"$PY" -m sap_ros.bench.cli "${BENCH[@]}" --rss-frames 12 --compile-image-encoder \
  --json "$OUT/engine_gpu_compiled.json" 2>&1 | tee "$OUT/engine_gpu_compiled.log" || status=1
exit $status
