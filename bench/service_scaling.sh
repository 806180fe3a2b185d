#!/usr/bin/env bash
# Wall time of one quantization job through the service with 1 and with N workers on this
# machine (coordinator + workers on loopback, each worker with nproc/N threads).
#   bench/service_scaling.sh [MODEL_DIR CALIB SAMPLES SEQ_LEN] [N=3]
# Defaults: ../shared/models/tinystories-llama-3m with 128 x 256 calibration windows.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath "${1:-../shared/models/tinystories-llama-3m}")
CALIB=$(realpath "${2:-../shared/data/tinystories/calib_128x256.npy}")
SAMPLES=${3:-128}; SEQ=${4:-256}; N=${5:-3}
TMP=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
build/coordinator/dgptq-coordinator --listen 127.0.0.1:0 --port-file "$TMP/port" \
  --metrics-listen "" > "$TMP/coordinator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [[ -s $TMP/port ]] && break; sleep 0.1; done
COORD=127.0.0.1:$(cat "$TMP/port")
started=0
for workers in 1 "$N"; do
  threads=$(( $(nproc) / workers )); (( threads >= 1 )) || threads=1
  while (( started < workers )); do
    build/worker/dgptq-worker --coordinator "$COORD" --name "bench-w$started" --threads $threads \
      --listen "" --metrics-listen "" > "$TMP/worker$started.log" 2>&1 &
    PIDS+=($!); started=$((started + 1))
  done
  t0=$(date +%s.%N)
  build/worker/dgptq submit --coordinator "$COORD" --model "$MODEL" --calib "$CALIB" \
    --samples "$SAMPLES" --seq-len "$SEQ" --group-size 128 --act-order --workers "$workers" \
    --out "$TMP/out$workers" --wait --json > "$TMP/events$workers.jsonl"
  t1=$(date +%s.%N)
  printf '{"bench":"service_scaling","workers":%d,"threads_per_worker":%d,"samples":%d,"seq_len":%d,"seconds":%.2f}\n' \
    "$workers" "$threads" "$SAMPLES" "$SEQ" "$(awk "BEGIN{print $t1 - $t0}")"
done
