#!/usr/bin/env bash
# Runs one libFuzzer target of fuzz/ for SECONDS at the lowest priority, on the seeds of
# fuzz/corpus/TARGET (read, never written) and the inputs it found before.
#
#   fuzz/run.sh BIN_DIR TARGET SECONDS WORK_DIR [libFuzzer flags...]
#
# New inputs go to WORK_DIR/corpus/TARGET, crash inputs to WORK_DIR/artifacts/TARGET/.
# scripts/fuzz.sh runs every target with it for long; the fuzz_<target>_short ctest entries
# (tests/fuzz) for a few seconds on a fresh WORK_DIR. Exit status: libFuzzer's (0: no crash).
set -euo pipefail

if (($# < 4)); then
  echo "usage: $0 BIN_DIR TARGET SECONDS WORK_DIR [libFuzzer flags...]" >&2
  exit 2
fi
bin="$1" target="$2" seconds="$3" work="$4"
shift 4
fuzz_dir="$(cd "$(dirname "$0")" && pwd)"

case "${target}" in
  fuzz_safetensors_header | fuzz_model_config | fuzz_calibration) dict="${fuzz_dir}/json.dict" ;;
  fuzz_npy) dict="${fuzz_dir}/npy.dict" ;;
  fuzz_tokenizer) dict="${fuzz_dir}/tokenizer.dict" ;;
  *) dict="" ;;  # fuzz_job_spec: protobuf wire bytes
esac

mkdir -p "${work}/corpus/${target}" "${work}/artifacts/${target}"
exec nice -n 19 "${bin}/${target}" -max_total_time="${seconds}" -timeout=30 -print_final_stats=1 \
  ${dict:+-dict="${dict}"} -artifact_prefix="${work}/artifacts/${target}/" "$@" \
  "${work}/corpus/${target}" "${fuzz_dir}/corpus/${target}"
