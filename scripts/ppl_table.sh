#!/usr/bin/env bash
# Perplexity table for the README: FP / RTN / GPTQ at 4 and 3 bits (group 128), act-order
# off and on, for each model in ../shared/models; calibration on the first 128 windows of
# the training part, evaluation on all 614 held-out windows (disjoint).
# Usage: scripts/ppl_table.sh [DEVICE]   -> markdown rows on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cpu}
DGPTQ=build/worker/dgptq
DATA=../shared/data/tinystories
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
ppl() { $DGPTQ eval --model "$1" --data $DATA/eval_windows_256.npy --seq-len 256 --batch 64 \
          --device "$DEVICE" | sed -E 's/.*"perplexity":([0-9.]+).*/\1/'; }
echo "| model | FP | w4 RTN | w4 GPTQ | w4 GPTQ act-order | w3 RTN | w3 GPTQ | w3 GPTQ act-order |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for m in stories260k-llama tinystories-llama-3m; do
  M=../shared/models/$m
  row="| $m | $(ppl $M)"
  for bits in 4 3; do
    for mode in rtn gptq act; do
      flags="--bits $bits --group-size 128 --format dequantized --device $DEVICE"
      case $mode in rtn) flags="$flags --rtn";; act) flags="$flags --act-order";; esac
      out=$TMP/$m-$bits-$mode
      $DGPTQ quantize --model $M --calib $DATA/calib_128x256.npy --samples 128 --seq-len 256 \
        $flags --out $out > $TMP/report.json 2>/dev/null
      row="$row | $(ppl $out)"
    done
  done
  echo "$row |"
done
