#!/usr/bin/env bash
# runtime-packages.sh FILE...: the Debian/Ubuntu packages that own the shared libraries the
# given executables and modules load (ldd), one per line, sorted. The image builds run it in
# the build stage and apt-get install its output in the final stage (same distribution), so
# the final image gets exactly the libraries the binaries were linked against, whatever the
# distribution names them. Left out: libraries under /usr/local/cuda* and CUDA's own
# packages (the CUDA runtime base image has them). Exit 1 if a library is missing, no
# package owns it, or a file is not a dynamic ELF.
set -euo pipefail
status=0
declare -A owner=()
real=()
while read -r name path; do
  if [[ "$path" != /* ]]; then echo "runtime-packages: $name: $path" >&2; status=1; continue; fi
  p=$(readlink -f "$path")
  [[ "$p" == /usr/local/cuda* ]] || real+=("$p")
done < <(for f in "$@"; do ldd "$f" || echo "$f => not-a-dynamic-ELF"; done |
         awk '$2 == "=>" { print $1, $3 }' | sort -u)
# One dpkg query for all (it is slow per call). Merged /usr: dpkg may know a file under /lib
# or /usr/lib, so ask for both spellings. Output lines: "pkg[:arch][, pkg2...]: /path".
candidates=()
for p in "${real[@]}"; do candidates+=("$p" "${p#/usr}" "/usr$p"); done
while IFS= read -r line; do
  owner["${line#*: }"]=$(cut -d, -f1 <<< "${line%%: /*}" | cut -d: -f1)
done < <(((${#candidates[@]})) && dpkg -S "${candidates[@]}" 2>/dev/null | grep -v '^diversion' || true)
packages=()
for p in "${real[@]}"; do
  pkg=${owner[$p]:-${owner[${p#/usr}]:-${owner[/usr$p]:-}}}
  if [[ -n "$pkg" ]]; then packages+=("$pkg"); else
    echo "runtime-packages: no package owns $p" >&2; status=1
  fi
done
printf '%s\n' "${packages[@]}" | grep . | sort -u |
  grep -Ev '^(cuda-|libcublas|libcusolver|libcusparse|libcufft|libcurand|libnvjitlink|libnccl|libnpp|libnvjpeg|libcudnn)' || true
exit "$status"
