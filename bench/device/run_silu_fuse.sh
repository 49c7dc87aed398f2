#!/usr/bin/env bash
# One device call for the fused SiluMul + down projection (SiluMulMatmul): its GPU tests and
# the int4 / engine / graph tests around it, the kernel bench case (SiluMul + int4 down
# against the fused call, same run), then batch-1 decode of random-weight Llama-2-7B-shape
# models, GPTQ int4 and bf16, each with the fusion on and off (TESSERA_FUSE_SILU_DOWN=0).
# Run from the repo root after unpacking a bench/device/pack.sh folder D (default
# .device-s) holding cuda_silu_matmul_test cuda_quant_test cuda_engine_test
# decode_graph_test cuda_lora_engine_test cuda_quant_bench tessera-bench-decode
# tessera-make-random-model; results go to $OUT. BF16=0 skips the bf16 model.
set -uo pipefail
D=${D:-.device-s}
OUT=${OUT:-/tmp/out}
B=$D/bin
mkdir -p "$OUT"
nvidia-smi -L
LOG=$OUT/gpu_tests.log
: > "$LOG"
for t in cuda_silu_matmul_test cuda_quant_test cuda_engine_test decode_graph_test cuda_lora_engine_test; do
  timeout 90 "$B/$t" > /tmp/$t.log 2>&1
  rc=$?
  cat /tmp/$t.log >> "$LOG"
  echo "$t rc=$rc $(grep -E '^\[  (PASSED|FAILED) ' /tmp/$t.log | tr '\n' ' ')"
  grep -E -A3 "FAILED  \]|Failure" /tmp/$t.log | head -12
done
TESSERA_QUANT_CASES=silu timeout 60 "$B/cuda_quant_bench" "$OUT/silu_fuse_kernel.json" > "$OUT/silu_fuse_kernel.txt" 2>&1
echo "cuda_quant_bench rc=$?"; tail -8 "$OUT/silu_fuse_kernel.txt"
TOK=tests/data/llama2-tokenizer/tokenizer.model
BENCH="$B/tessera-bench-decode --device cuda --shape llama2-7b --prompt-len 128 --new-tokens 256 --batches 1"
decode() {  # name model-dir
  for fuse in 1 0; do
    TESSERA_FUSE_SILU_DOWN=$fuse timeout 75 $BENCH --model "$2" --out "$OUT/decode_$1_fuse$fuse.json" \
      > "$OUT/decode_$1_fuse$fuse.txt" 2>&1
    echo "$1 fuse=$fuse rc=$?: $(grep -E 'batch +1:' "$OUT/decode_$1_fuse$fuse.txt")"
  done
}
timeout 90 "$B/tessera-make-random-model" --shape llama2-7b --gptq-bits 4 --group-size 128 --out /tmp/g \
  --tokenizer "$TOK" 2>&1 | tail -1
decode gptq_int4_7b /tmp/g
rm -rf /tmp/g
[ "${BF16:-1}" = 1 ] || exit 0
timeout 90 "$B/tessera-make-random-model" --shape llama2-7b --out /tmp/m --tokenizer "$TOK" 2>&1 | tail -1
decode bf16_7b /tmp/m
rm -rf /tmp/m
