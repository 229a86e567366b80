#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (address + undefined-behaviour sanitizers) and
# runs each for SECONDS seconds (default 60) from seeds written here: safetensors files (the
# test fixtures), PNG/JPEG images (PIL), IDX files, TOML configs. A crash leaves its input in
# $OUT_DIR/<target>/ (crash-*); rerun one with `$OUT_DIR/<target>_fuzz <file>`.
#
#   bash tools/fuzz.sh                 # all targets, 60 s each
#   SECONDS_EACH=300 bash tools/fuzz.sh image idx
# Needs clang (with libFuzzer), libpng/turbojpeg/zlib/OpenSSL headers, python3 with PIL and numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR=${OUT_DIR:-/tmp/mokd-fuzz}
SECONDS_EACH=${SECONDS_EACH:-60}
JOBS=${JOBS:-$(nproc)}
CXX=${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14)}
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(safetensors image idx config)
mkdir -p "$OUT_DIR"

# The engine, io, models and mokd sources (no CUDA), compiled once with the sanitizers.
# NDEBUG as in release builds: toml++ asserts (debug-only) before raising the parse error it raises
# in a release build, which is what users run.
FLAGS=(-std=c++20 -g -O1 -DNDEBUG -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined
       -fopenmp -I"$ROOT" -I/usr/include/eigen3)
OBJ="$OUT_DIR/obj-$(echo "$CXX ${FLAGS[*]}" | md5sum | cut -c1-8)"  # new flags, fresh objects
mkdir -p "$OBJ"
SOURCES=$(ls engine/*.cpp engine/cpu/*.cpp engine/ops/*.cpp io/*.cpp models/*.cpp mokd/*.cpp)
echo "== compiling $(echo "$SOURCES" | wc -w) sources with $CXX (sanitizers; first run takes minutes)"
echo "$SOURCES" | xargs -P "$JOBS" -I{} sh -c '
  o="$0/$(echo "{}" | tr / _).o"
  if [ ! -f "$o" ] || [ "{}" -nt "$o" ]; then '"$CXX ${FLAGS[*]}"' -c "{}" -o "$o" || exit 255; fi' "$OBJ"
LIBS=(-lpng -lturbojpeg -lz -lcrypto)

# Seeds.
seeds() {
  local t=$1 d="$OUT_DIR/$1/seeds"
  mkdir -p "$d"
  case $t in
    safetensors) cp tests/data/safetensors_*.safetensors "$d/" ;;
    image) python3 - "$d" << 'PY'
import sys, numpy as np
from PIL import Image
d = sys.argv[1]
rng = np.random.default_rng(0)
for i, (h, w, mode) in enumerate([(5, 7, "RGB"), (16, 9, "L"), (3, 3, "RGBA"), (12, 20, "P")]):
    a = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    im = Image.fromarray(a).convert(mode)
    im.save(f"{d}/seed{i}.png")
    if mode in ("RGB", "L"):
        im.save(f"{d}/seed{i}.jpg", quality=80)
Image.fromarray(a).save(f"{d}/progressive.jpg", quality=70, progressive=True, subsampling=1)
Image.frombytes("CMYK", (6, 5), bytes(range(120))).save(f"{d}/cmyk.jpg")
Image.frombytes("I;16", (4, 3), bytes(range(24))).save(f"{d}/gray16.png")
PY
      ;;
    idx) python3 - "$d" << 'PY'
import sys, gzip, struct
d = sys.argv[1]
def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", v) for v in dims) + bytes(data)
img = idx([3, 2, 2], range(12)); lab = idx([3], [0, 1, 2])
for i, (a, b) in enumerate([(img, lab), (gzip.compress(img), lab), (img, gzip.compress(lab))]):
    split = (len(a) * 255) // (len(a) + len(b))
    open(f"{d}/seed{i}", "wb").write(bytes([split]) + a + b)
PY
      ;;
    config)
      printf '[optim]\nlr = 0.001\nepochs = 3\n[distill]\nmethod = "mokd"\ntemperature = 2.0\n' > "$d/seed0.toml"
      printf '[model]\nstudent = "deit_tiny_patch16_224"\nteacher = "regnety_160"\n[data]\nbatch_size = 256\n' > "$d/seed1.toml"
      printf '[run]\nprecision = "bf16"\nseed = 7\n[log]\nlog_every = 10\n' > "$d/seed2.toml" ;;
  esac
}

status=0
for t in "${TARGETS[@]}"; do
  echo "== $t: link"
  "$CXX" "${FLAGS[@]/-fsanitize=fuzzer-no-link,address,undefined/-fsanitize=fuzzer,address,undefined}" \
    "fuzz/${t}_fuzz.cpp" "$OBJ"/*.o "${LIBS[@]}" -o "$OUT_DIR/${t}_fuzz"
  seeds "$t"
  mkdir -p "$OUT_DIR/$t/corpus"
  echo "== $t: ${SECONDS_EACH}s"
  (cd "$OUT_DIR/$t" && "$OUT_DIR/${t}_fuzz" -max_len=65536 -max_total_time="$SECONDS_EACH" -timeout=10 \
     -rss_limit_mb=4096 -print_final_stats=1 corpus seeds > log.txt 2>&1) || status=1
  grep -E 'Done [0-9]+ runs|stat::number_of_executed_units|ERROR|SUMMARY' "$OUT_DIR/$t/log.txt" | head -5
  ls "$OUT_DIR/$t"/crash-* "$OUT_DIR/$t"/timeout-* "$OUT_DIR/$t"/oom-* 2> /dev/null && status=1 || true
done
exit $status
