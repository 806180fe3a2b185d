#!/usr/bin/env bash
# End-to-end benchmark (issue 7): quantize a model of a published shape with
# `dgptq quantize`, GPTQ w4g128 act-order on SAMPLES x SEQ random calibration tokens, and
# print wall time per phase, the total, peak device memory and peak host RSS. Figures, not
# a test. The model is made once with `dgptq make-model` (random bf16 weights of the
# shape) and cached.
#   bench/e2e.sh                         # Llama-3-8B shape on the GPU
#   SHAPE=70b LAYERS=4 bench/e2e.sh      # a 70B-shaped model cut to 4 layers (memory check)
#   SHAPE=small DEVICE=cpu bench/e2e.sh  # the harness itself, on any machine
# Environment: SHAPE 8b|70b|small, DEVICE cuda|cpu, LAYERS (default: the shape's),
# SAMPLES (128), SEQ (2048), CACHE (~/.cache/dgptq-bench), COLD=1 evicts the model's files
# from the page cache first (a first read from disk), REPORT=FILE keeps the JSON report,
# EXTRA adds flags to `dgptq quantize` (e.g. --no-prefetch).
set -euo pipefail
cd "$(dirname "$0")/.."
DGPTQ=${DGPTQ:-build/worker/dgptq}
SHAPE=${SHAPE:-8b}
DEVICE=${DEVICE:-cuda}
SAMPLES=${SAMPLES:-128}
SEQ=${SEQ:-2048}
CACHE=${CACHE:-$HOME/.cache/dgptq-bench}
case $SHAPE in
  8b)    DIMS=(--hidden 4096 --heads 32 --kv-heads 8 --intermediate 14336 --vocab 128256); L=32 ;;
  70b)   DIMS=(--hidden 8192 --heads 64 --kv-heads 8 --intermediate 28672 --vocab 128256); L=80 ;;
  small) DIMS=(--hidden 512 --heads 8 --kv-heads 4 --intermediate 1408 --vocab 4096); L=4
         SAMPLES=${SAMPLES_SMALL:-16}; SEQ=${SEQ_SMALL:-256} ;;
  *) echo "SHAPE must be 8b, 70b or small, got '$SHAPE'" >&2; exit 2 ;;
esac
LAYERS=${LAYERS:-$L}
MODEL=$CACHE/llama-$SHAPE-$LAYERS
CALIB=$CACHE/calib-$SHAPE-${SAMPLES}x$SEQ.jsonl
OUT=$CACHE/out-$SHAPE-$LAYERS
mkdir -p "$CACHE"
if [[ ! -f $MODEL/config.json ]]; then
  echo "making $MODEL" >&2
  $DGPTQ make-model --arch llama --out "$MODEL.tmp" "${DIMS[@]}" --layers "$LAYERS" \
      --max-position $((SEQ > 8192 ? SEQ : 8192)) --dtype bf16 >&2
  mv "$MODEL.tmp" "$MODEL"
fi
VOCAB=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$MODEL/config.json")
if [[ ! -f $CALIB ]]; then
  python3 - "$CALIB" "$SAMPLES" "$SEQ" "$VOCAB" <<'PY'
import json, random, sys
path, n, seq, vocab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(0)
with open(path, "w") as f:
    for _ in range(n):
        f.write(json.dumps([rng.randrange(vocab) for _ in range(seq)]) + "\n")
PY
fi
if [[ ${COLD:-0} == 1 ]]; then
  for f in "$MODEL"/*.safetensors; do dd if="$f" iflag=nocache count=0 status=none; done
fi
REPORT=${REPORT:-$CACHE/report-$SHAPE-$LAYERS-$DEVICE.json}
$DGPTQ quantize --model "$MODEL" --calib "$CALIB" --samples "$SAMPLES" --seq-len "$SEQ" \
    --bits 4 --group-size 128 --act-order --format gptq --device "$DEVICE" \
    --out "$OUT" --overwrite ${EXTRA:-} 2>/dev/null | tail -n 1 > "$REPORT"
python3 - "$REPORT" "$SHAPE" "$LAYERS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ph = r["phase_seconds"]
print(f"shape {sys.argv[2]}, {sys.argv[3]} layers, {r['samples']} x {r['seq_len']} tokens, "
      f"device {r['device']}")
print(f"{'phase':<12}{'seconds':>10}{'share':>8}")
for name in ["calibration", "load", "forward", "hessian", "quantize", "propagate", "write"]:
    if name in ph:
        print(f"{name:<12}{ph[name]:>10.2f}{100 * ph[name] / r['total_seconds']:>7.1f}%")
print(f"{'total':<12}{r['total_seconds']:>10.2f}")
print(f"peak device memory {r['peak_device_bytes'] / 2**30:.2f} GiB, "
      f"peak host RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB")
PY
