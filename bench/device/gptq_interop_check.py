#!/usr/bin/env python3
"""Independent check of tessera's GPTQ checkpoints against the AutoGPTQ format.

Unpacks every quantized linear of a checkpoint written by `tessera quantize` with NumPy
alone (and with torch too when it is installed), following AutoGPTQ's published layout --
no tessera code is imported -- and compares the dequantized weights with the dense weights
tessera itself computes (`tessera-gptq-dump`). They must agree bit for bit.

Layout, per linear `<p>` with in_features I, out_features O, G groups, `bits` b:
  <p>.qweight  int32 [ceil(I*b/32), O]  input features packed down each column, low bits
               first; b in {2,4,8}: 32/b per word; b = 3: 32 values per 3 words, values 10
               and 21 straddle words (AutoGPTQ's pack()).
  <p>.qzeros   int32 [G, ceil(O*b/32)]  the same packing along the output features.
               checkpoint_format "gptq" (v1) stores zero-1, "gptq_v2" the zero itself.
  <p>.scales   fp16  [G, O]
  <p>.g_idx    int32 [I]  group of each input feature.
  W[o, i] = float32(scales[g, o]) * float32(q[i, o] - zero[g, o]),  g = g_idx[i].

Usage:
  tessera quantize gptq --model models/stories260k --out /tmp/q --bits 3 --group-size 4 --act-order
  tessera-gptq-dump --model /tmp/q --out /tmp/q_dense.safetensors
  python3 bench/device/gptq_interop_check.py --model /tmp/q --dump /tmp/q_dense.safetensors
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "BF16": np.uint16, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data, dtype=DTYPES[info["dtype"]], count=(end - begin) // np.dtype(DTYPES[info["dtype"]]).itemsize,
                            offset=base + begin)
        out[name] = arr.reshape(info["shape"])
    return out


def unpack_rows(packed, n, bits):
    """Values packed down axis 0 of `packed` (uint32), AutoGPTQ layout -> [n, cols]."""
    w = packed.astype(np.uint32)
    cols = w.shape[1]
    if bits in (2, 4, 8):
        per = 32 // bits
        shifts = (np.arange(per, dtype=np.uint32) * bits)[None, :, None]
        vals = (w[:, None, :] >> shifts) & np.uint32((1 << bits) - 1)
        return vals.reshape(-1, cols)[:n]
    assert bits == 3
    rows = w.shape[0]
    pad = (-rows) % 3
    if pad:
        w = np.concatenate([w, np.zeros((pad, cols), dtype=np.uint32)])
    w0, w1, w2 = w[0::3], w[1::3], w[2::3]
    parts = []
    for i in range(10):
        parts.append((w0 >> np.uint32(3 * i)) & np.uint32(7))
    parts.append(((w0 >> np.uint32(30)) & np.uint32(3)) | ((w1 & np.uint32(1)) << np.uint32(2)))
    for i in range(10):
        parts.append((w1 >> np.uint32(3 * i + 1)) & np.uint32(7))
    parts.append(((w1 >> np.uint32(31)) & np.uint32(1)) | ((w2 & np.uint32(3)) << np.uint32(1)))
    for i in range(10):
        parts.append((w2 >> np.uint32(3 * i + 2)) & np.uint32(7))
    vals = np.stack(parts, axis=1)  # [blocks, 32, cols]
    return vals.reshape(-1, cols)[:n]


def dequantize_numpy(t, p, bits, v1, in_features):
    qweight = t[p + ".qweight"].view(np.uint32)
    out_features = qweight.shape[1]
    q = unpack_rows(qweight, in_features, bits).astype(np.int32)                 # [I, O]
    z = unpack_rows(t[p + ".qzeros"].view(np.uint32).T, out_features, bits).T.astype(np.int32)  # [G, O]
    if v1:
        z = z + 1
    scales = t[p + ".scales"].astype(np.float32)                                 # [G, O]
    g = t[p + ".g_idx"].astype(np.int64) if p + ".g_idx" in t else np.arange(in_features) // (in_features // scales.shape[0])
    w = scales[g, :] * (q - z[g, :]).astype(np.float32)                          # [I, O]
    return np.ascontiguousarray(w.T)


def dequantize_torch(t, p, bits, v1, in_features):
    import torch
    qweight = torch.from_numpy(t[p + ".qweight"].astype(np.int64) & 0xFFFFFFFF)
    qzeros = torch.from_numpy(t[p + ".qzeros"].astype(np.int64) & 0xFFFFFFFF)
    out_features = qweight.shape[1]

    def bits_of(words, n):  # bit stream down dim 0 -> [n, cols]
        shifts = torch.arange(32, dtype=torch.int64)
        stream = ((words[:, None, :] >> shifts[None, :, None]) & 1).reshape(-1, words.shape[1])
        stream = stream[: n * bits].reshape(n, bits, -1)
        weights = (1 << torch.arange(bits, dtype=torch.int64))[None, :, None]
        return (stream * weights).sum(dim=1)

    q = bits_of(qweight, in_features)
    z = bits_of(qzeros.T.contiguous(), out_features).T
    if v1:
        z = z + 1
    scales = torch.from_numpy(t[p + ".scales"].copy()).float()
    g = torch.from_numpy(t[p + ".g_idx"].astype(np.int64))
    w = scales[g, :] * (q - z[g, :]).float()
    return w.T.contiguous().numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="GPTQ checkpoint directory")
    ap.add_argument("--dump", required=True, help="tessera-gptq-dump output (dense f32 weights)")
    args = ap.parse_args()

    with open(os.path.join(args.model, "quantize_config.json")) as f:
        cfg = json.load(f)
    bits = int(cfg["bits"])
    v1 = cfg.get("checkpoint_format", "gptq") == "gptq"
    ckpt = read_safetensors(os.path.join(args.model, "model.safetensors"))
    dense = read_safetensors(args.dump)
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False

    prefixes = sorted(k[: -len(".qweight")] for k in ckpt if k.endswith(".qweight"))
    failures = 0
    for p in prefixes:
        want = dense[p + ".weight"]
        in_features = want.shape[1]
        got = dequantize_numpy(ckpt, p, bits, v1, in_features)
        same = got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32))
        if have_torch:
            got_t = dequantize_torch(ckpt, p, bits, v1, in_features)
            same = same and np.array_equal(got_t.view(np.uint32), want.view(np.uint32))
        if not same:
            failures += 1
            diff = np.abs(got.astype(np.float64) - want).max() if got.shape == want.shape else float("nan")
            print(f"MISMATCH {p}: shape {got.shape} vs {want.shape}, max |diff| {diff}")
    if not prefixes:
        print("no quantized linears found")
        return 1
    backends = "numpy+torch" if have_torch else "numpy"
    fmt = "gptq (v1)" if v1 else "gptq_v2"
    if failures:
        print(f"interop FAILED: {failures}/{len(prefixes)} linears differ ({backends}, {bits}-bit, {fmt})")
        return 1
    print(f"interop OK: {len(prefixes)} linears bit-identical ({backends}, {bits}-bit, {fmt}, "
          f"group_size {cfg['group_size']}, desc_act {cfg.get('desc_act')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
