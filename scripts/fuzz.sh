#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan) in build-fuzz/ and runs
# each one for SECONDS (default 600) in parallel, at low priority.
#
#   scripts/fuzz.sh [SECONDS]
#
# The build is the standalone fuzz/ project (it needs only abseil and nlohmann-json,
# not the CUDA/BLAS parts); `-DDGPTQ_FUZZ=ON` on the top-level project builds the same
# targets. Seeds are read from fuzz/corpus/<target>/ (never written); new inputs go to
# build-fuzz/corpus/<target>/, crash inputs to build-fuzz/artifacts/<target>/ and the
# logs to build-fuzz/<target>.log. Copy a crash input into fuzz/corpus/<target>/ once
# it is fixed: the common_tests replay keeps it as a regression test.
# Exit status: 0 when no target crashed.
set -euo pipefail

seconds="${1:-600}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${root}/build-fuzz"
targets=(fuzz_safetensors_header fuzz_model_config fuzz_npy)

cmake -S "${root}/fuzz" -B "${build}" -G Ninja \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "${build}" -j "${JOBS:-2}"

pids=()
for t in "${targets[@]}"; do
  mkdir -p "${build}/corpus/${t}" "${build}/artifacts/${t}"
  nice -n 10 "${build}/${t}" -max_total_time="${seconds}" -print_final_stats=1 \
    -dict="${root}/fuzz/json.dict" -artifact_prefix="${build}/artifacts/${t}/" \
    "${build}/corpus/${t}" "${root}/fuzz/corpus/${t}" >"${build}/${t}.log" 2>&1 &
  pids+=($!)
done

status=0
for i in "${!targets[@]}"; do
  if wait "${pids[$i]}"; then
    result="ok"
  else
    result="CRASH (see ${build}/${targets[$i]}.log and ${build}/artifacts/${targets[$i]}/)"
    status=1
  fi
  stats="$(grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units)' "${build}/${targets[$i]}.log" |
    tail -2 | tr '\n' ' ')"
  echo "${targets[$i]}: ${result} ${stats}"
done
exit "${status}"
