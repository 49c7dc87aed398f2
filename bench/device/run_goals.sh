#!/usr/bin/env bash
# Re-measures the open speed goals and runs the GPU tests, from the repo root with the pack
# of bench/device/pack.sh unpacked in $D. The pack needs the GPU test binaries (*_test),
# tessera, tessera-loadgen, tessera-bench-decode, tessera-make-random-model,
# tessera-make-random-adapter, cuda_kernels_bench, cuda_quant_bench and cuda_lora_bench.
# STAGES picks the parts (PDL_COMPARE=1 adds a decode run with TESSERA_CUDA_PDL=0); all of
# them take longer than one 10-minute call, so run
#   STAGES="tests kernels decode serve"   then   STAGES="lora".
# The log goes to $OUT/goals.log and every JSON into $OUT/goals_json.tar (a call returns
# at most 8 files).
set -uo pipefail
D=${D:-.device-m}
OUT=${OUT:-/tmp/out}
STAGES=${STAGES:-"tests kernels decode serve"}
J=/tmp/goals_json
M=/tmp/models
mkdir -p "$OUT" "$J" "$M"
export LD_LIBRARY_PATH=$PWD/$D/bundle/lib:/usr/local/cuda/lib64
export TESSERA_SPM_PLUGIN=$PWD/$D/lib/libtessera_spm.so
LOG=$OUT/goals.log
has() { [[ " $STAGES " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOG"
# The tests read the default model and test data under the source tree they were built in.
SRC=$(cat "$D/source_dir" 2>/dev/null || pwd)
if [ "$SRC" != "$PWD" ]; then
  mkdir -p "$SRC" && ln -sfn "$PWD/models" "$SRC/models" && ln -sfn "$PWD/tests" "$SRC/tests"
fi
TOK=tests/data/llama2-tokenizer/tokenizer.model

if has tests; then
  echo "== gpu tests" | tee -a "$LOG"
  for t in "$D"/bin/*_test; do
    (timeout 150 "$t" > "/tmp/$(basename "$t").log" 2>&1; echo "$(basename "$t") exit $?" > "/tmp/$(basename "$t").rc") &
  done
  wait
  for t in "$D"/bin/*_test; do
    n=$(basename "$t")
    cat "/tmp/$n.rc" | tee -a "$LOG"
    grep -E "^\[  (PASSED|FAILED) |Failure" "/tmp/$n.log" | head -10 | tee -a "$LOG"
  done
fi
if has kernels; then
  echo "== kernels" | tee -a "$LOG"
  timeout 120 "$D/bin/cuda_kernels_bench" "$J/kernels.json" attention,gemv 2>&1 | tee -a "$LOG"
  timeout 120 "$D/bin/cuda_quant_bench" "$J/quant.json" 2>&1 | tee -a "$LOG"
  timeout 100 "$D/bin/cuda_lora_bench" "$J/lora_kernels.json" 2>&1 | tee -a "$LOG"
fi
if has decode || has serve; then
  [ -f $M/llama2-7b/config.json ] ||
    "$D/bin/tessera-make-random-model" --shape llama2-7b --out $M/llama2-7b --tokenizer $TOK 2>&1 | tail -1 | tee -a "$LOG"
fi
if has decode; then
  echo "== decode (prompt 128 -> 256 new tokens)" | tee -a "$LOG"
  B="$D/bin/tessera-bench-decode --device cuda --prompt-len 128 --new-tokens 256"
  timeout 200 $B --model $M/llama2-7b --shape llama2-7b --batches 1,32,256 --out "$J/decode_7b_bf16.json" 2>&1 |
    grep -v "^loaded" | tee -a "$LOG"
  if [ "${PDL_COMPARE:-0}" = 1 ]; then  # the same without programmatic dependent launches
    echo "== decode, TESSERA_CUDA_PDL=0" | tee -a "$LOG"
    TESSERA_CUDA_PDL=0 timeout 200 $B --model $M/llama2-7b --shape llama2-7b --batches 1,256 \
      --out "$J/decode_7b_bf16_nopdl.json" 2>&1 | grep -v "^loaded" | tee -a "$LOG"
  fi
  "$D/bin/tessera-make-random-model" --shape llama2-7b --gptq-bits 4 --group-size 128 --out $M/gptq 2>&1 | tail -1 | tee -a "$LOG"
  timeout 90 $B --model $M/gptq --shape llama2-7b --batches 1 --out "$J/decode_7b_gptq_int4.json" 2>&1 |
    grep -v "^loaded" | tee -a "$LOG"
  rm -rf $M/gptq
  "$D/bin/tessera-make-random-model" --shape tinyllama --out $M/tinyllama 2>&1 | tail -1 | tee -a "$LOG"
  timeout 90 $B --model $M/tinyllama --shape tinyllama --batches 1 --out "$J/decode_tinyllama_bf16.json" 2>&1 |
    grep -v "^loaded" | tee -a "$LOG"
  rm -rf $M/tinyllama
fi
if has serve; then
  echo "== serving (drift monitoring on)" | tee -a "$LOG"
  D=$D OUT=$J MODEL=$M/llama2-7b CONCURRENCY=${CONCURRENCY:-256} timeout 200 bash "$(dirname "$0")/run_serve_bench.sh" 2>&1 |
    tee -a "$LOG"
fi
if has lora; then
  echo "== lora" | tee -a "$LOG"
  D=$D OUT=$J STAGES="decode itl" timeout 560 bash "$(dirname "$0")/run_lora_bench.sh" 2>&1 | tail -40 | tee -a "$LOG"
fi
tar -C "$J" -cf "$OUT/goals_json.tar" .
echo "== done: $(ls "$J" | wc -l) result files in goals_json.tar" | tee -a "$LOG"
