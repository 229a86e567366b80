#!/usr/bin/env bash
# GPU check for the CUDA backend, for any Linux machine with an NVIDIA GPU, run from anywhere in
# the repository: preflight (tools and libraries found), the binaries (prebuilt ones from
# .gpu_deps/bin, else configure + build here), every CUDA test, the GPU microbenchmarks,
# `mokd_train benchmark` on three model pairs (the paper's pair once more with the fused
# epilogue kernels on, MOKD_FUSED_EPILOGUES=1), real Fashion-MNIST training on the GPU, the
# data-parallel paths on one GPU, the PyTorch peer of the same steps (tools/peer_bench.py: the best
# of eager and torch.compile, channels_last for CNNs; needs torch and timm), compute-sanitizer
# memcheck and racecheck, then a short table. Every step runs even when an earlier one failed (as
# far as it can), each under a time cap taken from one overall budget (BUDGET seconds, default
# 480), so one run yields all the information. Full logs land in $LOG, and are copied to $OUT when
# that is set. A full run took 74 s on an H200 (2026-11-26).
#
#   tools/gpu_check.sh                  # on the GPU machine: build if needed, check, summarise
#   tools/gpu_check.sh --prebuild       # on a build machine: binaries + libraries into .gpu_deps/
#   tools/gpu_check.sh --pack-deps      # on a build machine: only the libraries, as a tarball
#
# A GPU machine without a compiler or without the -dev libraries: on a Debian/Ubuntu build machine
# with the CUDA toolkit, `tools/gpu_check.sh --prebuild` builds mokd_tests, mokd_bench and
# mokd_train for CUDA_ARCHS (default 90: H100/H200; glibc/libstdc++ of Debian 12 run on Ubuntu
# 24.04) into .gpu_deps/bin and packs the libraries the binaries need (.gpu_deps/deps.tar.xz) and
# the Fashion-MNIST files. Copy the repository with .gpu_deps/ to the GPU machine and run
# `tools/gpu_check.sh` there: it uses the binaries when they load, else it builds from source, and
# unpacks the libraries only when the preflight finds one missing. It never installs anything.
#
# Each CUDA test runs in its own process (a crash or a sticky CUDA error spoils only that test),
# several at a time; so does memcheck.
#
# Env: CUDA_ARCHS (default 90), BUILD (build dir, default build-gpu), BUILD_PRE (--prebuild's,
# default build-gpu-pre), LOG, BUDGET, JOBS (default nproc), PAR (parallel test processes, default
# 4), MOKD_TF32, ONLY (a comma list of the steps to run: tests,bench,e2e,train,dist,peer,memcheck;
# default all), PROFILE=1 (the mokd_train benchmarks print per-op GPU time, MOKD_CUDA_PROFILE),
# PEER=0 (no PyTorch peer). The summary is the end of the output.
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
  echo "wrote $DEPS_TAR ($(du -h "$DEPS_TAR" | cut -f1)); copy .gpu_deps/ with the repository to the GPU machine"
  exit 0
fi

# ---- --prebuild: build the binaries here for sm_90 and put them into .gpu_deps/bin --------------
if [[ "${1:-}" == "--prebuild" ]]; then
  pre=${BUILD_PRE:-build-gpu-pre}
  # MPI off by default (PRE_MPI=ON to keep it): GPU machines often lack Open MPI, and a binary
  # linked against libmpi would not load there. NCCL comes with the CUDA toolkit's libraries.
  cmake -S . -B "$pre" -G Ninja -DMOKD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-90} -DMOKD_BUILD_TESTS=ON \
    -DMOKD_BUILD_BENCH=ON -DMOKD_MPI=${PRE_MPI:-OFF} -DCMAKE_BUILD_TYPE=Release > /dev/null || exit 1
  ninja -C "$pre" -j "${JOBS:-2}" mokd_tests mokd_bench mokd_train || exit 1
  mkdir -p .gpu_deps/bin
  for b in mokd_tests mokd_bench mokd_train; do strip -o ".gpu_deps/bin/$b" "$pre/$b" || exit 1; done
  # Fashion-MNIST (the Debian package's gz files, 30 MB) for the end-to-end training step.
  if [[ -d /usr/share/datasets/fashion-mnist ]]; then
    mkdir -p .gpu_deps/fashion-mnist && cp -u /usr/share/datasets/fashion-mnist/*.gz .gpu_deps/fashion-mnist/
  fi
  git rev-parse HEAD > .gpu_deps/bin/COMMIT
  git diff --quiet HEAD -- . ':!NOTES.md' || echo "(uncommitted changes)" >> .gpu_deps/bin/COMMIT
  [[ -f $DEPS_TAR ]] || "$0" --pack-deps || exit 1
  grep -qxF '/.gpu_deps/' .git/info/exclude 2> /dev/null || echo '/.gpu_deps/' >> .git/info/exclude
  echo "prebuilt: $(du -sh .gpu_deps | cut -f1) in .gpu_deps (binaries of $(head -1 .gpu_deps/bin/COMMIT))"
  exit 0
fi

BUILD=${BUILD:-build-gpu}
LOG=${LOG:-$BUILD/gpu_check}
BUDGET=${BUDGET:-480}
JOBS=${JOBS:-$(nproc)}
PAR=${PAR:-4}
ONLY=${ONLY:-tests,bench,e2e,train,dist,peer,memcheck}
want() { [[ ",$ONLY," == *",$1,"* ]]; }
for s in ${ONLY//,/ }; do
  [[ ",tests,bench,e2e,train,dist,peer,memcheck," == *",$s,"* ]] ||
    { echo "ONLY: unknown step '$s' (steps: tests,bench,e2e,train,dist,peer,memcheck)"; exit 2; }
done
export PATH=/usr/local/cuda/bin:$PATH
mkdir -p "$BUILD" "$LOG"

STEPS=() RCS=() NOTES=()
record() { STEPS+=("$1"); RCS+=("$2"); NOTES+=("$3"); }
# The step benchmarks' lines per model pair, mokd and the best peer, for the ratios.
declare -A MOKD_RES=() PEER_RES=()
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
      grep -A4 ': Failure$' "$LOG/tests.log" | grep -v '^--$' | cut -c1-200 | head -50
    fi
    if [[ -f "$LOG/t/rcs" ]]; then
      local n
      for n in $(awk '$2 != 0 && $2 != 1 {print $1}' "$LOG/t/rcs"); do
        echo "-- $n ended with rc $(awk -v n="$n" '$1 == n {print $2}' "$LOG/t/rcs"); its last lines:"
        tail -6 "$LOG/t/$n.log" | cut -c1-200
      done
    fi
  fi
  local d
  for d in m r; do
    [[ -f "$LOG/$d/rcs" ]] || continue
    for n in $(awk '$2 != 0 {print $1}' "$LOG/$d/rcs"); do
      echo "-- $([[ $d == m ]] && echo memcheck || echo racecheck) $n (rc $(awk -v n="$n" '$1 == n {print $2}' "$LOG/$d/rcs")):"
      grep -E '^========= (Invalid|Program hit|Uninitialized|Error|Warning|    at |.*SUMMARY)' "$LOG/$d/$n.log" | cut -c1-200 | head -8
    done
  done
  if [[ -f "$LOG/bench.json" ]]; then
    python3 - "$LOG/bench.json" << 'PY' || true
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("no benchmark results:", e); sys.exit(0)
# The card's ceilings measured in this run: cuBLASLt's 8192^3 GEMMs (f32 without TF32, bf16)
# and the device-to-device copy bandwidth; each result is shown as a share of its ceiling.
bs = [b for b in d.get("benchmarks", []) if not b.get("error_occurred")]
def find(prefix, key):
    return next((b[key] for b in bs if b["name"].startswith(prefix) and key in b), None)
ceil = {"f32": find("BM_GpuGemmDirectLt/8192/8192/8192/0", "TFLOPs"),
        "bf16": find("BM_GpuGemmDirectLt/8192/8192/8192/1", "TFLOPs"),
        "copy": find("BM_GpuRowwise/0", "GB/s")}
print(f"{'benchmark':44s} {'label':28s} {'ms':>9s}  metric (share of this run's ceiling)")
for b in d.get("benchmarks", []):
    if b.get("error_occurred"):
        print(f"{b['name']:44s} skipped: {b.get('error_message', '')}"); continue
    ms = b.get("real_time", 0) * {"ns": 1e-6, "us": 1e-3, "ms": 1, "s": 1e3}.get(b.get("time_unit", "ns"), 1e-6)
    label = b.get("label", "")
    share = ""
    if "TFLOPs" in b:
        c = ceil["bf16"] if "bf16" in label else ceil["f32"]
        if c: share = f" ({100 * b['TFLOPs'] / c:.0f}% of {'bf16' if 'bf16' in label else 'f32'} GEMM {c:.0f})"
    elif "GB/s" in b and ceil["copy"]:
        share = f" ({100 * b['GB/s'] / ceil['copy']:.0f}% of copy {ceil['copy']:.0f})"
    metric = ", ".join(f"{k} {b[k]:.1f}" for k in ("TFLOPs", "GB/s") if k in b)
    name = b["name"].replace("/iterations:1/manual_time", "")
    print(f"{name:44s} {label:28s} {ms:9.3f}  {metric}{share}")
PY
  fi
  if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
    # At most 8 files come back: the logs that matter.
    for f in preflight.log tests.log memcheck.log racecheck.log bench.json train_bench.log train.log peer.log; do
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

# ---- binaries: the carried prebuilt ones when they load here, else configure + build ------------
TESTS="$BUILD/mokd_tests" BENCH="$BUILD/mokd_bench" TRAIN="$BUILD/mokd_train"
built_tests=no built_bench=no built_train=no
PRE=.gpu_deps/bin
if [[ -x $PRE/mokd_tests ]]; then
  # Libraries the binaries miss: look for each under the CUDA toolkit, the Python wheels and the
  # carried packages, and add its folder to LD_LIBRARY_PATH.
  for round in 1 2; do
    for lib in $(ldd $PRE/mokd_tests $PRE/mokd_bench $PRE/mokd_train 2> /dev/null | awk '/not found/{print $1}' | sort -u); do
      if [[ $round == 1 && -f $DEPS_TAR && ! -d /tmp/mokd_gpu_deps ]]; then
        mkdir -p /tmp/mokd_gpu_deps && tar -C /tmp/mokd_gpu_deps -xJf "$DEPS_TAR"
      fi
      f=$(find /usr/local/cuda*/ /usr/lib /opt /tmp/mokd_gpu_deps -name "$lib" 2> /dev/null | head -1)
      echo "prebuilt: $lib -> ${f:-NOT FOUND}" | tee -a "$LOG/preflight.log"
      [[ -n "$f" ]] && export LD_LIBRARY_PATH="$(dirname "$f")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
  done
  if "$PRE/mokd_tests" --gtest_list_tests > /dev/null 2>> "$LOG/preflight.log"; then
    TESTS=$PRE/mokd_tests BENCH=$PRE/mokd_bench TRAIN=$PRE/mokd_train
    built_tests=yes
    "$BENCH" --benchmark_list_tests > /dev/null 2>&1 && built_bench=yes
    "$TRAIN" --help > /dev/null 2>&1 && built_train=yes
    record binaries "ok" "prebuilt ($(head -c 12 $PRE/COMMIT) $(sed -n 2p $PRE/COMMIT)); bench: $built_bench, train: $built_train"
  else
    echo "prebuilt binaries do not run here: building" | tee -a "$LOG/preflight.log"
  fi
fi

if [[ $built_tests == no ]]; then
  echo "== configure"
  configure() {
    cmake -S . -B "$BUILD" -G Ninja -DMOKD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-90} -DMOKD_BUILD_TESTS=ON \
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

  # Build (keep going past failures: the tests may build when the benchmarks do not).
  if ((conf_rc == 0)); then
    echo "== build ($JOBS jobs)"
    t0=$SECONDS
    ninja -C "$BUILD" -k 0 -j "$JOBS" mokd_tests mokd_bench mokd_train > "$BUILD/build.log" 2>&1
    build_rc=$?
    ninja -C "$BUILD" -j "$JOBS" mokd_tests >> "$BUILD/build.log" 2>&1 && built_tests=yes
    ninja -C "$BUILD" -j "$JOBS" mokd_bench >> "$BUILD/build.log" 2>&1 && built_bench=yes
    ninja -C "$BUILD" -j "$JOBS" mokd_train >> "$BUILD/build.log" 2>&1 && built_train=yes
    if ((build_rc != 0)); then
      grep -E -A3 'error|FAILED:' "$BUILD/build.log" | cut -c1-300 | head -60
    fi
    record build "$build_rc" "$((SECONDS - t0))s; tests: $built_tests, bench: $built_bench, train: $built_train"
  fi
fi
export MOKD_TEST_DATA="$ROOT/tests/data"

# Runs the tests named on stdin, each in its own process, PAR at a time, each under PER seconds;
# "$@" prefixes the command (e.g. compute-sanitizer). Logs: $1/<test>.log; exit codes: $1/rcs.
run_each() {
  local dir=$1 per=$2
  shift 2
  mkdir -p "$dir" && : > "$dir/rcs"
  xargs -P "$PAR" -I{} bash -c 'timeout "$1" "${@:4}" "$2" --gtest_filter="$0" --gtest_color=no > "$3/$0.log" 2>&1; echo "$0 $?" >> "$3/rcs"' \
    {} "$per" "$TESTS" "$dir" "$@"
}
# The CUDA tests: every test whose name says Cuda, plus the cross-device check.
cuda_tests() {
  "$TESTS" --gtest_list_tests --gtest_filter='*Cuda*:OpsMatmul.DifferentDevices*' |
    awk '/^[^ ]/{s=$1} /^  [A-Za-z]/{print s $1}'
}

# ---- the CUDA tests ----------------------------------------------------------------------------
if ! want tests; then
  :
elif [[ $built_tests == yes ]]; then
  echo "== CUDA tests ($PAR processes at a time)"
  t=$(cap 200)
  ((t < 60)) && t=60  # the tests are the point: they run even when the build ate the budget
  cuda_tests > "$LOG/test_list"
  timeout "$t" bash -c "$(declare -f run_each); PAR=$PAR TESTS=$TESTS; run_each '$LOG/t' 150" < "$LOG/test_list"
  tests_rc=$?
  for n in $(cat "$LOG/test_list"); do
    [[ -f "$LOG/t/$n.log" ]] && cat "$LOG/t/$n.log"
    grep -q "^$n " "$LOG/t/rcs" || echo "[  FAILED  ] $n (not finished: overall timeout)"
  done > "$LOG/tests.log"
  ok=$(grep -c '^\[       OK \]' "$LOG/tests.log")
  bad=$(names FAILED "$LOG/tests.log" | grep -c .)
  skip=$(names SKIPPED "$LOG/tests.log" | grep -c .)
  total=$(grep -c . "$LOG/test_list")
  note="$total tests: $ok passed, $bad failed, $skip skipped"
  crashed=$(awk '$2 != 0 && $2 != 1 {print $1 "(rc " $2 ")"}' "$LOG/t/rcs" | tr '\n' ' ')
  [[ -n "$crashed" ]] && note="$note; crashed/timed out: $crashed"
  ((skip > 0 && ok == 0)) && note="$note; ALL SKIPPED: no device seen?"
  record tests "$(awk '$2 != 0 {bad=1} END {print bad ? 1 : 0}' "$LOG/t/rcs")" "$note"
else
  record tests "skipped" "mokd_tests not built"
fi

# ---- GPU microbenchmarks (alone on the GPU) ----------------------------------------------------
if ! want bench; then
  :
elif [[ $built_bench == yes ]]; then
  echo "== GPU microbenchmarks"
  t=$(cap 100)
  if ((t >= 20)); then
    timeout "$t" "$BENCH" --benchmark_filter='BM_Gpu' --benchmark_format=console \
      --benchmark_out="$LOG/bench.json" --benchmark_out_format=json > "$LOG/bench.log" 2>&1
    bench_rc=$?
    note=""
    ((bench_rc == 124)) && note="TIMED OUT after ${t}s"
    ((bench_rc != 0 && bench_rc != 124)) && note="$(tail -2 "$LOG/bench.log" | tr '\n' ' ' | cut -c1-200)"
    record bench "$bench_rc" "$note"
  else
    record bench "skipped" "no time left"
  fi
else
  record bench "skipped" "mokd_bench not built"
fi

# ---- a whole MoKD step on the GPU (mokd_train benchmark, synthetic data) ------------------------
if [[ $built_train == yes ]] && want e2e; then
  echo "== mokd_train benchmark"
  : > "$LOG/train_bench.log"
  while read -r label args; do
    t=$(cap 60)
    ((t < 20)) && { record "$label" "skipped" "no time left"; continue; }
    # A label ending in _fused runs with the fused epilogue kernels on (MOKD_FUSED_EPILOGUES).
    fused=0
    [[ $label == *_fused ]] && fused=1
    MOKD_FUSED_EPILOGUES=$fused MOKD_CUDA_PROFILE=${PROFILE:-0} timeout "$t" "$TRAIN" benchmark --device cuda $args > "$LOG/one.log" 2>&1
    rc=$?
    cat "$LOG/one.log" >> "$LOG/train_bench.log"
    record "$label" "$rc" "$(grep 'ms/step' "$LOG/one.log" | tail -1 | cut -c1-150)"
    ((rc == 0)) && MOKD_RES[${label#e2e_}]=$(grep 'ms/step' "$LOG/one.log" | tail -1)
    # Host waits, launches and MFU of the same steps.
    for what in syncs:'host synchronisations' launches:'kernel launches' mfu:'model FLOPs'; do
      grep -q "${what#*:}" "$LOG/one.log" &&
        record "${label}_${what%%:*}" 0 "$(grep "${what#*:}" "$LOG/one.log" | tail -1 | sed 's/^ *//' | cut -c1-150)"
    done
    [[ ${PROFILE:-0} == 1 ]] && grep -A16 'GPU time per op' "$LOG/one.log"
  done << 'EOF_RUNS'
e2e_fmnist_f32 --bench.batch_size=256 --bench.steps=20
e2e_deit_t<-b_bf16 --model.student=deit_tiny_patch16_224 --model.teacher=deit_base_patch16_224 --bench.batch_size=256 --bench.warmup=2 --bench.steps=5 --run.precision=bf16
e2e_res18<-50_bf16 --model.student=resnet18 --model.teacher=resnet50 --bench.batch_size=256 --bench.warmup=2 --bench.steps=5 --run.precision=bf16
e2e_deit_t<-rgy160_bf16 --model.student=deit_tiny_patch16_224 --model.teacher=regnety_160 --bench.batch_size=256 --bench.warmup=2 --bench.steps=5 --run.precision=bf16
e2e_deit_t<-rgy160_bf16_fused --model.student=deit_tiny_patch16_224 --model.teacher=regnety_160 --bench.batch_size=256 --bench.warmup=2 --bench.steps=5 --run.precision=bf16
EOF_RUNS
  # The cost ledger (from shapes) next to the measured GPU time per kernel, for the DeiT pair.
  t=$(cap 60)
  if ((t >= 20)); then
    MOKD_CUDA_PROFILE=1 timeout "$t" "$TRAIN" benchmark --device cuda --ledger \
      --model.student=deit_tiny_patch16_224 --model.teacher=deit_base_patch16_224 \
      --bench.batch_size=256 --bench.warmup=2 --bench.steps=3 --run.precision=bf16 > "$LOG/ledger.log" 2>&1
    rc=$?
    cat "$LOG/ledger.log" >> "$LOG/train_bench.log"
    sed -n '/^cost ledger/,/^  total/p' "$LOG/ledger.log"
    record "ledger_deit_t<-b_bf16" "$rc" "$(grep '^  total' "$LOG/ledger.log" | tail -1 | sed 's/  */ /g' | cut -c1-150)"
  else
    record "ledger_deit_t<-b_bf16" "skipped" "no time left"
  fi
fi

# Sets DS to the Fashion-MNIST folder (the Debian package's, else one copied along in
# .gpu_deps/); fails when neither holds the training images.
find_fashion_mnist() {
  DS=/usr/share/datasets/fashion-mnist
  [[ -d $DS ]] || DS=$ROOT/.gpu_deps/fashion-mnist
  [[ -f $DS/train-images-idx3-ubyte.gz || -f $DS/train-images-idx3-ubyte ]]
}

# ---- real training on the GPU: Fashion-MNIST teacher, then a MoKD student (the CI end-to-end
# test's schedule on the full dataset, bf16), each checked against the CI thresholds -----------
if [[ $built_train == yes ]] && want train; then
  if ! find_fashion_mnist; then
    record train "skipped" "no Fashion-MNIST (copy .gpu_deps/fashion-mnist along: --prebuild packs it)"
  else
    echo "== training on the GPU (Fashion-MNIST from $DS)"
    R=$LOG/run
    rm -rf "$R"
    common=(--device cuda --data.dir="$DS" --data.eval_limit=2000 --data.batch_size=128 --run.precision=bf16 --log.log_every=100)
    t=$(cap 60)
    timeout "$t" "$TRAIN" teacher "${common[@]}" --run.out_dir="$R/teacher" --model.teacher=resnet_fmnist_small \
      --optim.steps=400 --optim.lr=3e-3 --optim.warmup_steps=10 > "$LOG/train.log" 2>&1
    rc=$?
    acc=$(grep -o 'best top-1 [0-9.]*' "$LOG/train.log" | tail -1 | awk '{print $3}')
    ok=$(awk -v a="${acc:-0}" 'BEGIN {print (a >= 65) ? 0 : 1}')
    record train_teacher "$((rc ? rc : ok))" "best top-1 ${acc:-?}% after 400 steps (CI bar 65%)"
    t=$(cap 90)
    if ((rc == 0 && t >= 20)); then
      timeout "$t" "$TRAIN" distill "${common[@]}" --run.out_dir="$R/student" --model.student=vit_fmnist_micro_distilled \
        --model.teacher=resnet_fmnist_small --model.teacher_weights="$R/teacher/checkpoints/best.safetensors" \
        --distill.method=mokd --optim.steps=600 --optim.lr=3e-3 --optim.warmup_steps=20 >> "$LOG/train.log" 2>&1
      rc=$?
      acc=$(grep -o 'best top-1 [0-9.]*' "$LOG/train.log" | tail -1 | awk '{print $3}')
      ok=$(awk -v a="${acc:-0}" 'BEGIN {print (a >= 55) ? 0 : 1}')
      record train_mokd "$((rc ? rc : ok))" "best top-1 ${acc:-?}% after 600 steps (CI bar 55%)"
    fi
    ((rc != 0)) && tail -5 "$LOG/train.log"
  fi
fi

# ---- data-parallel on one GPU: NCCL at world size 1 (init, the bucketed reduction path every
# step, a checkpoint) against no communicator, A/B twice; where mpirun and an MPI build exist, two
# MPI processes sharing the GPU against one process with two micro-batches ---------------------
if [[ $built_train == yes ]] && want dist; then
  if ! find_fashion_mnist; then
    record dist "skipped" "no Fashion-MNIST (copy .gpu_deps/fashion-mnist along: --prebuild packs it)"
  else
    echo "== data-parallel paths on one GPU"
    R=$LOG/dist
    rm -rf "$R"
    TW=$LOG/run/teacher/checkpoints/best.safetensors
    if [[ ! -f $TW ]]; then
      TW=$R/teacher/checkpoints/best.safetensors
      timeout "$(cap 30)" "$TRAIN" teacher --device cuda --data.dir="$DS" --data.train_limit=2048 \
        --data.eval_limit=256 --optim.steps=5 --run.out_dir="$R/teacher" > "$LOG/dist.log" 2>&1
    fi
    d=(distill --device cuda --data.dir="$DS" --data.train_limit=51200 --data.eval_limit=1000
       --data.batch_size=256 --run.precision=bf16 --log.log_every=20 --log.eval_every=0 --optim.steps=200
       --model.student=vit_fmnist_micro_distilled --model.teacher=resnet_fmnist_small --model.teacher_weights="$TW")
    nccl=(--dist.backend=nccl --dist.world_size=1 --dist.rank=0 --dist.local_rank=0)
    # Median images/s of the progress lines after the first.
    ips() { grep -o '[0-9.]* img/s' "$1" | awk 'NR > 1 {print $1}' | sort -n | awk '{a[NR] = $1} END {print (NR ? a[int((NR + 1) / 2)] : 0)}'; }
    for k in 1 2; do
      timeout "$(cap 40)" "$TRAIN" "${d[@]}" --run.out_dir="$R/local$k" > "$R/local$k.log" 2>&1
      timeout "$(cap 40)" "$TRAIN" "${d[@]}" "${nccl[@]}" --run.out_dir="$R/nccl$k" > "$R/nccl$k.log" 2>&1
      echo "rc local $? nccl $?" >> "$LOG/dist.log"
    done
    cat "$R"/*.log >> "$LOG/dist.log"
    version=$(grep -o 'nccl [0-9][0-9.]*' "$R/nccl1.log" | head -1)
    l=$(ips "$R/local1.log") n=$(ips "$R/nccl1.log") l2=$(ips "$R/local2.log") n2=$(ips "$R/nccl2.log")
    ok=$(grep -c '^done: 200 steps' "$R/nccl1.log" "$R/nccl2.log" | awk -F: '{s += $2} END {print (s == 2) ? 0 : 1}')
    over=$(awk -v l="$l" -v n="$n" -v l2="$l2" -v n2="$n2" 'BEGIN {if (n > 0 && n2 > 0) printf "%.1f", 100 * ((l / n + l2 / n2) / 2 - 1); else print "?"}')
    record dist_nccl1 "$ok" "${version:-nccl ?}, world 1: $n/$n2 img/s vs $l/$l2 without a communicator: ${over}% overhead (target <= 3%); NCCL < 2.30 refuses two ranks on one GPU"
    if command -v mpirun > /dev/null && ldd "$TRAIN" | grep -q libmpi; then
      mp=(distill --device cuda --data.dir="$DS" --data.train_limit=5120 --data.eval_limit=256 --data.batch_size=128
          --log.eval_every=0 --optim.steps=20 --model.student=vit_fmnist_micro_distilled
          --model.teacher=resnet_fmnist_small --model.teacher_weights="$TW")
      OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout "$(cap 60)" mpirun --oversubscribe -np 2 \
        "$TRAIN" "${mp[@]}" --run.device=cuda:0 --dist.backend=mpi --run.out_dir="$R/mpi2" >> "$LOG/dist.log" 2>&1
      timeout "$(cap 40)" "$TRAIN" "${mp[@]}" --optim.accum_steps=2 --run.out_dir="$R/accum2" >> "$LOG/dist.log" 2>&1
      cmp=$(python3 - "$R/mpi2" "$R/accum2" << 'EOF_PY'
import json, struct, sys
def state(d):
    b = open(d + "/checkpoints/state.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: struct.unpack("<%df" % ((v["data_offsets"][1] - v["data_offsets"][0]) // 4),
                             b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items() if v["dtype"] == "F32"}
a, b = state(sys.argv[1]), state(sys.argv[2])
worst = max(abs(x - y) / (1e-6 + 1e-4 * abs(y)) for k in a for x, y in zip(a[k], b[k]))
same = all(a[k] == b[k] for k in a)
print(("bitwise equal" if same else "max %.3g of the tolerance (1e-4 relative)" % worst), 0 if worst <= 1 else 1)
EOF_PY
)
      record dist_mpi2 "${cmp##* }" "2 MPI ranks on one GPU vs 1 process x 2 micro-batches, 20 steps: ${cmp% *}"
    else
      record dist_mpi2 "skipped" "no mpirun or a binary without MPI here"
    fi
  fi
fi

# ---- the PyTorch + timm peer of the same steps, same card, same run (tools/peer_bench.py) -------
if [[ ${PEER:-1} == 1 ]] && want peer && python3 -c 'import torch, timm' 2> /dev/null; then
  echo "== PyTorch peer (tools/peer_bench.py)"
  : > "$LOG/peer.log"
  while read -r label args; do
    # Eager and torch.compile (its compilation included), channels_last for CNN pairs: the best.
    t=$(cap 150)
    ((t < 40)) && { record "$label" "skipped" "no time left"; continue; }
    timeout "$t" python3 tools/peer_bench.py $args > "$LOG/peer_one.log" 2>&1
    rc=$?
    cat "$LOG/peer_one.log" >> "$LOG/peer.log"
    record "$label" "$rc" "$(tail -1 "$LOG/peer_one.log" | cut -c1-150)"
    grep -q '^best:' "$LOG/peer_one.log" && PEER_RES[${label#peer_}]=$(grep '^best:' "$LOG/peer_one.log" | tail -1)
  done << 'EOF_RUNS'
peer_deit_t<-b_bf16 --student deit_tiny_patch16_224 --teacher deit_base_patch16_224 --batch 256 --precision bf16
peer_res18<-50_bf16 --student resnet18 --teacher resnet50 --batch 256 --precision bf16
peer_deit_t<-rgy160_bf16 --student deit_tiny_patch16_224 --teacher regnety_160 --batch 256 --precision bf16
EOF_RUNS
  # mokd against the best peer, same card, same run: time and peak memory as ratios (< 1: mokd
  # is faster / smaller).
  for pair in "deit_t<-b_bf16" "res18<-50_bf16" "deit_t<-rgy160_bf16"; do
    m=${MOKD_RES[$pair]:-} p=${PEER_RES[$pair]:-}
    if [[ -z $m || -z $p ]]; then
      record "ratio_$pair" "skipped" "needs both the mokd_train benchmark and the peer of this pair"
      continue
    fi
    record "ratio_$pair" 0 "$(python3 - "$m" "$p" << 'EOF_RATIO'
import re, sys
pat = r"([0-9.]+) ms/step.*peak memory ([0-9.]+) MiB"
(ms, mm), (ps, pm) = (map(float, re.search(pat, a).groups()) for a in sys.argv[1:3])
mode = sys.argv[2].split()[1]
print(f"mokd {ms:.1f} ms / peer ({mode}) {ps:.1f} ms = {ms / ps:.2f}x; "
      f"peak {mm:.0f} / {pm:.0f} MiB = {mm / pm:.2f}x")
EOF_RATIO
)"
  done
fi

# ---- compute-sanitizer (slow: last, with what is left of the budget) ---------------------------
if ! want memcheck; then
  :
elif [[ $built_tests == yes ]] && command -v compute-sanitizer > /dev/null; then
  echo "== compute-sanitizer memcheck"
  t=$(cap 150)
  if ((t >= 30)); then
    # Poisoning off: memcheck itself reports out-of-bounds accesses. The op tests, one process each.
    grep -E '^CudaParity\.|^CudaErrors\.Unsupported|^CudaLosses\.|^CudaOptim\.|^CudaPrecision\.|^CudaBf16Activations\.|^CudaBiasAct\.|^CudaBiasGelu\.|^CudaAddLayerNorm\.|^CudaBatchNormRelu\.|^CudaFoldBatchNorm\.|^CudaPinnedHost\.' "$LOG/test_list" |
      grep -v PoisonIsOn > "$LOG/memcheck_list"
    MOKD_CUDA_POISON=0 timeout "$t" bash -c "$(declare -f run_each); PAR=$PAR TESTS=$TESTS; run_each '$LOG/m' $t compute-sanitizer --tool memcheck --error-exitcode 99 --print-limit 20" < "$LOG/memcheck_list"
    for n in $(cat "$LOG/memcheck_list"); do
      echo "######## $n"; [[ -f "$LOG/m/$n.log" ]] && cat "$LOG/m/$n.log"
    done > "$LOG/memcheck.log"
    done_n=$(grep -c . "$LOG/m/rcs") clean=$(grep -c 'ERROR SUMMARY: 0 errors' "$LOG/memcheck.log")
    dirty=$(awk '$2 == 99 {print $1}' "$LOG/m/rcs" | tr '\n' ' ')
    record memcheck "$([[ -z "$dirty" && $done_n == $(grep -c . "$LOG/memcheck_list") ]] && echo 0 || echo 1)" \
      "$done_n/$(grep -c . "$LOG/memcheck_list") tests ran, $clean with 0 errors${dirty:+; errors in: $dirty}"
  else
    record memcheck "skipped" "no time left"
  fi
  t=$(cap 60)
  if ((t >= 30)); then
    echo "== compute-sanitizer racecheck (attention, reductions, layer/batch norm, losses, global norm)"
    printf '%s\n' CudaParity.Attention CudaParity.Reductions CudaParity.SoftmaxLayerNorm CudaParity.BatchNorm \
      CudaLosses.CrossEntropyHardLabels CudaLosses.KlDivTemperatures CudaOptim.GlobalNormMatchesCpu > "$LOG/race_list"
    MOKD_CUDA_POISON=0 timeout "$t" bash -c "$(declare -f run_each); PAR=$PAR TESTS=$TESTS; run_each '$LOG/r' $t compute-sanitizer --tool racecheck --error-exitcode 99 --print-limit 10" < "$LOG/race_list"
    for n in $(cat "$LOG/race_list"); do
      echo "######## $n"; [[ -f "$LOG/r/$n.log" ]] && cat "$LOG/r/$n.log"
    done > "$LOG/racecheck.log"
    dirty=$(awk '$2 == 99 {print $1}' "$LOG/r/rcs" | tr '\n' ' ')
    record racecheck "$([[ -z "$dirty" ]] && echo 0 || echo 1)" "$(grep -c . "$LOG/r/rcs")/$(grep -c . "$LOG/race_list") ran${dirty:+; hazards in: $dirty}"
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
