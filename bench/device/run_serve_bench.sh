#!/usr/bin/env bash
# Serving benchmark on the device: random-weight Llama-2-7B shape (bf16), `tessera serve`
# driven by `tessera-loadgen`, 128-token prompts -> 128 tokens, at each concurrency in
# $CONCURRENCY (max-num-seqs follows the concurrency). Drift monitoring stays on (the
# default) unless DRIFT=0; SERVE_FLAGS adds server flags and TAG names such a run's files.
# Run from the repo root with the bundle in $D; JSON to $OUT.
set -u
D=${D:-.device-m}
OUT=${OUT:-/tmp/out}
MODEL=${MODEL:-/tmp/models/llama2-7b}
CONCURRENCY=${CONCURRENCY:-256}
PROMPTS_PER_STREAM=${PROMPTS_PER_STREAM:-4}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/$D/bundle/lib:/usr/local/cuda/lib64
export TESSERA_SPM_PLUGIN=$PWD/$D/lib/libtessera_spm.so
[ -f "$MODEL/config.json" ] || "$D/bin/tessera-make-random-model" --shape llama2-7b --out "$MODEL" \
  --tokenizer tests/data/llama2-tokenizer/tokenizer.model > /dev/null 2>&1
[ -f "$MODEL/tokenizer.model" ] || cp tests/data/llama2-tokenizer/tokenizer.model "$MODEL/"
drift_flag=""
[ "${DRIFT:-1}" = 1 ] || drift_flag=--disable-drift-monitoring
for c in $CONCURRENCY; do
  "$D/bin/tessera" serve --model "$MODEL" --served-model-name llama2-7b-random --port 0 --grpc-port 0 $drift_flag \
    --max-num-seqs "$c" --max-num-batched-tokens 8192 --max-waiting 100000 ${SERVE_FLAGS:-} \
    > /tmp/serve.out 2> /tmp/serve.err &
  pid=$!
  for i in $(seq 1 240); do grep -q "listening http" /tmp/serve.out && break; sleep 0.5; done
  port=$(grep "listening http" /tmp/serve.out | sed 's/.*://')
  [ -n "$port" ] || { echo "server did not start"; cat /tmp/serve.out; tail -5 /tmp/serve.err; exit 1; }
  tag="c${c}_drift${DRIFT:-1}${TAG:+_$TAG}"
  "$D/bin/tessera-loadgen" --port "$port" --model llama2-7b-random --num-prompts $((c * PROMPTS_PER_STREAM)) \
    --max-concurrency "$c" --random-input-len 128 --random-output-len 128 --out "$OUT/serve_7b_$tag.json" 2>&1 \
    | grep -E "throughput|ITL|TPOT|TTFT|failed|Failed" | head -12
  # The engine's step accounting (steps, seconds, forward seconds, tokens by kind of step).
  python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())" \
    > "$OUT/serve_metrics_$tag.txt" 2>/dev/null
  # The keys every result file carries (device, shape, batch, tokens_per_s) and the command.
  DEVICE_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) python3 - "$OUT/serve_7b_$tag.json" "$c" \
    "CONCURRENCY=$c PROMPTS_PER_STREAM=$PROMPTS_PER_STREAM DRIFT=${DRIFT:-1} SERVE_FLAGS=\"${SERVE_FLAGS:-}\" bench/device/run_serve_bench.sh" \
    "$OUT/serve_metrics_$tag.txt" <<'PY'
import json, os, re, sys
path, c, cmd, metrics = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
d = json.load(open(path))
d.update(device=os.environ.get("DEVICE_NAME", ""), shape="llama2-7b (random weights, bf16)", batch=c,
         tokens_per_s=d.get("output_throughput"), command=cmd + f" (max-num-seqs {c})")
steps = {}
for line in open(metrics) if os.path.exists(metrics) else []:
    m = re.match(r'tessera_engine_(steps|step_seconds|forward_seconds|device_seconds|step_tokens)_total\{kind="(\w+)".* (\S+)$', line)
    if m:
        steps.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
    m = re.match(r'tessera_engine_host_seconds_total\{kind="(\w+)".*phase="(\w+)".* (\S+)$', line)
    if m:
        steps.setdefault(m.group(1), {})[m.group(2) + "_seconds"] = float(m.group(3))
for kind, v in steps.items():
    n = max(v.get("steps", 0), 1)
    v["mean_step_ms"] = 1e3 * v.get("step_seconds", 0) / n
    v["mean_host_ms"] = 1e3 * (v.get("step_seconds", 0) - v.get("forward_seconds", 0)) / n
    v["mean_tokens"] = v.get("step_tokens", 0) / n
    for phase in ("schedule", "update", "outputs", "launch", "device"):
        v[f"mean_{phase}_ms"] = 1e3 * v.get(f"{phase}_seconds", 0) / n
    print(f"  {kind} steps: {int(v.get('steps', 0))}, mean {v['mean_step_ms']:.2f} ms "
          f"(host outside forwards {v['mean_host_ms']:.2f} ms; schedule {v['mean_schedule_ms']:.2f}, update "
          f"{v['mean_update_ms']:.2f}, outputs {v['mean_outputs_ms']:.2f}), {v['mean_tokens']:.0f} tokens/step; "
          f"launch {v['mean_launch_ms']:.2f} ms, device {v['mean_device_ms']:.2f} ms")
d["engine_steps"] = steps
json.dump(d, open(path, "w"), indent=1, sort_keys=True)
PY
  echo "== above: concurrency $c, drift ${DRIFT:-1}"
  kill -TERM $pid; wait $pid
done
