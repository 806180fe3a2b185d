#!/usr/bin/env bash
# Installs every build and test dependency on a fresh Debian 12 machine, then
# configures and builds dgptq into ./build. CUDA is used when a toolkit is found
# (nvcc under /usr/local/cuda or on PATH); the CPU build is always complete.
#   scripts/setup.sh            # deps + build
#   DGPTQ_SKIP_APT=1 scripts/setup.sh   # build only
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config python3 python3-grpcio python3-protobuf
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libspdlog-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev liblapacke-dev
  libsentencepiece-dev libsqlite3-dev libssl-dev openssl nlohmann-json3-dev libcli11-dev
  clang libclang-rt-14-dev
  prometheus curl
)
# kubectl (for `kubectl kustomize` in the deploy tests): Debian's kubernetes-client unless
# a kubectl is already installed.
command -v kubectl >/dev/null 2>&1 || PACKAGES+=(kubernetes-client)

if [[ "${DGPTQ_SKIP_APT:-0}" != "1" ]]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

CUDA_ARGS=()
if [[ -x /usr/local/cuda/bin/nvcc ]] || command -v nvcc >/dev/null 2>&1; then
  CUDA_ARGS+=(-DCMAKE_CUDA_ARCHITECTURES="${DGPTQ_CUDA_ARCHS:-80;90}")
else
  CUDA_ARGS+=(-DDGPTQ_WITH_CUDA=OFF)
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${CUDA_ARGS[@]}"
cmake --build build -j "$(nproc)"

# npm packages for the deploy tests' offline Kubernetes schema validation (tests/deploy).
# Installed again only when the lock file changed; without npm, or offline, those tests skip.
if command -v npm >/dev/null 2>&1; then
  lock=tests/deploy/package-lock.json stamp=tests/deploy/node_modules/.dgptq-lock
  if ! cmp -s "$lock" "$stamp"; then
    if npm ci --prefix tests/deploy --no-audit --no-fund; then
      cp "$lock" "$stamp"
    else
      echo "setup: npm ci failed; the deploy_k8s_manifests test will be skipped" >&2
    fi
  fi
fi
