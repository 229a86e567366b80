#!/usr/bin/env bash
# GPU check for the CUDA backend (run on an H100/H200 machine, from anywhere in the repo; < 8 min):
# configure + build with CUDA (sm_90), run the CUDA tests, compute-sanitizer memcheck on a subset,
# run the GPU microbenchmarks, and print a short table at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
LOG=${LOG:-$BUILD/gpu_check}
export PATH=/usr/local/cuda/bin:$PATH
mkdir -p "$BUILD"

echo "== configure"
cmake -S . -B "$BUILD" -G Ninja -DMOKD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DMOKD_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=Release > "$BUILD/configure.log"
echo "== build ($(nproc) jobs)"
ninja -C "$BUILD" -j "$(nproc)" mokd_tests mokd_bench > "$BUILD/build.log" || { tail -50 "$BUILD/build.log"; exit 1; }
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== CUDA tests"
tests_rc=0
timeout 240 "$BUILD/mokd_tests" --gtest_filter='Cuda*' 2>&1 | tee "$LOG/tests.log" || tests_rc=$?

echo "== compute-sanitizer memcheck (subset)"
san_rc=skipped
if command -v compute-sanitizer > /dev/null; then
  san_rc=0
  # Poisoning off here: memcheck itself reports uninitialised/out-of-bounds accesses.
  MOKD_CUDA_POISON=0 timeout 180 compute-sanitizer --tool memcheck --error-exitcode 99 \
    "$BUILD/mokd_tests" \
    --gtest_filter='CudaParity.Elementwise:CudaParity.Reductions:CudaParity.SoftmaxLayerNorm:CudaParity.Attention:CudaParity.ConvPool:CudaParity.BatchNorm' \
    > "$LOG/memcheck.log" 2>&1 || san_rc=$?
  tail -5 "$LOG/memcheck.log"
else
  echo "compute-sanitizer not found: memcheck skipped"
fi

echo "== GPU microbenchmarks"
bench_rc=0
timeout 150 "$BUILD/mokd_bench" --benchmark_filter='BM_Gpu' --benchmark_format=console \
  --benchmark_out="$LOG/bench.json" --benchmark_out_format=json 2>&1 | tee "$LOG/bench.log" || bench_rc=$?

echo
echo "================ gpu_check summary ================"
printf "%-28s %s\n" "CUDA tests (rc)" "$tests_rc ($(grep -c '^\[       OK \]' "$LOG/tests.log" || true) ok, $(grep -c '^\[  FAILED  \]' "$LOG/tests.log" || true) failed lines)"
printf "%-28s %s\n" "memcheck (rc)" "$san_rc"
printf "%-28s %s\n" "benchmarks (rc)" "$bench_rc"
python3 - "$LOG/bench.json" <<'PY' || true
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("no benchmark results:", e); sys.exit(0)
print(f"{'benchmark':44s} {'label':26s} {'ms':>9s}  metric")
for b in d.get("benchmarks", []):
    if b.get("error_occurred"):
        print(f"{b['name']:44s} skipped: {b.get('error_message', '')}"); continue
    ms = b.get("real_time", 0) * {"ns": 1e-6, "us": 1e-3, "ms": 1, "s": 1e3}.get(b.get("time_unit", "ns"), 1e-6)
    metric = ", ".join(f"{k} {b[k]:.1f}" for k in ("TFLOPs", "GB/s") if k in b)
    print(f"{b['name']:44s} {b.get('label', ''):26s} {ms:9.3f}  {metric}")
PY
[[ "$tests_rc" == 0 && ( "$san_rc" == 0 || "$san_rc" == skipped ) && "$bench_rc" == 0 ]]
