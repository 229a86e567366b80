#!/usr/bin/env bash
# GPU check for the CUDA backend, run on an H100/H200 machine from anywhere in the repo: preflight
# (tools and libraries found), configure + build with CUDA (sm_90), the CUDA tests, the GPU
# microbenchmarks, compute-sanitizer memcheck (and racecheck on attention), then a short table.
# Every step runs even when an earlier one failed (as far as it can), each under a time cap taken
# from one overall budget (BUDGET seconds, default 480), so one run yields all the information.
# Full logs land in $LOG (and are copied to $OUT when the device tool sets it).
#
# Never installs anything (no network there). Libraries the GPU image may lack (Eigen, nlohmann
# json, GoogleTest, Google Benchmark, turbojpeg, libpng, zlib, OpenSSL headers) can travel as a
# tarball: run `tools/gpu_check.sh --pack-deps` on a Debian/Ubuntu machine that has them installed
# (it writes .gpu_deps/deps.tar.xz, git-ignored via .git/info/exclude) and carry `.gpu_deps` with
# the run. It is unpacked and used only when the preflight finds a header missing.
#
# Env: BUILD (build dir, default build-gpu), LOG, BUDGET, JOBS (default nproc), MOKD_TF32.
# From a session with the device tool: run(command="tools/gpu_check.sh", carry=[".gpu_deps"],
# timeout_s=600); the summary is the end of the output, the logs come back as files.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS_TAR=.gpu_deps/deps.tar.xz

# ---- --pack-deps: collect the -dev packages' files from this machine (no download) ----------
if [[ "${1:-}" == "--pack-deps" ]]; then
  pkgs="libeigen3-dev nlohmann-json3-dev libgtest-dev libbenchmark-dev libbenchmark1debian
        libturbojpeg0-dev libturbojpeg0 libpng-dev libpng16-16 zlib1g-dev zlib1g libssl-dev libssl3"
  stage=$(mktemp -d)
  for p in $pkgs; do
    dpkg -L "$p" > /dev/null 2>&1 || { echo "package $p is not installed here"; exit 1; }
    dpkg -L "$p" | while read -r f; do
      case "$f" in
        /usr/share/doc/*|/usr/share/man/*|/usr/share/lintian/*|*/libssl.a|*/libcrypto.a|*/engines-3/*|*/ossl-modules/*) continue ;;
      esac
      if [[ -f "$f" || -L "$f" ]]; then
        mkdir -p "$stage$(dirname "$f")"
        cp -a "$f" "$stage$f"
      fi
    done
  done
  mkdir -p .gpu_deps
  tar -C "$stage" -cJf "$DEPS_TAR" usr
  rm -rf "$stage"
  grep -qxF '/.gpu_deps/' .git/info/exclude 2> /dev/null || echo '/.gpu_deps/' >> .git/info/exclude
  echo "wrote $DEPS_TAR ($(du -h "$DEPS_TAR" | cut -f1)); carry .gpu_deps with the device run"
  exit 0
fi

BUILD=${BUILD:-build-gpu}
LOG=${LOG:-$BUILD/gpu_check}
BUDGET=${BUDGET:-480}
JOBS=${JOBS:-$(nproc)}
export PATH=/usr/local/cuda/bin:$PATH
mkdir -p "$BUILD" "$LOG"

STEPS=() RCS=() NOTES=()
record() { STEPS+=("$1"); RCS+=("$2"); NOTES+=("$3"); }
# Seconds a step may take: its own cap, or what is left of the budget (minus a reserve for the
# summary), whichever is smaller.
cap() {
  local want=$1 left=$((BUDGET - SECONDS - 20))
  ((left < want)) && want=$left
  echo "$want"
}

# Distinct test names gtest marked FAILED or SKIPPED (each is printed twice: inline and in the list).
names() { grep -E "^\[  $1 ? *\] [A-Za-z]" "$2" | sed -E 's/^\[[^]]*\] //; s/ \(.*//' | sort -u; }

summary() {
  echo
  echo "================ gpu_check summary ($(date -u +%H:%M:%S), ${SECONDS}s) ================"
  local i
  for i in "${!STEPS[@]}"; do printf "%-22s %-9s %s\n" "${STEPS[$i]}" "${RCS[$i]}" "${NOTES[$i]}"; done
  if [[ -f "$LOG/tests.log" ]]; then
    local failed
    failed=$(names FAILED "$LOG/tests.log")
    if [[ -n "$failed" ]]; then
      echo "-- failed tests:"
      echo "$failed"
      echo "-- first failure messages:"
      grep -A4 ': Failure$' "$LOG/tests.log" | cut -c1-240 | head -60
    fi
  fi
  if [[ -f "$LOG/memcheck.log" ]]; then
    echo "-- memcheck (first reports):"
    grep -E '^========= (Invalid|Program hit|Uninitialized|    at |ERROR SUMMARY|Error)' "$LOG/memcheck.log" \
      | cut -c1-200 | head -24
  fi
  if [[ -f "$LOG/racecheck.log" ]]; then
    echo "-- racecheck:"
    grep -E '^========= (Error|Warning|RACECHECK SUMMARY|ERROR SUMMARY)' "$LOG/racecheck.log" | head -8
  fi
  if [[ -f "$LOG/bench.json" ]]; then
    python3 - "$LOG/bench.json" << 'PY' || true
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
  fi
  if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
    # At most 8 files come back: the logs that matter.
    for f in preflight.log tests.log memcheck.log racecheck.log bench.json; do
      [[ -f "$LOG/$f" ]] && cp "$LOG/$f" "$OUT/" 2> /dev/null
    done
    [[ -f "$BUILD/configure.log" ]] && cp "$BUILD/configure.log" "$OUT/" 2> /dev/null
    [[ -f "$BUILD/build.log" ]] && cp "$BUILD/build.log" "$OUT/" 2> /dev/null
  fi
}

# ---- preflight: what is there (seconds) --------------------------------------------------------
echo "== preflight"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
  echo "nvcc: $(nvcc --version 2>&1 | tail -1)"
  echo "cmake: $(cmake --version 2>&1 | head -1)  ninja: $(ninja --version 2>&1)  g++: $(g++ --version 2>&1 | head -1)"
  echo "compute-sanitizer: $(command -v compute-sanitizer || echo 'not found')"
} 2>&1 | tee "$LOG/preflight.log"

# cuDNN: the system's, else the one PyTorch's pip wheel ships (nvidia-cudnn-cu13).
CMAKE_EXTRA=()
RUN_LD=""
cudnn_found=no
for d in /usr/include /usr/local/cuda/include /usr/include/x86_64-linux-gnu /usr/local/cuda/targets/x86_64-linux/include; do
  [[ -f $d/cudnn.h ]] && cudnn_found="$d/cudnn.h" && break
done
if [[ $cudnn_found == no ]]; then
  wheel=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2> /dev/null || true)
  if [[ -n "$wheel" && -f "$wheel/include/cudnn.h" ]]; then
    lib=$(ls "$wheel"/lib/libcudnn.so* 2> /dev/null | head -1)
    if [[ -n "$lib" ]]; then
      cudnn_found="$wheel/include/cudnn.h (pip wheel, $lib)"
      CMAKE_EXTRA+=("-DMOKD_CUDNN_INCLUDE_DIR=$wheel/include" "-DMOKD_CUDNN_LIBRARY=$lib")
      RUN_LD="$wheel/lib"
    fi
  fi
fi
echo "cudnn.h: $cudnn_found" | tee -a "$LOG/preflight.log"

missing=()
for h in eigen3/Eigen/Core nlohmann/json.hpp gtest/gtest.h benchmark/benchmark.h turbojpeg.h png.h \
  zlib.h openssl/evp.h; do
  found=no
  for d in /usr/include /usr/local/include; do [[ -f $d/$h ]] && found=yes; done
  [[ $found == no ]] && missing+=("$h")
done
if ((${#missing[@]})); then
  echo "missing headers: ${missing[*]}" | tee -a "$LOG/preflight.log"
  if [[ -f $DEPS_TAR ]]; then
    DEPS=/tmp/mokd_gpu_deps
    rm -rf "$DEPS" && mkdir -p "$DEPS" && tar -C "$DEPS" -xJf "$DEPS_TAR"
    CMAKE_EXTRA+=("-DCMAKE_PREFIX_PATH=$DEPS/usr")
    # Debian keeps opensslconf.h under the multiarch include dir.
    export CPATH="$DEPS/usr/include/x86_64-linux-gnu:$DEPS/usr/include${CPATH:+:$CPATH}"
    export LIBRARY_PATH="$DEPS/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}"
    RUN_LD="${RUN_LD:+$RUN_LD:}$DEPS/usr/lib/x86_64-linux-gnu"
    echo "using the carried libraries from $DEPS_TAR (unpacked in $DEPS)" | tee -a "$LOG/preflight.log"
    record preflight "ok" "missing ${missing[*]}: using $DEPS_TAR"
  else
    record preflight "WARN" "missing ${missing[*]} and no $DEPS_TAR (see --pack-deps)"
  fi
else
  record preflight "ok" "all headers found; cudnn: ${cudnn_found%% *}"
fi
[[ -n "$RUN_LD" ]] && export LD_LIBRARY_PATH="$RUN_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- configure ---------------------------------------------------------------------------------
echo "== configure"
configure() {
  cmake -S . -B "$BUILD" -G Ninja -DMOKD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DMOKD_BUILD_TESTS=ON \
    -DMOKD_BUILD_BENCH=ON -DCMAKE_BUILD_TYPE=Release "${CMAKE_EXTRA[@]}" "$@" > "$BUILD/configure.log" 2>&1
}
configure
conf_rc=$?
conf_note=""
if ((conf_rc == 0)); then
  # nvcc must compile the kernels as C++20 (CMakeLists maps CUDA_STANDARD 17 to -std=c++20); if a
  # newer CMake drops that flag, add it explicitly.
  if ! grep -q 'kernels/softmax.cu' "$BUILD/compile_commands.json" 2> /dev/null ||
    ! grep 'kernels/softmax.cu' "$BUILD/compile_commands.json" | grep -q 'std=c++20'; then
    conf_note="nvcc had no -std=c++20: added via CMAKE_CUDA_FLAGS"
    configure -DCMAKE_CUDA_FLAGS=-std=c++20
    conf_rc=$?
  fi
  grep -E 'mokd: (CUDA|cuDNN)' "$BUILD/configure.log"
else
  grep -E 'CMake Error|Could NOT find|not found|error' "$BUILD/configure.log" | head -20
fi
record configure "$conf_rc" "$conf_note"

# ---- build (keep going past failures: the tests may build when the benchmarks do not) ----------
built_tests=no built_bench=no
if ((conf_rc == 0)); then
  echo "== build ($JOBS jobs)"
  t0=$SECONDS
  ninja -C "$BUILD" -k 0 -j "$JOBS" mokd_tests mokd_bench > "$BUILD/build.log" 2>&1
  build_rc=$?
  # Which targets are built: asking ninja for each alone is quick once the shared parts are done.
  ninja -C "$BUILD" -j "$JOBS" mokd_tests >> "$BUILD/build.log" 2>&1 && built_tests=yes
  ninja -C "$BUILD" -j "$JOBS" mokd_bench >> "$BUILD/build.log" 2>&1 && built_bench=yes
  if ((build_rc != 0)); then
    grep -E -A3 'error|FAILED:' "$BUILD/build.log" | cut -c1-300 | head -60
  fi
  record build "$build_rc" "$((SECONDS - t0))s; tests built: $built_tests, bench built: $built_bench"
fi

# ---- the CUDA tests ----------------------------------------------------------------------------
if [[ $built_tests == yes ]]; then
  echo "== CUDA tests"
  t=$(cap 180)
  ((t < 60)) && t=60  # the tests are the point: they run even when the build ate the budget
  if ((t >= 20)); then
    timeout "$t" "$BUILD/mokd_tests" --gtest_filter='Cuda*' --gtest_color=no > "$LOG/tests.log" 2>&1
    tests_rc=$?
    ok=$(grep -c '^\[       OK \]' "$LOG/tests.log")
    bad=$(names FAILED "$LOG/tests.log" | grep -c .)
    skip=$(names SKIPPED "$LOG/tests.log" | grep -c .)
    note="$ok passed, $bad failed, $skip skipped"
    ((tests_rc == 124)) && note="$note; TIMED OUT after ${t}s (last: $(grep '^\[ RUN' "$LOG/tests.log" | tail -1))"
    ((tests_rc > 128 && tests_rc != 124)) && note="$note; CRASHED (signal $((tests_rc - 128))) in $(grep '^\[ RUN' "$LOG/tests.log" | tail -1)"
    ((skip > 0 && ok == 0)) && note="$note; ALL SKIPPED: no device seen?"
    tail -3 "$LOG/tests.log"
    record tests "$tests_rc" "$note"
  else
    record tests "skipped" "no time left"
  fi
else
  record tests "skipped" "mokd_tests not built"
fi

# ---- GPU microbenchmarks -----------------------------------------------------------------------
if [[ $built_bench == yes ]]; then
  echo "== GPU microbenchmarks"
  t=$(cap 100)
  if ((t >= 20)); then
    timeout "$t" "$BUILD/mokd_bench" --benchmark_filter='BM_Gpu' --benchmark_format=console \
      --benchmark_out="$LOG/bench.json" --benchmark_out_format=json > "$LOG/bench.log" 2>&1
    bench_rc=$?
    note=""
    ((bench_rc == 124)) && note="TIMED OUT after ${t}s"
    record bench "$bench_rc" "$note"
  else
    record bench "skipped" "no time left"
  fi
else
  record bench "skipped" "mokd_bench not built"
fi

# ---- compute-sanitizer (slow: last, with what is left of the budget) ---------------------------
if [[ $built_tests == yes ]] && command -v compute-sanitizer > /dev/null; then
  echo "== compute-sanitizer memcheck"
  t=$(cap 150)
  if ((t >= 30)); then
    # Poisoning off: memcheck itself reports out-of-bounds accesses. Own kernels first, cuDNN last.
    MOKD_CUDA_POISON=0 timeout "$t" compute-sanitizer --tool memcheck --error-exitcode 99 \
      --print-limit 20 "$BUILD/mokd_tests" --gtest_color=no \
      --gtest_filter='CudaParity.Elementwise:CudaParity.Reductions:CudaParity.Shape:CudaParity.SoftmaxLayerNorm:CudaParity.Attention:CudaParity.CrossAttention:CudaParity.BatchNorm:CudaParity.Losses:CudaParity.Optimizers:CudaParity.CopiesAndDtypes:CudaParity.DropoutSameMask:CudaParity.MatmulLinear:CudaParity.ConvPool' \
      > "$LOG/memcheck.log" 2>&1
    san_rc=$?
    note="$(grep -m1 'ERROR SUMMARY' "$LOG/memcheck.log")"
    ((san_rc == 124)) && note="TIMED OUT after ${t}s (last: $(grep '^\[ RUN' "$LOG/memcheck.log" | tail -1)) $note"
    record memcheck "$san_rc" "$note"
  else
    record memcheck "skipped" "no time left"
  fi
  t=$(cap 60)
  if ((t >= 30)); then
    echo "== compute-sanitizer racecheck (attention, reductions, layer/batch norm)"
    MOKD_CUDA_POISON=0 timeout "$t" compute-sanitizer --tool racecheck --error-exitcode 99 \
      --print-limit 10 "$BUILD/mokd_tests" --gtest_color=no \
      --gtest_filter='CudaParity.Attention:CudaParity.Reductions:CudaParity.SoftmaxLayerNorm:CudaParity.BatchNorm' \
      > "$LOG/racecheck.log" 2>&1
    race_rc=$?
    record racecheck "$race_rc" "$(grep -m1 'RACECHECK SUMMARY\|ERROR SUMMARY' "$LOG/racecheck.log")"
  else
    record racecheck "skipped" "no time left"
  fi
else
  record memcheck "skipped" "$([[ $built_tests == yes ]] && echo 'compute-sanitizer not found' || echo 'mokd_tests not built')"
fi

summary
for rc in "${RCS[@]}"; do
  [[ $rc == 0 || $rc == ok || $rc == skipped ]] || exit 1
done
exit 0
