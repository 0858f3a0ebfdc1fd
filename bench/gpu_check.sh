#!/usr/bin/env bash
# One prepared GPU check (issue 7), under 10 minutes in all; every figure goes to $OUT.
#
#   OUT=/some/dir bash bench/gpu_check.sh
#
# 1. python3 -m pytest tests/engine -q with NTK_DEVICE=cuda             (capped at 240 s)
# 2. bench/harness.py --size gpu --device cuda                          (capped at 240 s)
#    FC-5 N=50,000 d=3072 float32 tiled; CNN-GAP depth 21 on 32x32x3 float32 (ms per NTK entry,
#    target <= 0.1 ms on one H200); predict N=20,000 with 10 values of t vs one.
# 3. bench/harness.py --size gpu-memory --device cuda                   (capped at 100 s)
#    CIFAR-sized CNN-GAP depth 3, 512x512 points, allocator capped at 24 GiB: peak memory.
# Each step runs even when an earlier one fails; the exit status is that of the first failure.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
status=0

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU")' 2>&1
} | tee "$OUT/env.txt"

echo "== 1/3 pytest tests/engine (NTK_DEVICE=cuda)"
NTK_DEVICE=cuda timeout -k 10 240 "$PY" -m pytest tests/engine -q -x -p no:cacheprovider \
  > "$OUT/pytest_engine.txt" 2>&1
rc=$?; echo "pytest rc=$rc" | tee -a "$OUT/pytest_engine.txt"; tail -n 5 "$OUT/pytest_engine.txt"
[ $rc -ne 0 ] && [ $status -eq 0 ] && status=$rc

echo "== 2/3 harness --size gpu"
# The engine's default block budget (NTK_BLOCK_BYTES, 1 GiB) is sized for CPUs; an H200 has room
# for bigger blocks, which amortize kernel launches (CNN-GAP-21 32x32: ~14 points a side at 8 GiB).
NTK_BLOCK_BYTES="${NTK_BLOCK_BYTES:-8589934592}" NTK_DEVICE=cuda timeout -k 10 240 "$PY" bench/harness.py --size gpu --device cuda \
  --case-timeout 150 --out "$OUT/bench_gpu.json" > "$OUT/bench_gpu.txt" 2>&1
rc=$?; echo "harness gpu rc=$rc" | tee -a "$OUT/bench_gpu.txt"; tail -n 20 "$OUT/bench_gpu.txt"
[ $rc -ne 0 ] && [ $status -eq 0 ] && status=$rc

echo "== 3/3 harness --size gpu-memory (24 GiB cap)"
NTK_DEVICE=cuda timeout -k 10 100 "$PY" bench/harness.py --size gpu-memory --device cuda \
  --case-timeout 90 --out "$OUT/bench_gpu_memory.json" > "$OUT/bench_gpu_memory.txt" 2>&1
rc=$?; echo "harness gpu-memory rc=$rc" | tee -a "$OUT/bench_gpu_memory.txt"; tail -n 8 "$OUT/bench_gpu_memory.txt"
[ $rc -ne 0 ] && [ $status -eq 0 ] && status=$rc

nvidia-smi > "$OUT/nvidia-smi-after.txt" 2>&1 || true
echo "gpu_check status=$status (figures in $OUT)"
exit $status
