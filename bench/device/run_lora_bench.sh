#!/usr/bin/env bash
# One device call for LoRA on CUDA: the LoRA GPU tests, the kernel bench, decode throughput
# on the random 7B model at batch 32 with 32 distinct rank-16 adapters (PEFT's default
# q_proj,v_proj and all seven projections) against the base model in the same engine, and
# the p99 ITL under adapter loads (run_lora_itl.sh). Run from the repo root with the pack
# of bench/device/pack.sh unpacked in $D (binaries in $D/bin, shared libraries in
# $D/bundle/lib, the sentencepiece plugin in $D/lib); results go to $OUT. STAGES picks the
# parts (tests kernels decode itl).
set -uo pipefail
D=${D:-.device-m}
OUT=${OUT:-/tmp/out}
STAGES=${STAGES:-"tests kernels decode itl"}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$D/bundle/lib:$PWD/$D/lib:/usr/local/cuda/lib64
export TESSERA_SPM_PLUGIN=$PWD/$D/lib/libtessera_spm.so
LOG=$OUT/lora_bench.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOG"
has() { [[ " $STAGES " == *" $1 "* ]]; }

if has tests; then
  # The tests read the default model under the source directory they were built in.
  SRC=$(cat "$D/source_dir")
  [ "$SRC" = "$PWD" ] || { mkdir -p "$SRC" && ln -sfn "$PWD/models" "$SRC/models"; }
  echo "== gpu tests" | tee -a "$LOG"
  for t in cuda_lora_test cuda_lora_engine_test "cuda_quant_test --gtest_filter=*Lora*" decode_graph_test cuda_engine_test; do
    name=${t%% *}
    timeout 120 "$D/bin/"$t > /tmp/test_$name.log 2>&1
    echo "$name exit $?" | tee -a "$LOG"
    grep -E "^\[  (PASSED|FAILED) |^(full|partial|graphs|eager|case)|FAILED|Failure|Expected|Which is|actual" /tmp/test_$name.log | head -30 | tee -a "$LOG"
    cat /tmp/test_$name.log >> "$OUT/lora_tests.log"
  done
fi
if has kernels; then
  echo "== lora kernels" | tee -a "$LOG"
  timeout 100 "$D/bin/cuda_lora_bench" "$OUT/lora_kernels.json" 2>&1 | tee -a "$LOG"
fi
M=/tmp/models/llama2-7b
if has decode || has itl; then
  [ -f $M/config.json ] || "$D/bin/tessera-make-random-model" --shape llama2-7b --out $M --tokenizer tests/data/llama2-tokenizer/tokenizer.model 2>&1 | tail -1 | tee -a "$LOG"
fi
if has decode; then
  echo "== decode, batch 32, 32 adapters" | tee -a "$LOG"
  for targets in q_proj,v_proj q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj; do
    rm -rf /tmp/adapters
    "$D/bin/tessera-make-random-adapter" --model $M --out /tmp/adapters --count 32 --rank 16 --alpha 32 --targets $targets 2>&1 | tail -1 | tee -a "$LOG"
    tag=$([ $targets = q_proj,v_proj ] && echo qv || echo all)
    timeout 150 "$D/bin/tessera-bench-decode" --model $M --shape llama2-7b --device cuda --batches ${BATCHES:-32} \
      --prompt-len 128 --new-tokens ${NEW_TOKENS:-256} --lora-dir /tmp/adapters --num-adapters 32 --max-lora-rank 16 \
      --out "$OUT/lora_decode_$tag.json" 2>&1 | grep -v "^loaded" | tee -a "$LOG"
  done
  rm -rf /tmp/adapters
fi
if has itl; then
  echo "== p99 ITL under adapter loads" | tee -a "$LOG"
  M=$M D=$D OUT=$OUT timeout 200 bash "$(dirname "$0")/run_lora_itl.sh" 2>&1 | tee -a "$LOG"
fi
echo "== done" | tee -a "$LOG"
