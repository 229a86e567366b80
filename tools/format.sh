#!/usr/bin/env bash
# Formats the C++ and CUDA sources with clang-format and the repository's .clang-format
# (Google style, 100 columns).
#
#   bash tools/format.sh            # rewrite every tracked .h/.cpp/.cu/.cuh in place
#   bash tools/format.sh --check    # list the files that would change; exit 1 if any
#   bash tools/format.sh FILE...    # only these files
# Needs clang-format (Debian: clang-format); CLANG_FORMAT picks another binary.
set -euo pipefail
cd "$(dirname "$0")/.."
CF=${CLANG_FORMAT:-$(command -v clang-format || command -v clang-format-14 || true)}
[ -n "$CF" ] || { echo "format.sh: clang-format not found (apt-get install clang-format)" >&2; exit 2; }
check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
if [ $# -gt 0 ]; then files=("$@"); else
  mapfile -t files < <(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')
fi
if [ $check = 1 ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! "$CF" --style=file "$f" | cmp -s - "$f"; then echo "$f"; bad=1; fi
  done
  exit $bad
fi
"$CF" --style=file -i "${files[@]}"
