#!/usr/bin/env bash
# Installs the Debian packages mokd builds and tests with (skips apt when all are present).
# The CUDA toolkit is optional: with it (nvcc in /usr/local/cuda), the CUDA backend compiles too.
set -euo pipefail
PKGS=(cmake ninja-build g++ ccache libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev
      nlohmann-json3-dev libcli11-dev libtomlplusplus-dev zlib1g-dev libpng-dev libturbojpeg0-dev
      libssl-dev openmpi-bin libopenmpi-dev
      dataset-fashion-mnist python3)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
