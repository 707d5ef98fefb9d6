#!/usr/bin/env python3
"""Golden logits for the real SmolLM2-135M-Instruct GGUF (issue 9).

The GGUF is converted with ../shared/tools/gguf_to_hf.py --dtype float32 (exact dequantization)
and run by transformers in float32. The full logits are too big to commit (49,152 per position),
so per position we keep: the argmax, the largest |logit|, the logits of the 64 highest ids, and
the logits of every 97th id. The Swift test compares all of those within 2e-3·max|logit| and
requires the same argmax at every position.

usage: gguf_logits_golden.py HF_F32_DIR OUT.json
"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

src, out = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(src)
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
prompts = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
]
cases = []
for text in prompts:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        gen = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0][len(ids):].tolist()
    positions = []
    for t in range(len(ids)):
        row = logits[t]
        top = torch.topk(row, 64).indices.tolist()
        strided = list(range(0, row.numel(), 97))
        positions.append({
            "argmax": int(row.argmax()),
            "max_abs": float(row.abs().max()),
            "ids": top + strided,
            "logits": [float(row[i]) for i in top + strided],
        })
    cases.append({"text": text, "input_ids": ids, "greedy_8": gen, "greedy_text": tok.decode(gen), "positions": positions})
json.dump({"model": "SmolLM2-135M-Instruct.Q4_1.gguf (sha256 b179c952...) via gguf_to_hf.py --dtype float32, transformers float32",
           "cases": cases}, open(out, "w"))
print("wrote", out, [c["greedy_text"] for c in cases])
