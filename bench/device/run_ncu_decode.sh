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
python3 - "$OUT/ncu_7b_decode_step.csv" <<'PY'
import csv, sys, collections, re
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))]
agg = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])
for r in rows:
    name = re.sub(r'\(.*', '', r["Kernel Name"])[:60]
    v = float(r["Metric Value"].replace(",", ""))
    a = agg[name]
    m = r["Metric Name"]
    if m == "gpu__time_duration.sum":
        scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[r["Metric Unit"]]
        a[0] += 1; a[1] += v * scale
    elif m.startswith("dram__bytes"):
        unit = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[r["Metric Unit"]]
        a[2] += v * unit
total_us = sum(a[1] for a in agg.values())
total_b = sum(a[2] for a in agg.values())
print(f"{'kernel':60s} {'calls':>5s} {'us':>9s} {'share':>6s} {'GB/s':>7s}")
for name, a in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"{name:60s} {a[0]:5d} {a[1]:9.1f} {100*a[1]/total_us:5.1f}% {a[2]/max(a[1],1e-9)/1e3:7.0f}")
print(f"total kernel time {total_us/1e3:.3f} ms for {total_b/1e9:.2f} GB of DRAM traffic ({total_b/total_us/1e3:.0f} GB/s)")
PY
