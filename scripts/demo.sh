#!/usr/bin/env bash
# The main job on this machine: quantize a model (GPTQ w4g128, act-order) and report
# the perplexity of the original and the quantized model.
#   With ../shared present: tinystories-llama-3m, calibrated on its training text.
#   Without it: a synthetic model from `dgptq make-model`, calibrated on license text.
# Usage: scripts/demo.sh [OUT_DIR]   (DEVICE=cuda to use a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
DGPTQ=build/worker/dgptq
OUT=${1:-/tmp/dgptq-demo}
DEVICE=${DEVICE:-cpu}
mkdir -p "$OUT"
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
$DGPTQ quantize --model "$MODEL" --calib "$CALIB" --samples $SAMPLES --seq-len $SEQ \
  --bits 4 --group-size 128 --act-order --device "$DEVICE" --out "$OUT/quantized" --overwrite \
  > "$OUT/report.json"
echo "report: $OUT/report.json"
$DGPTQ eval --model "$MODEL" --data "$EVAL" --seq-len $SEQ --device "$DEVICE"
$DGPTQ eval --model "$OUT/quantized" --data "$EVAL" --seq-len $SEQ --device "$DEVICE"
