#!/usr/bin/env python3
"""Hugging Face `generate` decode throughput on a random-weight Llama shape (bf16), eager
and with a static cache + torch.compile, as the baseline for tessera's decode bench.
With cache_implementation="static", generate compiles the decoding forward itself
(transformers' automatic compile: fullgraph, reduce-overhead); wrapping the forward in
torch.compile by hand as well fails with CUDA-graph output overwrites in transformers 5.

Decode rate = batch * (N - 1) / (time(N new tokens) - time(1 new token)): the prefill
and the first token are taken out, as tessera-bench-decode does.

usage: hf_generate_bench.py --shape llama2-7b|tinyllama --batch 1 --mode eager|compile --out F.json
"""
import argparse
import json
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "tinyllama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048),
}


def timed_generate(model, ids, n, static):
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False)
    if static:
        kw["cache_implementation"] = "static"
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(ids, **kw)
    torch.cuda.synchronize()
    assert out.shape[1] == ids.shape[1] + n
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True, choices=SHAPES)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    cfg = LlamaConfig(**SHAPES[args.shape], rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.02,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = 0
    static = args.mode == "compile"
    ids = torch.randint(3, cfg.vocab_size, (args.batch, args.prompt_len), device="cuda")
    t_compile = time.perf_counter()
    with torch.no_grad():
        for _ in range(3):  # warm-up (and compilation)
            timed_generate(model, ids, 16, static)
        t_compile = time.perf_counter() - t_compile
        t1 = min(timed_generate(model, ids, 1, static) for _ in range(2))
        tn = timed_generate(model, ids, args.new_tokens, static)
    tps = args.batch * (args.new_tokens - 1) / (tn - t1)
    res = {"device": torch.cuda.get_device_name(0), "shape": args.shape, "batch": args.batch,
           "engine": "hf-transformers " + ("static cache + torch.compile" if static else "eager"),
           "transformers": __import__("transformers").__version__, "torch": torch.__version__,
           "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "tokens_per_s": tps,
           "warmup_seconds": t_compile}
    print(json.dumps(res))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
