#!/usr/bin/env bash
# The test command: installs dependencies, builds (CUDA backend compiled when the toolkit is
# present) and runs every test with ctest; then builds the CPU-only configuration
# (-DMOKD_CUDA=OFF) and runs the tests again. GPU tests skip, saying why, without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
JOBS=${JOBS:-2}
for cfg in default cpu-only; do
  dir=build-ci-$cfg
  extra=()
  [ "$cfg" = cpu-only ] && extra=(-DMOKD_CUDA=OFF -DMOKD_BUILD_BENCH=OFF)
  echo "=== configure and build ($cfg) ==="
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${extra[@]}" >/dev/null
  cmake --build "$dir" -j"$JOBS"
  echo "=== ctest ($cfg) ==="
  # One test at a time: each already uses every core through OpenMP, and two at once thrash.
  ctest --test-dir "$dir" --output-on-failure
done
