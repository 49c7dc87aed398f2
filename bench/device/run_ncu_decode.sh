#!/usr/bin/env bash
# Nsight Compute account of one batch-1 decode step of a random-weight Llama-2-7B shape
# (tessera-logits: a 128-token prefill, then decode steps; the kernels of the second
# decode step are profiled): per-kernel time, DRAM bytes and % of peak DRAM throughput.
# Uses the model at $MODEL (run_decode_bench.sh with KEEP_MODELS=1 leaves one), else
# generates it.
set -uo pipefail
D=${D:-.device-ce}
OUT=${OUT:-/tmp/out}
MODEL=${MODEL:-/tmp/models/llama2-7b}
export LD_LIBRARY_PATH=$PWD/$D/bundle/lib:$PWD/$D/lib:/usr/local/cuda/lib64
[ -f "$MODEL/config.json" ] || "$D/bin/tessera-make-random-model" --shape llama2-7b --out "$MODEL" > /dev/null 2>&1
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
ids=1$(seq -s, 3 129 | sed 's/^/,/')
# Kernels per step: count those of a 1-step run (prefill + one decode step) and of a
# 2-step run; the difference is one decode step.
count() { "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv "$D/bin/tessera-logits" --model "$MODEL" --device cuda \
            --prompt-ids "$ids" --steps "$1" --out /dev/null 2>/dev/null | grep -c '"gpu__time_duration.sum"'; }
n1=$(count 1); n2=$(count 2)
per_step=$((n2 - n1))
echo "kernels: prefill+decode $n1, one more decode step $per_step"
timeout 240 "$NCU" --clock-control none --launch-skip "$n2" --launch-count "$per_step" --csv \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \
  "$D/bin/tessera-logits" --model "$MODEL" --device cuda --prompt-ids "$ids" --steps 3 --out /dev/null \
  > "$OUT/ncu_7b_decode_step.csv" 2> "$OUT/ncu.err"
echo "ncu exit $?"
python3 "$(dirname "$0")/ncu_summary.py" "$OUT/ncu_7b_decode_step.csv" --label "7B eager decode step, batch 1"
