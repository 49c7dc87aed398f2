#!/usr/bin/env python3
"""tessera vs Hugging Face transformers on a random-weight TinyLlama-shape model.

Builds LlamaForCausalLM (TinyLlama-1.1B shape) with random weights, rounds them to bf16
and saves them with save_pretrained (safetensors), so that both sides hold identical
weights. tessera (tools/logits_tool.cc) greedily decodes several prompts on the GPU and
prints every step's logits; HF recomputes those logits teacher-forced on the same token
sequence in fp32 and in bf16, and greedily decodes on its own. Reports the logits error
of tessera and of HF bf16 against HF fp32 (the bf16 baseline), and how many greedy
tokens agree.

Random models have flat logits and amplify rounding with depth: each run of `--runs`
is LAYERS:INIT (initializer_range), e.g. the full 22 layers at HF's default 0.02, and a
shallow 4-layer model whose bf16 error stays far below its top-2 margins.

usage: hf_compare.py --logits-bin BIN --workdir DIR --out RESULT.json [--runs 22:0.02,22:0.08,4:0.02]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

STEPS = 32


def tinyllama_config(layers, init):
    return LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers, num_attention_heads=32,
                       num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                       rope_theta=10000.0, initializer_range=init, tie_word_embeddings=False, bos_token_id=1,
                       eos_token_id=2, hidden_act="silu")


@torch.no_grad()
def teacher_forced(model, prompt, generated):
    ids = torch.tensor([prompt + generated[:-1]], device="cuda")
    return model(ids).logits[0, len(prompt) - 1:].float().cpu().numpy()


@torch.no_grad()
def greedy(model, prompt, steps):
    ids = list(prompt)
    for _ in range(steps):
        logits = model(torch.tensor([ids], device="cuda")).logits[0, -1]
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):]


def prefix_match(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def errors(x, ref):
    d = np.abs(x - ref)
    return {"max_abs": float(d.max()), "max_abs_over_max_ref": float(d.max() / np.abs(ref).max()),
            "rel_l2": float(np.linalg.norm(x - ref) / np.linalg.norm(ref))}


def run_one(layers, init, args, prompts):
    torch.manual_seed(0)
    cfg = tinyllama_config(layers, init)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model = model.to(torch.bfloat16).eval()  # the weights both sides use: bf16-exact
    mdir = os.path.join(args.workdir, f"tinyllama-l{layers}-init{init}")
    model.save_pretrained(mdir, safe_serialization=True)
    with open(os.path.join(mdir, "config.json")) as f:
        saved = json.load(f)

    out_file = os.path.join(args.workdir, f"tessera-l{layers}-init{init}.json")
    cmd = [args.logits_bin, "--model", mdir, "--device", "cuda", "--steps", str(STEPS), "--out", out_file]
    for p in prompts:
        cmd += ["--prompt-ids", ",".join(map(str, p))]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    with open(out_file) as f:
        tess = json.load(f)
    tessera_secs = time.time() - t0

    cases = []
    bf16_greedy = [greedy(model, p, STEPS) for p in prompts]
    bf16_logits = [teacher_forced(model, p, t["greedy_ids"]) for p, t in zip(prompts, tess)]
    model = model.float()
    for i, (p, t) in enumerate(zip(prompts, tess)):
        tl = np.array(t["logits"], dtype=np.float32)
        ref = teacher_forced(model, p, t["greedy_ids"])
        hf32 = greedy(model, p, STEPS)
        top2 = np.sort(ref, axis=1)[:, -2:]
        margins = top2[:, 1] - top2[:, 0]
        cases.append({
            "prompt_len": len(p),
            "tessera_vs_hf_fp32": errors(tl, ref),
            "hf_bf16_vs_hf_fp32": errors(bf16_logits[i], ref),
            "greedy_match_tessera_vs_hf_fp32": prefix_match(t["greedy_ids"], hf32),
            "greedy_match_tessera_vs_hf_bf16": prefix_match(t["greedy_ids"], bf16_greedy[i]),
            "greedy_match_hf_bf16_vs_hf_fp32": prefix_match(bf16_greedy[i], hf32),
            "teacher_forced_top1_agreement_tessera_vs_hf_fp32": float(np.mean(tl.argmax(1) == ref.argmax(1))),
            "fp32_top2_margin_median": float(np.median(margins)),
            "fp32_top2_margin_min": float(margins.min()),
            "logit_std_fp32": float(ref.std()),
        })
    del model
    torch.cuda.empty_cache()
    return {"layers": layers, "initializer_range": init, "steps": STEPS, "tessera_seconds_incl_load": tessera_secs,
            "saved_config_keys": sorted(saved.keys()), "cases": cases}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logits-bin", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", default="22:0.02,22:0.08,4:0.02")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    rng = np.random.default_rng(1)
    prompts = [[1] + [int(x) for x in rng.integers(3, 32000, n - 1)] for n in (8, 17, 33, 64)]
    results = {"device": torch.cuda.get_device_name(0), "shape": "tinyllama", "weights": "bf16 (random, saved by HF)",
               "reference": "HF transformers fp32 and bf16, teacher-forced on tessera's greedy tokens",
               "transformers": __import__("transformers").__version__, "torch": torch.__version__, "runs": []}
    for run in args.runs.split(","):
        layers, init = run.split(":")
        results["runs"].append(run_one(int(layers), float(init), args, prompts))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    for run in results["runs"]:
        print(f"layers {run['layers']} init {run['initializer_range']}:")
        for c in run["cases"]:
            e, b = c["tessera_vs_hf_fp32"], c["hf_bf16_vs_hf_fp32"]
            print(f"  prompt {c['prompt_len']:3d}: tessera max|d| {e['max_abs']:.4f} relL2 {e['rel_l2']:.2e} | "
                  f"HF bf16 max|d| {b['max_abs']:.4f} relL2 {b['rel_l2']:.2e} | greedy match vs HF fp32 "
                  f"{c['greedy_match_tessera_vs_hf_fp32']}/{STEPS} (HF bf16 {c['greedy_match_hf_bf16_vs_hf_fp32']}) "
                  f"| median margin {c['fp32_top2_margin_median']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
