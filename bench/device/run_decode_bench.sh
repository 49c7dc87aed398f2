#!/usr/bin/env bash
# One device call: decode throughput of tessera (bf16, prompt 128 -> 256 new tokens) on
# random-weight TinyLlama and Llama-2-7B shapes, generated here with
# tessera-make-random-model (never carried), against the copy-bandwidth roofline measured
# by the bench itself, and Hugging Face generate (eager; static cache + torch.compile) on
# the same shapes. Run from the repo root with the bundle in $D; results go to $OUT.
# HF=0 skips Hugging Face; KEEP_MODELS=1 leaves the generated models in /tmp/models.
set -uo pipefail
D=${D:-.device-ce}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$D/bundle/lib:$PWD/$D/lib:/usr/local/cuda/lib64
LOG=$OUT/decode_bench.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOG"
echo "== skinny gemm vs cuBLASLt" | tee -a "$LOG"
"$D/bin/cuda_kernels_bench" "$OUT/kernels_gemv.json" gemv 2>&1 | tee -a "$LOG"
M=/tmp/models
mkdir -p $M
for shape in tinyllama llama2-7b; do
  "$D/bin/tessera-make-random-model" --shape $shape --out $M/$shape 2>&1 | tail -1 | tee -a "$LOG"
done

B="$D/bin/tessera-bench-decode --device cuda --prompt-len 128 --new-tokens 256"
echo "== tessera" | tee -a "$LOG"
$B --model $M/tinyllama --shape tinyllama --batches 1 --out "$OUT/tessera_tinyllama.json" 2>&1 | tee -a "$LOG"
$B --model $M/llama2-7b --shape llama2-7b --batches 1,8,32,128,256 --out "$OUT/tessera_llama2-7b.json" 2>&1 | tee -a "$LOG"
$B --model $M/llama2-7b --shape llama2-7b --batches 1 --enforce-eager --out "$OUT/tessera_llama2-7b_eager.json" 2>&1 | tee -a "$LOG"
[ "${KEEP_MODELS:-0}" = 1 ] || rm -rf $M  # the HF runs build their own models in GPU memory

[ "${HF:-1}" = 1 ] || exit 0
echo "== hugging face generate" | tee -a "$LOG"
: > "$OUT/hf_generate.jsonl"
for run in "tinyllama eager" "tinyllama compile" "llama2-7b eager" "llama2-7b compile"; do
  set -- $run
  PYTHONUNBUFFERED=1 timeout ${HF_TIMEOUT:-240} python3 "$D/scripts/hf_generate_bench.py" --shape $1 --mode $2 --batch 1 \
    --out /tmp/hf.json > /tmp/hf.log 2>&1 && cat /tmp/hf.json >> "$OUT/hf_generate.jsonl" && echo >> "$OUT/hf_generate.jsonl"
  tail -1 /tmp/hf.log | tee -a "$LOG"
done
echo "== done" | tee -a "$LOG"
