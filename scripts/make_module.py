#!/usr/bin/env python3
"""Writes a demo linear module for `dgptq quantize-module`: weight.safetensors with
"weight" F32 [rows, cols] and hessian.safetensors with "hessian" F32 [cols, cols]
(the sum X^T X over `samples` correlated activation rows) and "nsamples" I64 [].
Standard library only.

  scripts/make_module.py OUT_DIR [--rows 64] [--cols 96] [--samples 256] [--seed 0]
"""
import argparse
import array
import json
import os
import random
import struct


def write_safetensors(path, tensors):
    """tensors: {name: (dtype, shape, bytes)} -> one .safetensors file."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--cols", type=int, default=96)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(a.seed)
    k = max(1, a.cols // 4)
    mix = [[rng.gauss(0, 1) for _ in range(a.cols)] for _ in range(k)]
    h = [[0.0] * a.cols for _ in range(a.cols)]
    for _ in range(a.samples):
        z = [rng.gauss(0, 1) for _ in range(k)]
        x = [sum(z[j] * mix[j][c] for j in range(k)) + rng.gauss(0, 0.1) for c in range(a.cols)]
        for i in range(a.cols):
            xi, row = x[i], h[i]
            for j in range(a.cols):
                row[j] += xi * x[j]
    w = array.array("f", (rng.gauss(0, 0.05) for _ in range(a.rows * a.cols)))
    hf = array.array("f", (v for row in h for v in row))
    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "weight.safetensors"),
                      {"weight": ("F32", [a.rows, a.cols], w.tobytes())})
    write_safetensors(os.path.join(a.out, "hessian.safetensors"),
                      {"hessian": ("F32", [a.cols, a.cols], hf.tobytes()),
                       "nsamples": ("I64", [], struct.pack("<q", a.samples))})
    print(json.dumps({"weight": os.path.join(a.out, "weight.safetensors"),
                      "hessian": os.path.join(a.out, "hessian.safetensors")}))


if __name__ == "__main__":
    main()
