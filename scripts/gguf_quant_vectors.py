#!/usr/bin/env python3
"""Writes Tests/Fixtures/gguf/quant_blocks.json: GGML block-quantization test vectors.

Reference: the `gguf` Python package (`gguf.quants`, as used by llama.cpp's converters).
For every format we store raw blocks (hex) and what `gguf.quants.dequantize` makes of them
(float32 bit patterns as 8-hex-digit strings, so the values round-trip exactly).

* Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: the blocks are `gguf.quants.quantize` of the stored float32
  `input` (all-equal, zero, large dynamic range, random normal, tiny values whose f16 scale is
  subnormal, and two blocks of exact rounding ties), followed by random-byte blocks.
* Q4_K, Q5_K, Q6_K: `gguf.quants` has no quantizer for these, so the blocks come from a simple
  quantizer below (any valid bytes do: the test is of dequantization) over the same kinds of
  data, followed by random-byte blocks (which reach every bit of the packed 6-bit scales).
  These have no `input`.

Random-byte blocks get a finite f16 scale (no inf/NaN), so every expected value is finite.

Usage: python3 scripts/gguf_quant_vectors.py   (from the repository root)
"""
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
import gguf.quants as gq

rng = np.random.default_rng(20240611)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "gguf", "quant_blocks.json")

BLOCK = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
         "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}
# Byte offsets of the f16 scales that must stay finite in random blocks.
F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
              "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def data_blocks(n):
    """Float32 blocks of n values each, of varied kinds."""
    blocks = [
        np.full(n, 0.7315, dtype=np.float32),                                    # all equal
        np.zeros(n, dtype=np.float32),                                           # zero
        (rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-4, 3, n)).astype(np.float32),  # large range
        rng.normal(0, 0.05, n).astype(np.float32),                               # weight-like
        (rng.normal(0, 1, n) * 2e-6).astype(np.float32),                         # subnormal f16 scale
    ]
    if n == 32:
        # Q8_0 ties: amax 127 makes d = 1 exactly, so x.5 values are exact rounding ties.
        t8 = np.array([127] + [k + 0.5 for k in range(-8, 8)] + [-126.5, 126.5, 3, -3] + list(range(-5, 6)),
                      dtype=np.float32)
        # Q4_0/Q4_1 ties: max |x| = -8 gives d = 1 (Q4_0); min -8, max 7 gives d = 1 (Q4_1).
        t4 = np.array([-8, 7] + [k + 0.5 for k in range(-8, 7)] + list(range(-7, 8)), dtype=np.float32)
        blocks += [t8, t4]
    return blocks


def f16_bytes(x):
    return np.array([x], dtype=np.float16).view(np.uint8)


def quant_k(block, bits):
    """Q4_K (bits=4) / Q5_K (bits=5) block from 256 floats: per-32 scale/min as 6-bit values."""
    qmax = (1 << bits) - 1
    sub = block.reshape(8, 32).astype(np.float64)
    mn = np.minimum(sub.min(axis=1), 0.0)
    scale = (sub.max(axis=1) - mn) / qmax
    d = scale.max() / 63
    dmin = (-mn).max() / 63
    d16, dmin16 = np.float16(d), np.float16(dmin)
    sc = np.clip(np.round(scale / float(d16)), 0, 63).astype(np.uint8) if d16 > 0 else np.zeros(8, np.uint8)
    m = np.clip(np.round(-mn / float(dmin16)), 0, 63).astype(np.uint8) if dmin16 > 0 else np.zeros(8, np.uint8)
    q = np.zeros((8, 32), np.uint8)
    for j in range(8):
        step = float(d16) * sc[j]
        if step > 0:
            q[j] = np.clip(np.round((sub[j] + float(dmin16) * m[j]) / step), 0, qmax)
    s = np.zeros(12, np.uint8)
    s[0:4] = (sc[0:4] & 63) | ((sc[4:8] >> 4) << 6)
    s[4:8] = (m[0:4] & 63) | ((m[4:8] >> 4) << 6)
    s[8:12] = (sc[4:8] & 15) | ((m[4:8] & 15) << 4)
    qs = np.zeros(128, np.uint8)
    for p in range(4):
        qs[32 * p:32 * p + 32] = (q[2 * p] & 15) | ((q[2 * p + 1] & 15) << 4)
    parts = [f16_bytes(d16), f16_bytes(dmin16), s]
    if bits == 5:
        qh = np.zeros(32, np.uint8)
        for j in range(8):
            qh |= ((q[j] >> 4) & 1) << j
        parts.append(qh)
    parts.append(qs)
    return np.concatenate(parts)


def quant_q6k(block):
    sub = block.reshape(16, 16).astype(np.float64)
    amax = np.abs(sub).max(axis=1)
    scale = amax / 31
    d = scale.max() / 127
    d16 = np.float16(d)
    sc = np.clip(np.round(scale / float(d16)), -128, 127).astype(np.int8) if d16 > 0 else np.zeros(16, np.int8)
    q = np.full((16, 16), 32, np.uint8)
    for j in range(16):
        step = float(d16) * sc[j]
        if step != 0:
            q[j] = (np.clip(np.round(sub[j] / step), -32, 31) + 32).astype(np.uint8)
    q = q.reshape(256)
    ql = np.zeros(128, np.uint8)
    qh = np.zeros(64, np.uint8)
    for h in range(2):
        y = q[128 * h:128 * h + 128]
        for l in range(32):
            q1, q2, q3, q4 = y[l], y[l + 32], y[l + 64], y[l + 96]
            ql[64 * h + l] = (q1 & 15) | ((q3 & 15) << 4)
            ql[64 * h + l + 32] = (q2 & 15) | ((q4 & 15) << 4)
            qh[32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    return np.concatenate([ql, qh, sc.view(np.uint8), f16_bytes(d16)])


def random_block(name):
    n, nbytes = BLOCK[name]
    b = rng.integers(0, 256, nbytes, dtype=np.uint8)
    for off in F16_FIELDS[name]:
        b[off:off + 2] = f16_bytes(rng.normal(0, 0.02))
    return b


def hex_f32(a):
    return [format(int(v), "08x") for v in np.asarray(a, dtype=np.float32).view(np.uint32)]


out = {"generator": "scripts/gguf_quant_vectors.py", "reference": "gguf.quants (gguf python package)", "formats": {}}
for name, (n, nbytes) in BLOCK.items():
    qt = getattr(T, name)
    inputs = data_blocks(n)
    entry = {"block_elements": n, "block_bytes": nbytes}
    if n == 32:
        x = np.stack(inputs)
        qb = gq.quantize(x, qt).reshape(len(inputs), nbytes)
        entry["quantized_blocks"] = len(inputs)
        entry["input"] = hex_f32(x.reshape(-1))
    else:
        qb = np.stack([quant_k(b, 4) if name == "Q4_K" else quant_k(b, 5) if name == "Q5_K" else quant_q6k(b)
                       for b in inputs])
        entry["quantized_blocks"] = 0
    extra = 3 if n == 32 else 2
    allb = np.concatenate([qb.astype(np.uint8), np.stack([random_block(name) for _ in range(extra)])], axis=0)
    assert allb.shape[1] == nbytes
    y = gq.dequantize(allb.reshape(-1), qt).astype(np.float32)
    assert y.size == allb.shape[0] * n and np.all(np.isfinite(y)), name
    entry["blocks"] = allb.shape[0]
    entry["bytes"] = allb.tobytes().hex()
    entry["expected"] = hex_f32(y)
    out["formats"][name] = entry

os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")
