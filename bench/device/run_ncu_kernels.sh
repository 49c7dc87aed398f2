#!/usr/bin/env bash
# Nsight Compute details of single kernels from the micro-benchmarks: the paged decode
# attention kernel at the cases in $ATTN_CASES (kv_heads:ctx:batch, see cuda_kernels_bench)
# and the packed int4 kernel at batch 1 on 4096x4096 (the first case of cuda_quant_bench).
# Each profile (ncu --set full, source counters included) is written as text: the details
# page (throughput, occupancy, warp stall reasons) and the source page's hottest SASS lines.
# Run from the repo root with the pack of bench/device/pack.sh unpacked in $D; text goes to $OUT.
set -uo pipefail
D=${D:-.device-m}
OUT=${OUT:-/tmp/out}
ATTN_CASES=${ATTN_CASES:-"32:1024:1 8:4096:64"}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$D/bundle/lib:$PWD/$D/lib:/usr/local/cuda/lib64
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
TMP=${TMPDIR:-/tmp}

report() {  # name: print details and the 25 SASS lines with the most warp stall samples
  local rep=$TMP/$1.ncu-rep
  "$NCU" -i "$rep" --page details > "$OUT/ncu_$1.txt" 2>&1
  "$NCU" -i "$rep" --page source --csv --print-source sass > "$TMP/$1_src.csv" 2>/dev/null
  xz -c "$TMP/$1_src.csv" > "$OUT/ncu_$1_src.csv.xz"
  python3 - "$TMP/$1_src.csv" >> "$OUT/ncu_$1.txt" <<'PY'
import csv, sys
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"')))
if not rows:
    print("(no source page)"); sys.exit()
key = next((k for k in rows[0] if k and k.startswith("Warp Stall Sampling (All")), None)
if key is None:
    print("(no stall sampling column)"); sys.exit()
val = lambda r: float((r.get(key) or "0").replace(",", "") or 0)
total = sum(val(r) for r in rows) or 1
print(f"\n== hottest SASS lines by {key} (total {total:.0f})")
for r in sorted(rows, key=val, reverse=True)[:25]:
    print(f"{100 * val(r) / total:5.1f}%  {r.get('Address', '')}  {r.get('Source', '')[:110]}")
PY
}

for c in $ATTN_CASES; do
  name=attn_${c//:/_}
  TESSERA_ATTN_CASES=$c timeout 150 "$NCU" --clock-control none --set full --import-source yes \
    -k regex:'Decode(Mma)?Kernel' --launch-count 1 -f -o "$TMP/$name" \
    "$D/bin/cuda_kernels_bench" "$TMP/attn.json" attention > "$TMP/$name.log" 2>&1
  echo "ncu $name exit $?"
  report "$name"
done
TESSERA_QUANT_CASES=4096x4096:1 timeout 150 "$NCU" --clock-control none --set full --import-source yes \
  -k regex:Int4MmaKernel --launch-count 1 -f -o "$TMP/int4_b1" "$D/bin/cuda_quant_bench" "$TMP/quant.json" > "$TMP/int4.log" 2>&1
echo "ncu int4_b1 exit $?"
report int4_b1
