#!/usr/bin/env bash
# Collects built binaries and the non-CUDA shared libraries they need into
# device-pack/ (git-ignored), for running on a GPU machine that lacks Debian's
# libraries. Usage: scripts/device_pack.sh BIN...
set -euo pipefail
cd "$(dirname "$0")/.."
out=device-pack
rm -rf "$out" && mkdir -p "$out/lib" "$out/bin"
for b in "$@"; do
  cp "$b" "$out/bin/" && strip "$out/bin/$(basename "$b")"
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libcuda.so*|libcudart*|libcublas*|libnccl*|libcusolver*|libcusparse*|libnvJitLink*|libc.so*|libm.so*|libstdc++*|libgcc_s*|libpthread*|libdl.so*|librt.so*|ld-linux*) ;;
      *) cp -Ln "$lib" "$out/lib/" 2>/dev/null || true ;;
    esac
  done
done
du -sh "$out"
