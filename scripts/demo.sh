#!/usr/bin/env bash
# The main job on this machine: start a coordinator and two worker daemons on loopback,
# submit a quantization job (GPTQ w4g128, act-order) to them with `dgptq submit --wait`,
# and report the perplexity of the original and the quantized model.
#   With ../shared present: tinystories-llama-3m, calibrated on its training text.
#   Without it: a synthetic model from `dgptq make-model`, calibrated on license text.
# Usage: scripts/demo.sh [OUT_DIR]   (DEVICE=cuda to use GPUs (GPUS=count), WORKERS=N ranks)
set -euo pipefail
cd "$(dirname "$0")/.."
DGPTQ=build/worker/dgptq
OUT=${1:-/tmp/dgptq-demo}
DEVICE=${DEVICE:-cpu}
WORKERS=${WORKERS:-2}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
SHARED=../shared
if [[ -d $SHARED/models/tinystories-llama-3m ]]; then
  MODEL=$SHARED/models/tinystories-llama-3m
  CALIB=$SHARED/data/tinystories/calib_128x256.npy
  EVAL=$SHARED/data/tinystories/eval_windows_256.npy
  SAMPLES=128; SEQ=256
else
  MODEL=$OUT/model
  [[ -f $MODEL/config.json ]] || $DGPTQ make-model --out "$MODEL" --hidden 256 --layers 4 \
      --heads 8 --kv-heads 4 --intermediate 768 --vocab 512
  CALIB=$OUT/calib.txt
  cat /usr/share/common-licenses/* > "$CALIB" 2>/dev/null || yes "dgptq calibration text" | head -c 200000 > "$CALIB"
  EVAL=$CALIB
  SAMPLES=32; SEQ=256
fi
MODEL=$(realpath "$MODEL"); CALIB=$(realpath "$CALIB")

# The service: a coordinator and $WORKERS workers, each worker with its share of the cores.
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
rm -f "$OUT/coordinator.port"
build/coordinator/dgptq-coordinator --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --port-file "$OUT/coordinator.port" \
  > "$OUT/coordinator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [[ -s $OUT/coordinator.port ]] && break; sleep 0.1; done
COORD=127.0.0.1:$(cat "$OUT/coordinator.port")
THREADS=$(( $(nproc) / WORKERS )); (( THREADS >= 1 )) || THREADS=1
for i in $(seq 0 $((WORKERS - 1))); do
  build/worker/dgptq-worker --coordinator "$COORD" --name "demo-w$i" --device "$DEVICE" \
    --gpu $((i % ${GPUS:-1})) --threads $THREADS --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
    > "$OUT/worker$i.log" 2>&1 &
  PIDS+=($!)
done
echo "coordinator $COORD, $WORKERS workers (logs in $OUT)"
$DGPTQ submit --coordinator "$COORD" --model "$MODEL" --calib "$CALIB" --samples $SAMPLES \
  --seq-len $SEQ --bits 4 --group-size 128 --act-order --workers $WORKERS \
  --out "$OUT/quantized" --overwrite --wait --json > "$OUT/events.jsonl"
echo "job events: $OUT/events.jsonl"
$DGPTQ eval --model "$MODEL" --data "$EVAL" --seq-len $SEQ --device "$DEVICE"
$DGPTQ eval --model "$OUT/quantized" --data "$EVAL" --seq-len $SEQ --device "$DEVICE"
