#!/usr/bin/env bash
# p99 inter-token latency of running streams while LoRA adapters are hot-loaded, against
# the same server without loads, in one run: `tessera serve` on the random 7B model in $M,
# tessera-loadgen keeps 32 streams (128 -> 128 tokens) running; during the "loading" phases
# lora_load_loop.py loads an adapter of every projection (rank 16) through the admin API,
# sends one request on it (its slot upload happens in the step loop) and unloads it, about
# once a second. Phases alternate quiet, loading, quiet, loading. The summary goes to
# $OUT/lora_itl.json, the raw loadgen and server output to $WORK.
set -uo pipefail
D=${D:-.device-m}
OUT=${OUT:-/tmp/out}
M=${M:-/tmp/models/llama2-7b}
WORK=${WORK:-/tmp/itl}
mkdir -p "$OUT" "$WORK"
ROOT=/tmp/lora-root
rm -rf $ROOT
"$D/bin/tessera-make-random-adapter" --model "$M" --out $ROOT --count 4 --rank 16 --alpha 32 \
  --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj 2>&1 | tail -1
"$D/bin/tessera" serve --model "$M" --served-model-name base --device cuda --port 0 --grpc-port 0 \
  --adapter-root $ROOT --max-gpu-adapters 8 --max-lora-rank 16 --max-num-seqs 64 > "$WORK/itl_server.out" 2> "$WORK/itl_server.err" &
SP=$!
PORT=""
for _ in $(seq 1 240); do
  PORT=$(grep -m1 "listening http" "$WORK/itl_server.out" 2>/dev/null | sed 's/.*://')
  [ -n "$PORT" ] && break
  kill -0 $SP 2>/dev/null || break
  sleep 0.5
done
if [ -z "$PORT" ]; then echo "server did not start"; tail -5 "$WORK/itl_server.err"; exit 1; fi
echo "server on port $PORT"
LG="$D/bin/tessera-loadgen --port $PORT --model base --max-concurrency 32 --random-input-len 128 --random-output-len 128"
$LG --num-prompts 32 --out /tmp/itl_warm.json > /dev/null 2>&1
for round in 1 2; do
  $LG --num-prompts ${PROMPTS:-160} --seed $round --out "$WORK/itl_quiet_$round.json" > /dev/null 2>&1
  rm -f /tmp/itl_stop
  python3 "$(dirname "$0")/lora_load_loop.py" --port $PORT --adapters 4 --interval ${INTERVAL:-0.5} --stop-file /tmp/itl_stop \
    --out "$WORK/itl_loads_$round.json" &
  LP=$!
  $LG --num-prompts ${PROMPTS:-160} --seed $round --out "$WORK/itl_loading_$round.json" > /dev/null 2>&1
  touch /tmp/itl_stop
  wait $LP
done
kill -TERM $SP
wait $SP
DEVICE_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) python3 - "$WORK" "$OUT" <<'PY'
import json, os, sys
work, out = sys.argv[1], sys.argv[2]
rows = []
for r in (1, 2):
    q = json.load(open(f"{work}/itl_quiet_{r}.json"))
    l = json.load(open(f"{work}/itl_loading_{r}.json"))
    loads = json.load(open(f"{work}/itl_loads_{r}.json"))
    ok = [x for x in loads["rounds"] if "error" not in x]
    rows.append({"device": os.environ.get("DEVICE_NAME", ""), "model": "llama2-7b shape, random bf16", "streams": 32,
                 "input_len": q["input_len"], "output_len": q["output_len"],
                 "adapter": "rank 16, all seven projections", "round": r, "quiet_p99_itl_ms": q["p99_itl_ms"], "loading_p99_itl_ms": l["p99_itl_ms"],
                 "quiet_median_itl_ms": q["median_itl_ms"], "loading_median_itl_ms": l["median_itl_ms"],
                 "p99_itl_rise": l["p99_itl_ms"] / q["p99_itl_ms"] - 1,
                 "quiet_output_throughput": q["output_throughput"], "loading_output_throughput": l["output_throughput"],
                 "quiet_failed": q["failed"], "loading_failed": l["failed"],
                 "adapter_loads": len(loads["rounds"]), "adapter_load_failures": loads["failed"],
                 "mean_load_s": sum(x["load_s"] for x in ok) / max(1, len(ok)),
                 "mean_first_request_s": sum(x["first_request_s"] for x in ok) / max(1, len(ok))})
for x in rows:
    print("round %d: p99 ITL %.2f ms quiet, %.2f ms while loading (%+.1f%%); median %.2f / %.2f ms; "
          "%d loads (%d failed), load %.0f ms, first request %.0f ms; stream failures %d / %d" % (
          x["round"], x["quiet_p99_itl_ms"], x["loading_p99_itl_ms"], 100 * x["p99_itl_rise"],
          x["quiet_median_itl_ms"], x["loading_median_itl_ms"], x["adapter_loads"], x["adapter_load_failures"],
          1e3 * x["mean_load_s"], 1e3 * x["mean_first_request_s"], x["quiet_failed"], x["loading_failed"]))
json.dump(rows, open(f"{out}/lora_itl.json", "w"), indent=1)
PY
