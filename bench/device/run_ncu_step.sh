#!/usr/bin/env bash
# Nsight Compute account of one eager decode step of the 7B shape at each batch in $BATCHES
# (tessera-bench-decode --profile-batches: the step runs between cudaProfilerStart/Stop),
# at context prompt 128 + 128 (BENCH_FLAGS adds flags, e.g. --kv-cache-dtype fp8). Per-kernel time,
# DRAM bytes and bandwidth via ncu_summary.py.
# Run from the repo root with the bundle in $D ($D/bin, $D/bundle/lib); results go to $OUT.
set -uo pipefail
D=${D:-.device-m}
OUT=${OUT:-/tmp/out}
MODEL=${MODEL:-/tmp/models/llama2-7b}
BATCHES=${BATCHES:-1 32 256}
export LD_LIBRARY_PATH=$PWD/$D/bundle/lib:$PWD/$D/lib:/usr/local/cuda/lib64
[ -f "$MODEL/config.json" ] || "$D/bin/tessera-make-random-model" --shape llama2-7b --out "$MODEL" > /dev/null 2>&1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
TMP=${TMPDIR:-/tmp}
for b in $BATCHES; do
  timeout 200 "$NCU" --profile-from-start off --clock-control none --csv \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
    "$D/bin/tessera-bench-decode" --model "$MODEL" --shape llama2-7b --device cuda --prompt-len 128 \
    --new-tokens 256 --profile-batches "$b" ${BENCH_FLAGS:-} > "$TMP/ncu_step_b$b.csv" 2> "$TMP/ncu_step_b$b.err"
  echo "ncu batch $b exit $?"; tail -2 "$TMP/ncu_step_b$b.err"
  python3 "$(dirname "$0")/ncu_summary.py" "$TMP/ncu_step_b$b.csv" --label "7B eager decode step, batch $b" \
    | tee "$OUT/ncu_step_b$b.txt" | head -30
done
