#!/usr/bin/env bash
# One device call's decode part for GPTQ int4: batch-1 decode (prompt 128 -> 256 new
# tokens) of a random-weight Llama-2-7B-shape GPTQ checkpoint (4-bit, group 128, written by
# tessera-make-random-model --gptq-bits, never carried) and, with BF16=1, of the bf16 model
# of the same shape, each against the roofline the bench measures in the same run.
# Run from a folder holding tessera-make-random-model, tessera-bench-decode and lib/;
# results go to $OUT.
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
M=/tmp/models
mkdir -p $M
LOG=$OUT/decode.log
B="./tessera-bench-decode --device cuda --shape llama2-7b --batches 1 --prompt-len 128 --new-tokens 256"
./tessera-make-random-model --shape llama2-7b --gptq-bits 4 --group-size 128 --out $M/gptq 2>&1 | tail -1 | tee -a "$LOG"
timeout 90 $B --model $M/gptq --out "$OUT/decode_gptq_int4_7b.json" 2>&1 | tee -a "$LOG"
rm -rf $M/gptq
if [ "${BF16:-0}" = 1 ]; then
  ./tessera-make-random-model --shape llama2-7b --out $M/bf16 2>&1 | tail -1 | tee -a "$LOG"
  timeout 90 $B --model $M/bf16 --out "$OUT/decode_bf16_7b.json" 2>&1 | tee -a "$LOG"
  rm -rf $M/bf16
fi
