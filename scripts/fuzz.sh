#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan) in build-fuzz/ and runs
# each one for SECONDS (default 600) in parallel, at the lowest priority (nice 19).
#
#   scripts/fuzz.sh [SECONDS]          # e.g. scripts/fuzz.sh 3600 for an hour each
#   TARGETS="fuzz_npy fuzz_job_spec" scripts/fuzz.sh 60
#
# The build is the standalone fuzz/ project (abseil, nlohmann-json and protobuf; not the
# CUDA/BLAS parts); the top-level build makes the same targets in build/fuzz for its short
# ctest runs. Each target runs through fuzz/run.sh: seeds are read from
# fuzz/corpus/<target>/ (never written); new inputs go to build-fuzz/corpus/<target>/,
# crash inputs to build-fuzz/artifacts/<target>/ and the logs to build-fuzz/<target>.log.
# Copy a crash input into fuzz/corpus/<target>/ once it is fixed: the corpus replay of
# common_tests / coordinator_tests keeps it as a regression test.
# Exit status: 0 when no target crashed.
set -euo pipefail

seconds="${1:-600}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${root}/build-fuzz"
targets=(fuzz_safetensors_header fuzz_model_config fuzz_npy fuzz_tokenizer fuzz_calibration
  fuzz_job_spec)
if [[ -n "${TARGETS:-}" ]]; then read -r -a targets <<<"${TARGETS}"; fi

cmake -S "${root}/fuzz" -B "${build}" -G Ninja \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "${build}" -j "${JOBS:-2}"

pids=()
for t in "${targets[@]}"; do
  "${root}/fuzz/run.sh" "${build}" "${t}" "${seconds}" "${build}" >"${build}/${t}.log" 2>&1 &
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
