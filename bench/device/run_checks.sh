#!/usr/bin/env bash
# One device call: the GPU tests, `tessera generate --device cuda` (graphs and eager),
# the Hugging Face comparison and a short TinyLlama decode bench. Run from the repo root
# with the bundle in $D (binaries in $D/bin, shared libraries in $D/bundle/lib, the
# sentencepiece plugin in $D/lib, the default model in $D/models); results go to $OUT.
set -uo pipefail
D=${D:-.device-ce}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$D/bundle/lib:$PWD/$D/lib:/usr/local/cuda/lib64
export TESSERA_SPM_PLUGIN=$PWD/$D/lib/libtessera_spm.so
export TESSERA_DEFAULT_MODEL=$PWD/$D/models/stories260k
# The tests read the default model under the source directory they were built in.
SRC=$(cat "$D/source_dir")
mkdir -p "$SRC/tests/data" && ln -sfn "$PWD/$D/models" "$SRC/models"
ln -sfn "$PWD/$D/llama2-tokenizer" "$SRC/tests/data/llama2-tokenizer"
LOG=$OUT/checks.log
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$LOG"

echo "== gpu tests" | tee -a "$LOG"
for t in cuda_ops_test sample_tokens_test decode_graph_test cuda_engine_test; do
  "$D/bin/$t" > "$OUT/test_$t.log" 2>&1
  echo "$t exit $?" | tee -a "$LOG"
  grep -E "^\[  (PASSED|FAILED) |^case |FAILED|Failure|Expected|Which is|actual" "$OUT/test_$t.log" | head -40 | tee -a "$LOG"
done

echo "== tessera generate --device cuda" | tee -a "$LOG"
for flags in "" "--enforce-eager"; do
  "$D/bin/tessera" generate --device cuda --prompt "Once upon a time" --max-tokens 48 --temperature 0 --json $flags 2>&1 | tee -a "$LOG"
  "$D/bin/tessera" generate --device cuda --prompt "Lily and Ben" --max-tokens 32 --temperature 0.8 --top-p 0.9 --seed 7 $flags 2>&1 | tee -a "$LOG"
done

echo "== hf compare" | tee -a "$LOG"
PYTHONUNBUFFERED=1 timeout 300 python3 "$D/scripts/hf_compare.py" --logits-bin "$D/bin/tessera-logits" --workdir /tmp/hfc \
  --out "$OUT/hf_compare.json" --runs "${HF_RUNS:-22:0.02,22:0.08,4:0.02}" 2>&1 | grep -v Warning | tail -20 | tee -a "$LOG"

echo "== tinyllama decode (short)" | tee -a "$LOG"
"$D/bin/tessera-make-random-model" --shape tinyllama --out /tmp/tinyllama > /dev/null 2>&1
for flags in "" "--enforce-eager"; do
  timeout 120 "$D/bin/tessera-bench-decode" --model /tmp/tinyllama --shape tinyllama --device cuda --batches 1,8 \
    --new-tokens 128 $flags 2>&1 | tee -a "$LOG"
done
echo "== done" | tee -a "$LOG"
