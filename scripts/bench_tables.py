#!/usr/bin/env python3
"""Markdown tables and issue-8 target verdicts from a scripts/bench_vs_torch.sh JSONL file.

usage: python3 scripts/bench_tables.py benchmarks/DATE-bench_vs_torch.jsonl
Every figure printed comes from the file; ratios pair measurements of the same run.
"""
import json
import os
import sys

# llama.cpp `llama-bench` pp256 / tg32 on SmolLM2-135M-Instruct, 2 threads, this machine
# (quoted from issue 8; llama.cpp is not installed here, so not re-measured in the same run).
LLAMA_CPP = {"f32": (370, 34), "bf16": (394, 57)}
READ_BW_GBS = 21.0  # the machine's 2-thread read bandwidth quoted by issue 8


def shape(path):
    return os.path.basename(path).removesuffix(".json")


def load(path):
    ours, torch = [], []
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        (torch if "system" in d else ours).append(d)
    return ours, torch


def fmt(x, spec=".1f"):
    return "—" if x is None else format(x, spec)


def verdict(value, ok):
    """`ok(value)` as **met** / not met, or "not measured" when the figure is missing."""
    return "not measured" if value is None else ("**met**" if ok(value) else "not met")


def main():
    ours, torch = load(sys.argv[1])
    dt = {"bf16": "bfloat16", "f32": "float32"}
    shapes = sorted({shape(r["model"]) for r in ours if r["mode"] != "gemm" and r["seq"] == 256
                     and "llama-3-8b" not in r["model"]}, key=lambda s: [shape(r["model"]) for r in ours].index(s))
    T = lambda s, a: next((t for t in reversed(torch) if shape(t["config"]) == s and t["adapter"] == a and t["seq"] == 256), None)
    # Rows with a prompt fraction only appear in their own table.
    O = lambda s, **kw: next((r for r in reversed(ours) if shape(r["model"]) == s and
                              (r.get("prompt_fraction") or 0) == kw.get("prompt_fraction", 0) and
                              all(r.get(k) == v for k, v in kw.items() if k != "prompt_fraction")), None)
    threads = max(r["threads"] for r in ours)

    print("## Training step, seq 256 (tokens/s; GFLOP/s from our FLOP model)\n")
    print("| shape | adapter | ours bf16 | ours f32 | PyTorch f32 | ours bf16 / PyTorch | "
          f"sgemm rate on the step's shapes ({threads} thr) | ours bf16 / sgemm rate |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    train_checks = []
    for s in shapes:
        g = O(s, mode="gemm", threads=threads)
        for a in ("lora", "ndlinear"):
            b = O(s, mode="train", adapter=a, dtype=dt["bf16"], seq=256, threads=threads)
            f = O(s, mode="train", adapter=a, dtype=dt["f32"], seq=256, threads=threads)
            t = T(s, a)
            tt = t and t["train_tokens_per_s"]
            ratio = b and tt and b["tokens_per_s"] / tt
            frac = b and g and b["gflops"] / g["gflops"]
            train_checks.append((s, a, ratio, frac))
            print(f"| {s} | {a} | {fmt(b and b['tokens_per_s'])} ({fmt(b and b['gflops'], '.0f')}) | "
                  f"{fmt(f and f['tokens_per_s'])} ({fmt(f and f['gflops'], '.0f')}) | {fmt(tt)} | "
                  f"{fmt(ratio, '.2f')}× | {fmt(g and g['gflops'], '.0f')} (engine split {fmt(g and g.get('engine_gflops'), '.0f')}) | "
                  f"{fmt(frac and 100 * frac, '.0f')}% |")
    print()
    for s, a, ratio, frac in train_checks:
        print(f"- {s} {a}: ≥ 75% of the sgemm rate: {verdict(frac, lambda v: v >= 0.75)} "
              f"({fmt(frac and 100 * frac, '.0f')}%); ≥ 1.5× PyTorch: {verdict(ratio, lambda v: v >= 1.5)} "
              f"({fmt(ratio, '.2f')}×)")

    print("\n## Prefill, seq 256 (tokens/s)\n")
    print("logits at every position (`all`, what the PyTorch reference computes) and at the last "
          "position only (`last`, what generation needs; KV cache filled).\n")
    print("| shape | adapter | ours bf16 all | ours bf16 last | ours f32 all | ours f32 last | PyTorch f32 (all) | "
          "bf16 all / PyTorch | bf16 last / PyTorch |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    pre_checks = []
    for s in shapes:
        for a in ("lora", "ndlinear"):
            v = {(d, l): O(s, mode="prefill", adapter=a, dtype=dt[d], logits=l, seq=256, threads=threads)
                 for d in ("bf16", "f32") for l in ("all", "last")}
            t = T(s, a)
            tp = t and t["prefill_tokens_per_s"]
            r_all = v["bf16", "all"] and tp and v["bf16", "all"]["tokens_per_s"] / tp
            r_last = v["bf16", "last"] and tp and v["bf16", "last"]["tokens_per_s"] / tp
            pre_checks.append((s, a, r_all, r_last, v))
            cell = lambda k: fmt(v[k] and v[k]["tokens_per_s"])
            print(f"| {s} | {a} | {cell(('bf16', 'all'))} | {cell(('bf16', 'last'))} | {cell(('f32', 'all'))} | "
                  f"{cell(('f32', 'last'))} | {fmt(tp)} | {fmt(r_all, '.2f')}× | {fmt(r_last, '.2f')}× |")
    print()
    for s, a, r_all, r_last, v in pre_checks:
        line = (f"- {s} {a}: ≥ 1.6× PyTorch: all-position {verdict(r_all, lambda v: v >= 1.6)} "
                f"({fmt(r_all, '.2f')}×), last-position {verdict(r_last, lambda v: v >= 1.6)} ({fmt(r_last, '.2f')}×)")
        if s.startswith("smollm2"):
            for d in ("bf16", "f32"):
                x = v[d, "last"] and v[d, "last"]["tokens_per_s"]
                line += f"; ≥ llama.cpp {d} pp256 {LLAMA_CPP[d][0]}: {verdict(x, lambda v: v >= LLAMA_CPP[d][0])} ({fmt(x)})"
        print(line)

    # The bound: the read bandwidth measured in this run (`bench --mode bandwidth`, median of
    # its measurements) when present, else the issue's 21 GB/s.
    bws = sorted(r["gb_per_s"] for r in ours if r["mode"] == "bandwidth" and r["threads"] == threads)
    bound = bws[len(bws) // 2] if bws else READ_BW_GBS
    source = (f"measured in this run: {', '.join(f'{b:.1f}' for b in bws)} GB/s, median {bound:.1f}"
              if bws else f"the issue's {READ_BW_GBS:.0f} GB/s")
    print(f"\n## Decode after a 256-token prefill (tokens/s, GB/s of weights streamed; bound: {source})\n")
    print(f"| shape | adapter | ours bf16 (GB/s) | ours f32 (GB/s) | PyTorch f32 | bf16 / PyTorch | bf16 % of {bound:.1f} GB/s | "
          f"bf16 % of the issue's {READ_BW_GBS:.0f} GB/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    dec_checks = []
    for s in shapes:
        for a in ("none", "lora", "ndlinear"):
            b = O(s, mode="decode", adapter=a, dtype=dt["bf16"], threads=threads)
            f = O(s, mode="decode", adapter=a, dtype=dt["f32"], threads=threads)
            t = T(s, a) if a != "none" else None
            td = t and t["decode_tokens_per_s"]
            ratio = b and td and b["tokens_per_s"] / td
            frac = b and b["gb_per_s"] / bound
            issue = b and b["gb_per_s"] / READ_BW_GBS
            dec_checks.append((s, a, ratio, frac, b))
            print(f"| {s} | {a} | {fmt(b and b['tokens_per_s'])} ({fmt(b and b['gb_per_s'])}) | "
                  f"{fmt(f and f['tokens_per_s'])} ({fmt(f and f['gb_per_s'])}) | {fmt(td)} | {fmt(ratio, '.2f')}× | "
                  f"{fmt(frac and 100 * frac, '.0f')}% | {fmt(issue and 100 * issue, '.0f')}% |")
    print()
    for s, a, ratio, frac, b in dec_checks:
        line = f"- {s} {a}: ≥ 70% of the bandwidth bound: {verdict(frac, lambda v: v >= 0.7)} ({fmt(frac and 100 * frac, '.0f')}%)"
        if a != "none" and s.startswith("smollm2"):
            line += f"; ≥ 4× PyTorch: {verdict(ratio, lambda v: v >= 4)} ({fmt(ratio, '.2f')}×)"
            line += f"; llama.cpp bf16 tg32 {LLAMA_CPP['bf16'][1]}: {fmt(b and b['tokens_per_s'])}"
        print(line)

    print("\n## Adapter overhead (training step, bf16, seq 256, against the same step without adapters)\n")
    print("| shape | no adapter tok/s | LoRA r=8 tok/s | LoRA overhead | NdLinear tok/s | NdLinear overhead | "
          "NdLinear FLOP share | target ≤ 1.5 × share |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    over_checks = []
    for s in shapes:
        n, l, d = (O(s, mode="train", adapter=a, dtype=dt["bf16"], seq=256, threads=threads) for a in ("none", "lora", "ndlinear"))
        if not (n and l and d):
            continue
        lo = n["tokens_per_s"] / l["tokens_per_s"] - 1
        no = n["tokens_per_s"] / d["tokens_per_s"] - 1
        share = d["flops_per_step"] / n["flops_per_step"] - 1
        over_checks.append((s, lo, no, share))
        print(f"| {s} | {fmt(n['tokens_per_s'])} | {fmt(l['tokens_per_s'])} | {100 * lo:.1f}% | {fmt(d['tokens_per_s'])} | "
              f"{100 * no:.1f}% | {100 * share:.1f}% | {150 * share:.1f}% |")
    print()
    for s, lo, no, share in over_checks:
        print(f"- {s}: LoRA ≤ 5%: {verdict(lo, lambda v: v <= 0.05)} ({100 * lo:.1f}%); NdLinear ≤ 1.5 × its FLOP share "
              f"({150 * share:.1f}%): {verdict(no, lambda v: v <= 1.5 * share)} ({100 * no:.1f}%)")

    print("\n## Peak RSS (MB): our largest bf16 run per adapter against the PyTorch process (train + prefill + decode)\n")
    print("| shape | adapter | ours bf16 | PyTorch f32 | ratio | ≤ 0.6× |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for s in shapes:
        for a in ("lora", "ndlinear"):
            rs = [r["peak_rss_mb"] for r in ours if shape(r["model"]) == s and r.get("adapter") == a
                  and r.get("dtype") == dt["bf16"] and r["seq"] == 256]
            t = T(s, a)
            if rs and t:
                print(f"| {s} | {a} | {max(rs):.0f} | {t['peak_rss_mb']:.0f} | {max(rs) / t['peak_rss_mb']:.2f}× | "
                      f"{verdict(max(rs) / t['peak_rss_mb'], lambda v: v <= 0.6)} |")

    print("\n## Thread scaling (training step, bf16, seq 256)\n")
    print("| shape | adapter | 1 thread tok/s | N threads tok/s | speed-up | OpenBLAS sgemm speed-up on the step's shapes | ratio | ≥ 90% |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for s in shapes:
        g1, gn = O(s, mode="gemm", threads=1), O(s, mode="gemm", threads=threads)
        for a in ("lora", "ndlinear"):
            one = O(s, mode="train", adapter=a, dtype=dt["bf16"], seq=256, threads=1)
            n = O(s, mode="train", adapter=a, dtype=dt["bf16"], seq=256, threads=threads)
            if not (one and n and g1 and gn):
                continue
            su, gsu = n["tokens_per_s"] / one["tokens_per_s"], gn["gflops"] / g1["gflops"]
            print(f"| {s} | {a} | {one['tokens_per_s']:.1f} | {n['tokens_per_s']:.1f} | {su:.2f}× | {gsu:.2f}× | "
                  f"{100 * su / gsu:.0f}% | {verdict(su / gsu, lambda v: v >= 0.9)} |")

    print("\n## Step time against sequence length (bf16, batch 1)\n")
    print("| shape | adapter | seq | s/step | tokens/s | GFLOP/s | peak RSS MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    sweep = {}
    for r in ours:  # the last measurement of each (shape, adapter, seq)
        if r["mode"] == "train" and r["adapter"] != "none" and r["dtype"] == dt["bf16"] and r["threads"] == threads \
                and not r.get("prompt_fraction"):
            sweep[shape(r["model"]), r["adapter"], r["seq"]] = r
    swept = {k[0] for k in sweep if k[2] != 256}
    for k in sorted(k for k in sweep if k[0] in swept):
        r = sweep[k]
        print(f"| {k[0]} | {k[1]} | {k[2]} | {r['seconds_per_step']:.2f} | {r['tokens_per_s']:.1f} | {r['gflops']:.0f} | {r['peak_rss_mb']:.0f} |")

    fractions = sorted({r["prompt_fraction"] for r in ours if r.get("prompt_fraction")})
    if fractions:
        print("\n## Prompt masking (training step, LoRA, bf16, seq 256; positions without a target compute no logits)\n")
        print("| shape | " + " | ".join(f"{100 * f:.0f}% masked tok/s" for f in [0] + fractions) + " |")
        print("| --- |" + " ---: |" * (1 + len(fractions)))
        for s in shapes:
            rows = [O(s, mode="train", adapter="lora", dtype=dt["bf16"], seq=256, threads=threads, prompt_fraction=f)
                    for f in [0] + fractions]
            base = rows[0]["tokens_per_s"] if rows[0] else None
            cells = [fmt(r and r["tokens_per_s"]) + (f" ({r['tokens_per_s'] / base:.2f}×)" if r and base and i else "")
                     for i, r in enumerate(rows)]
            print(f"| {s} | " + " | ".join(cells) + " |")

    big = next((r for r in reversed(ours) if "llama-3-8b" in r["model"]), None)
    print("\n## Llama-3-8B shape, NdLinear-LoRA, random bf16 weights, seq 256\n")
    if big:
        gib = big["peak_rss_mb"] / 1024
        print(f"{big['seconds_per_step']:.1f} s per training step ({big['tokens_per_s']:.2f} tokens/s, "
              f"{big['gflops']:.0f} GFLOP/s), peak RSS {gib:.1f} GiB: within 24 GiB {verdict(gib, lambda v: v <= 24)}.")
    else:
        print("not measured in this file.")


if __name__ == "__main__":
    main()
