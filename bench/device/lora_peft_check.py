#!/usr/bin/env python3
"""Compares tessera's LoRA forward with PEFT's on a random TinyLlama-shaped model.

Builds a small random LlamaForCausalLM (TinyLlama widths, few layers), saves it with
save_pretrained (safetensors), wraps it in a PEFT LoRA adapter with random nonzero A and B
on every projection (rank_pattern / alpha_pattern / rsLoRA exercised too), saves the
adapter, then runs `tessera-lora-logits` on both and compares the last-position logits
(max abs and relative error) and a greedy continuation. Base-model logits are compared as
well, so an adapter error is not confused with a base-model error.

Needs torch, transformers and peft; runs on CUDA when present (TF32 off, float32).

  python3 bench/device/lora_peft_check.py --tool build/bin/tessera-lora-logits
Exit status 0 when every check passes.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", required=True, help="path to the tessera-lora-logits binary")
    ap.add_argument("--workdir", help="where to write the model and adapter (default: a temp dir)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--rslora", action="store_true", help="use_rslora=True (scale alpha/sqrt(r))")
    ap.add_argument("--no-patterns", action="store_true", help="skip rank_pattern/alpha_pattern")
    ap.add_argument("--prompt-len", type=int, default=12)
    ap.add_argument("--greedy", type=int, default=8, help="greedy tokens to compare")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--tessera-device", default="cpu", help="--device passed to tessera-lora-logits")
    ap.add_argument("--tolerance", type=float, default=2e-3, help="max relative logit error")
    ap.add_argument("--json-out", help="also write the summary here")
    return ap.parse_args()


def run_tool(tool, model_dir, adapter_dir, prompt, greedy, device, max_rank):
    cmd = [tool, "--model", model_dir, "--prompt-ids", ",".join(map(str, prompt)), "--greedy", str(greedy),
           "--device", device, "--max-lora-rank", str(max_rank)]
    if adapter_dir:
        cmd += ["--adapter", adapter_dir]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"tessera-lora-logits failed ({p.returncode}): {p.stderr.strip()}\n  command: {' '.join(cmd)}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["seconds"] = time.time() - t0
    return out


def compare(name, ref, got, ref_greedy, got_greedy, tol):
    diff = max(abs(a - b) for a, b in zip(ref, got))
    scale = max(abs(a) for a in ref)
    rel = diff / max(scale, 1e-30)
    argmax_ref = max(range(len(ref)), key=ref.__getitem__)
    argmax_got = max(range(len(got)), key=got.__getitem__)
    mismatch = next((i for i, (a, b) in enumerate(zip(ref_greedy, got_greedy)) if a != b), None)
    ok = len(ref) == len(got) and rel < tol and argmax_ref == argmax_got and mismatch is None \
        and len(ref_greedy) == len(got_greedy)
    return {"name": name, "ok": ok, "max_abs_error": diff, "max_abs_logit": scale, "rel_error": rel,
            "argmax_ref": argmax_ref, "argmax_tessera": argmax_got, "greedy_ref": ref_greedy,
            "greedy_tessera": got_greedy, "first_greedy_mismatch": mismatch}


def main():
    args = parse_args()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    dev = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(args.seed)
    work = args.workdir or tempfile.mkdtemp(prefix="lora_peft_check_")
    base_dir, adapter_dir = os.path.join(work, "base"), os.path.join(work, "adapter")

    # TinyLlama-1.1B widths (GQA 32/4 heads), fewer layers.
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=args.layers,
                      num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                      max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    model.save_pretrained(base_dir)  # safetensors is the default

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    extra = {}
    if not args.no_patterns:
        extra = {"rank_pattern": {"down_proj": max(1, args.rank // 2)}, "alpha_pattern": {"v_proj": args.alpha / 4}}
    lcfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=targets, lora_dropout=0.0, bias="none",
                      use_rslora=args.rslora, init_lora_weights=False, task_type="CAUSAL_LM", **extra)
    peft_model = get_peft_model(model, lcfg)
    gen = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            elif "lora_B" in name:  # nonzero B: the adapter must change the output
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05 / math.sqrt(p.shape[1]))
    peft_model.save_pretrained(adapter_dir)
    peft_model = peft_model.to(dev).eval()

    prompt = torch.randint(3, cfg.vocab_size, (args.prompt_len,), generator=gen).tolist()

    def reference(use_adapter):
        ids = torch.tensor([prompt], device=dev)
        out = []
        with torch.no_grad():
            def forward(x):
                if use_adapter:
                    return peft_model(input_ids=x).logits[0, -1].float()
                with peft_model.disable_adapter():
                    return peft_model(input_ids=x).logits[0, -1].float()
            last = forward(ids)
            logits = last.cpu().tolist()
            for _ in range(args.greedy):  # greedy without EOS, like --greedy in the tool
                nxt = int(torch.argmax(last))
                out.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]], device=dev)], dim=1)
                last = forward(ids)
        return logits, out

    ref_lora, ref_lora_greedy = reference(True)
    ref_base, ref_base_greedy = reference(False)
    max_rank = max(args.rank, 1)
    t_lora = run_tool(args.tool, base_dir, adapter_dir, prompt, args.greedy, args.tessera_device, max_rank)
    t_base = run_tool(args.tool, base_dir, None, prompt, args.greedy, args.tessera_device, max_rank)

    checks = [compare("base", ref_base, t_base["logits"], ref_base_greedy, t_base["greedy"], args.tolerance),
              compare("lora", ref_lora, t_lora["logits"], ref_lora_greedy, t_lora["greedy"], args.tolerance)]
    effect = max(abs(a - b) for a, b in zip(ref_lora, ref_base)) / max(max(abs(a) for a in ref_base), 1e-30)
    summary = {"torch_device": dev, "tessera_device": t_lora["device"], "layers": args.layers, "rank": args.rank,
               "alpha": args.alpha, "use_rslora": args.rslora, "patterns": not args.no_patterns,
               "prompt_ids": prompt, "adapter_effect_rel": effect, "checks": checks,
               "tessera_seconds": {"lora": t_lora["seconds"], "base": t_base["seconds"]},
               "workdir": work}
    # An adapter too weak to move the logits would make the lora check vacuous.
    summary["ok"] = all(c["ok"] for c in checks) and effect > 10 * args.tolerance
    for c in checks:
        print(f"{c['name']:>4}: rel error {c['rel_error']:.2e} (max abs {c['max_abs_error']:.2e} of {c['max_abs_logit']:.3f}), "
              f"argmax {c['argmax_ref']}/{c['argmax_tessera']}, greedy "
              f"{'match' if c['first_greedy_mismatch'] is None else 'differs at ' + str(c['first_greedy_mismatch'])}"
              f" -> {'ok' if c['ok'] else 'FAIL'}")
    print(f"adapter effect on logits (relative): {effect:.3f}")
    print(json.dumps(summary))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=2)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
