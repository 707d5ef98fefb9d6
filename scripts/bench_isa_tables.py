#!/usr/bin/env python3
"""Issue 18's training tables from one `scripts/bench_isa.sh` run (JSON lines, each with "cap").

For each cap (native, avx2), model and adapter: our step with each GEMM library and with the
default one, PyTorch+PEFT float32 and with bf16 autocast, the ratios, and the step's share of
the best GEMM rate the machine reached on the step's shapes (`bench --mode gemm`, either
library, its own threads or the engine's split). Prints Markdown with a verdict per target.

    python3 scripts/bench_isa_tables.py benchmarks/2026-12-07-isa.jsonl
"""
import json
import os
import sys


def load(path):
    rows, cpu = [], None
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            d = json.loads(line)
            if "lscpu_model" in d:
                cpu = d["lscpu_model"]
            else:
                rows.append(d)
    return rows, cpu


def model_of(d):
    return os.path.basename(d.get("model") or d.get("config", "")).removesuffix(".json")


def fmt(x, spec=".1f"):
    return "—" if x is None else format(x, spec)


def main(path):
    rows, lscpu = load(path)
    ours = [d for d in rows if "mode" in d]
    torch = [d for d in rows if str(d.get("system", "")).startswith("pytorch")]
    flags = next((d["cpu"] for d in ours if "cpu" in d), None)
    print(f"CPU: {lscpu or (flags or {}).get('model')}; features {', '.join((flags or {}).get('flags', []))}\n")
    verdicts = []
    for cap in ("native", "avx2"):
        sub = [d for d in ours if d.get("cap") == cap]
        if not sub:
            continue
        isa = sub[0]["cpu"]["isa"]
        print(f"### {cap} (our ISA level: {isa})\n")
        print("| model | adapter | ours OpenBLAS | ours oneDNN | default (lib) | PyTorch f32 | PyTorch bf16 autocast "
              "| default / PyTorch f32 | default / bf16 | best GEMM rate | step GFLOP/s (share) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for m in sorted({model_of(d) for d in sub}):
            gemm = [d for d in sub if d["mode"] == "gemm" and model_of(d) == m]
            # The best rate either library reaches on the step's shapes, with its own threads
            # (`gflops`) or the engine's split (`engine_gflops`, what the step runs).
            rate = lambda d: max(d["gflops"], d.get("engine_gflops") or 0)
            best = max((rate(d) for d in gemm), default=None)
            best_lib = max(gemm, key=rate)["cpu"]["gemm_backend"] if gemm else None
            for a in ("lora", "ndlinear"):
                tr = {d["cpu"]["gemm_backend"]: d for d in sub if d["mode"] == "train" and d["adapter"] == a and model_of(d) == m}
                ref = {d.get("autocast", "none"): d["train_tokens_per_s"] for d in torch
                       if d.get("cap") == cap and d["adapter"] == a and model_of(d) == m}
                default_lib = "onednn" if isa == "avx512" and "onednn" in tr else "openblas"
                dflt = tr.get(default_lib)
                tps = dflt and dflt["tokens_per_s"]
                r32 = tps / ref["none"] if tps and ref.get("none") else None
                r16 = tps / ref["bf16"] if tps and ref.get("bf16") else None
                share = dflt["gflops"] / best if dflt and best else None
                print(f"| {m} | {a} | {fmt(tr.get('openblas', {}).get('tokens_per_s'))} | {fmt(tr.get('onednn', {}).get('tokens_per_s'))} "
                      f"| {fmt(tps)} ({default_lib}) | {fmt(ref.get('none'))} | {fmt(ref.get('bf16'))} | {fmt(r32, '.2f')}× | {fmt(r16, '.2f')}× "
                      f"| {fmt(best, '.0f')} ({best_lib}) | {fmt(dflt and dflt['gflops'], '.0f')} ({fmt(share and 100 * share, '.0f')}%) |")
                verdicts.append((cap, m, a, r32, share))
        print()
    print("### Verdicts\n")
    print("| cap | model | adapter | ≥ 1.5× PyTorch f32 | ≥ 70% of the best GEMM rate |")
    print("|---|---|---|---|---|")
    for cap, m, a, r32, share in verdicts:
        v1 = "—" if r32 is None else ("met" if r32 >= 1.5 else "**not met**") + f" ({r32:.2f}×)"
        v2 = "—" if share is None else ("met" if share >= 0.7 else "**not met**") + f" ({100 * share:.0f}%)"
        print(f"| {cap} | {m} | {a} | {v1} | {v2} |")


if __name__ == "__main__":
    main(sys.argv[1])
