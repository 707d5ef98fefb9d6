#!/usr/bin/env python3
"""Golden beam-search outputs for Tests/Fixtures/beam_search/golden.json.

Runs Hugging Face transformers' `generate(num_beams=N, do_sample=False)` (its default
length_penalty=1.0 and early_stopping=False) on the tiny fixture models and on
models/stories260K, one prompt at a time, computing in float64. A case is kept only when a
float32 run gives the same tokens (so no near-tie decides it). Each case runs twice: with the
model's own EOS (which these random models never pick, so beams run to max_new_tokens) and with
a token the search actually emits chosen as EOS, so hypotheses finish early at different steps.

Usage (from the repository root): python3 scripts/beam_search_golden.py
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GenerationConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")
OUT = os.path.join(FIXTURES, "beam_search", "golden.json")


def prompts_for(name, path):
    if name == "stories260K":
        # BOS plus a few story tokens, of different lengths.
        ref = json.load(open(os.path.join(path, "reference_greedy.json")))
        ids = ref["greedy_token_ids"]
        prompts = [[1], [1] + ids[:7], [1] + ids[20:24]]
    else:
        p = load_file(os.path.join(path, "expected.safetensors"))["prompt"].tolist()
        prompts = [p[0], p[1][:3], p[1]]
    # Plus all of them concatenated: a longer prompt (the Swift tests use the same four).
    return prompts + [sum(prompts, [])]


def beam(model, prompt, num_beams, max_new, eos):
    cfg = GenerationConfig(num_beams=num_beams, do_sample=False, max_new_tokens=max_new,
                           eos_token_id=eos, pad_token_id=0, length_penalty=1.0, early_stopping=False,
                           return_dict_in_generate=True, output_scores=True)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), generation_config=cfg)
    seq = out.sequences[0, len(prompt):].tolist()
    return seq, (float(out.sequences_scores[0]) if num_beams > 1 else None)


def main():
    torch.manual_seed(0)
    cases = []
    models = [("llama-tiny", "llama-tiny"), ("qwen2-tiny", "qwen2-tiny"), ("qwen3-tiny", "qwen3-tiny"),
              ("llama3-tiny", "llama3-tiny"), ("stories260K", os.path.join("..", "..", "models", "stories260K"))]
    for name, rel in models:
        path = os.path.normpath(os.path.join(FIXTURES, rel))
        m64 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
        m32 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        own_eos = m64.config.eos_token_id
        for prompt in prompts_for(name, path):
            for num_beams in (1, 4):
                max_new = 12
                seq, score = beam(m64, prompt, num_beams, max_new, own_eos)
                eos_choices = [own_eos]
                if len(seq) > 4:
                    eos_choices.append(seq[3])
                for eos in eos_choices:
                    s64, sc64 = beam(m64, prompt, num_beams, max_new, eos)
                    s32, _ = beam(m32, prompt, num_beams, max_new, eos)
                    if s64 != s32:
                        print(f"skip {name} {prompt} beams={num_beams} eos={eos}: float32 and float64 differ", file=sys.stderr)
                        continue
                    cases.append({"model": name, "prompt": prompt, "num_beams": num_beams, "max_new_tokens": max_new,
                                  "eos_token_id": eos, "tokens": s64, "score": sc64})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    import transformers
    doc = {"description": "HF transformers generate(num_beams=N, do_sample=False, length_penalty=1.0, "
                          "early_stopping=False), one prompt at a time, float64 (cases where float32 agrees). "
                          "tokens = generated ids only (EOS included when it ended the hypothesis); score = "
                          "sequences_scores (sum of log-probs / generated length); null for num_beams 1 (greedy).",
           "transformers": transformers.__version__, "torch": torch.__version__, "cases": cases}
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
