#!/usr/bin/env python3
"""Loads, uses and unloads LoRA adapters through tessera's admin API in a loop, for the
p99 inter-token-latency measurement of bench/device/run_lora_itl.sh: each round loads
adapter DIR/a{i % n} under a new name, sends one short completion on it (which puts it in
a device slot, uploaded by the step loop), then unloads it. Stops when --stop-file exists
or after --rounds rounds; writes the per-round timings as JSON."""
import argparse
import json
import os
import time
import urllib.request


def post(base, path, body, timeout=120):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        payload = r.read()
        status = r.status
    return status, time.perf_counter() - t0, payload


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--adapters", type=int, default=4, help="adapter directories a0..a{n-1} under the adapter root")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    rounds = []
    i = 0
    while i < args.rounds and not os.path.exists(args.stop_file):
        name = f"hot{i}"
        r = {"name": name, "path": f"a{i % args.adapters}"}
        try:
            st, r["load_s"], _ = post(base, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": r["path"]})
            r["load_status"] = st
            st, r["first_request_s"], body = post(base, "/v1/completions",
                                                  {"model": name, "prompt": "Once upon a time", "max_tokens": 4,
                                                   "temperature": 0})
            r["request_status"] = st
            r["completion_tokens"] = json.loads(body).get("usage", {}).get("completion_tokens")
            st, r["unload_s"], _ = post(base, "/v1/unload_lora_adapter", {"lora_name": name})
            r["unload_status"] = st
        except Exception as e:  # a failed round is recorded, not fatal: the report counts them
            r["error"] = str(e)
        rounds.append(r)
        i += 1
        time.sleep(args.interval)
    with open(args.out, "w") as f:
        json.dump({"rounds": rounds, "failed": sum(1 for r in rounds if "error" in r)}, f, indent=1)


if __name__ == "__main__":
    main()
