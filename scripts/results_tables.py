#!/usr/bin/env python3
"""The Markdown tables of RESULTS.md, from the files scripts/real_model_experiments.sh leaves in
runs/<exp>/ (eval JSON, metrics.jsonl, reference summaries, /usr/bin/time files).

  python3 scripts/results_tables.py exp1     # or exp3
"""
import json
import os
import sys


def load(p):
    return json.load(open(p)) if os.path.exists(p) else None


def rows(p):
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []


def timef(p):
    out = {}
    if os.path.exists(p):
        parts = open(p).read().split()
        for k, v in zip(parts[::2], parts[1::2]):
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


def train_stats(run):
    m = [r for r in rows(os.path.join(run, "metrics.jsonl")) if "loss" in r]
    if not m:
        return None
    tokens = sum(r["tokens"] for r in m)
    # A run stopped on purpose (SIGSTOP, e.g. to benchmark on an idle machine) records the
    # stopped seconds in `paused_s`; they are not training time.
    paused = float(open(os.path.join(run, "paused_s")).read()) if os.path.exists(os.path.join(run, "paused_s")) else 0
    wall = max(r["elapsed_s"] for r in m) - paused
    val = [r["val_loss"] for r in rows(os.path.join(run, "metrics.jsonl")) if "val_loss" in r]
    return {"steps": len(m), "tokens": tokens, "wall": wall, "tps": tokens / wall, "val": val,
            "rss": timef(run + ".log.time").get("peak_rss_kb", 0) / 1024 or None}


def methods(out, task):
    return [m for m in ("lora", "ndlinear", "ndlinear-zero") if os.path.isdir(f"{out}/ours-{task}-{m}")]


def exp1(out):
    tasks = [t for t in ("arc-e", "boolq") if os.path.exists(f"{out}/base-{t}.json")]
    name = {"lora": "LoRA r=8", "ndlinear": "NdLinear-LoRA"}
    print("### Accuracy (500 test items per task, greedy, LLM-Adapters scoring)\n")
    print("| task | run | finetune (Swift) % | PyTorch + PEFT % | difference (points) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for t in tasks:
        b, rb = load(f"{out}/base-{t}.json"), load(f"{out}/ref-base-{t}/summary.json")
        for label, ours, ref in [("base model", b, rb)] + [
                (name[m], load(f"{out}/ours-{t}-{m}/eval-{t}.json"), load(f"{out}/ref-{t}-{m}/summary.json")) for m in methods(out, t)]:
            oa, ra = (ours or {}).get("accuracy"), (ref or {}).get("accuracy")
            d = "–" if oa is None or ra is None else f"{100 * (oa - ra):+.1f}"
            print(f"| {t} | {label} | {pct(oa)} | {pct(ra)} | {d} |")
    print("\n### Training: the two loss curves (same initial adapter, same batches)\n")
    print("| task | method | steps | train tokens | loss at step 1 (ours / PyTorch) | last step | max per-step relative difference | validation loss before → after (ours; PyTorch) |")
    print("| --- | --- | ---: | ---: | --- | --- | ---: | --- |")
    for t in tasks:
        for m in methods(out, t):
            c = load(f"{out}/compare-{t}-{m}.json")
            s = train_stats(f"{out}/ours-{t}-{m}")
            if not c or not s:
                continue
            ov, rv = c["val_loss_ours"], c["val_loss_ref"]
            val = (f"{ov[0][1]:.4f} → {ov[-1][1]:.4f}; {rv[0][1]:.4f} → {rv[-1][1]:.4f}" if len(ov) > 1 and len(rv) > 1 else "–")
            print(f"| {t} | {name[m]} | {c['steps']} | {s['tokens']} | {c['first_loss'][0]:.5f} / {c['first_loss'][1]:.5f} | "
                  f"{c['last_loss'][0]:.5f} / {c['last_loss'][1]:.5f} | {c['loss_max_rel_diff'] * 100:.4f}% | {val} |")
    print("\n### Cost (training loop wall time, eval wall time, peak RSS of the process; machine shared, see notes)\n")
    print("| task | method | threads ours / PyTorch | train s ours / PyTorch | train tok/s ours / PyTorch | speed-up | eval s ours / PyTorch | peak RSS MB ours (train) / PyTorch (train+eval) |")
    print("| --- | --- | --- | --- | --- | ---: | --- | --- |")
    for t in tasks:
        for m in methods(out, t):
            s, r = train_stats(f"{out}/ours-{t}-{m}"), load(f"{out}/ref-{t}-{m}/summary.json")
            e = load(f"{out}/ours-{t}-{m}/eval-{t}.json")
            if not s or not r or not e:
                continue
            th = (load(f"{out}/ours-{t}-{m}/run.json") or {}).get("config", {}).get("threads", "?")
            print(f"| {t} | {name[m]} | {th} / {r['threads']} | {s['wall']:.0f} / {r['train_wall_s']:.0f} | {s['tps']:.0f} / {r['tokens_per_s']:.0f} | "
                  f"{s['tps'] / r['tokens_per_s']:.2f}× | {(e or {}).get('wall_s', 0):.0f} / {r.get('eval_wall_s', 0):.0f} | "
                  f"{s['rss'] or 0:.0f} / {r['peak_rss_mb']:.0f} |")


def exp3(out):
    zero = "ndlinear-zero" in methods(out, "gsm8k")
    name = {"lora": "LoRA r=8", "ndlinear": "NdLinear-LoRA, reference init" if zero else "NdLinear-LoRA",
            "ndlinear-zero": "NdLinear-LoRA, `--ndlinear-init zero`"}
    print("| run | train steps | train tokens | train s | tok/s | peak RSS MB (train) | GSM8K n | accuracy % (LLM-Adapters) | strict % (ours) | eval s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    b = load(f"{out}/base-gsm8k.json")
    if b:
        print(f"| base model | – | – | – | – | – | {b['n']} | {pct(b['accuracy'])} | {pct(b['accuracy_strict'])} | {b['wall_s']:.0f} |")
    for m in methods(out, "gsm8k"):
        s, e = train_stats(f"{out}/ours-gsm8k-{m}"), load(f"{out}/ours-gsm8k-{m}/eval-gsm8k.json")
        if not s:
            continue
        ev = f"{e['n']} | {pct(e['accuracy'])} | {pct(e['accuracy_strict'])} | {e['wall_s']:.0f}" if e else "– | – | – | –"
        print(f"| {name[m]} | {s['steps']} | {s['tokens']} | {s['wall']:.0f} | {s['tps']:.0f} | {s['rss'] or 0:.0f} | {ev} |")


if __name__ == "__main__":
    exp = sys.argv[1] if len(sys.argv) > 1 else "exp1"
    {"exp1": exp1, "exp3": exp3}[exp](os.path.join("runs", exp))
