#!/usr/bin/env python3
"""Compare a `finetune train` run with a scripts/reference_finetune.py run of the same config.

  python3 scripts/compare_runs.py OURS_DIR REF_DIR [--svg loss.svg] [--title T]

Prints one JSON object: per-step training loss agreement (max and mean relative difference),
validation loss before/after on both sides, training wall time, tokens/s and peak RSS on both
sides (from metrics.jsonl, summary.json, and the `/usr/bin/time` files DIR.log.time the
experiment script writes), eval accuracy when present. --svg draws both loss curves on one
chart (ours solid, reference dashed; validation points as markers). No third-party packages.
"""
import argparse
import glob
import json
import os


def rows(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def time_file(run_dir):
    p = run_dir.rstrip("/") + ".log.time"
    out = {}
    if os.path.exists(p):
        for line in open(p):
            parts = line.split()
            for k, v in zip(parts[::2], parts[1::2]):
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
    return out


def svg(curves, title, path):
    """curves: [(label, [(step, loss)], style, colour, [(step, val_loss)])]."""
    W, H, L, R, T, B = 640, 360, 64, 16, 34, 46
    pts = [p for c in curves for p in c[1] + c[4]]
    xmax = max(p[0] for p in pts) or 1
    ylo, yhi = min(p[1] for p in pts), max(p[1] for p in pts)
    pad = (yhi - ylo) * 0.05 or 0.1
    ylo, yhi = ylo - pad, yhi + pad
    X = lambda s: L + (W - L - R) * s / xmax
    Y = lambda v: T + (H - T - B) * (yhi - v) / (yhi - ylo)
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for k in range(6):
        v = ylo + (yhi - ylo) * k / 5
        o.append(f'<line x1="{L}" x2="{W - R}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#e5e5e5"/>')
        o.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for k in range(6):
        s = xmax * k / 5
        o.append(f'<text x="{X(s):.1f}" y="{H - B + 16}" text-anchor="middle">{s:.0f}</text>')
    o.append(f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="black"/><line x1="{L}" x2="{L}" y1="{T}" y2="{H - B}" stroke="black"/>')
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">optimizer step</text>')
    o.append(f'<text transform="translate(16,{(T + H - B) / 2}) rotate(-90)" text-anchor="middle">mean token loss</text>')
    for i, (label, data, dash, colour, val) in enumerate(curves):
        d = " ".join(f"{X(s):.1f},{Y(v):.1f}" for s, v in data)
        o.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" stroke-dasharray="{dash}" points="{d}"/>')
        for s, v in val:
            o.append(f'<circle cx="{X(s):.1f}" cy="{Y(v):.1f}" r="4" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = T + 14 + 16 * i
        o.append(f'<line x1="{W - R - 210}" x2="{W - R - 180}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
        o.append(f'<text x="{W - R - 174}" y="{ly}">{label}</text>')
    o.append("</svg>")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(o) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("ref")
    ap.add_argument("--svg")
    ap.add_argument("--title", default="training loss")
    a = ap.parse_args()
    om, rm = rows(os.path.join(a.ours, "metrics.jsonl")), rows(os.path.join(a.ref, "metrics.jsonl"))
    ot = {r["step"]: r["loss"] for r in om if "loss" in r}
    rt = {r["step"]: r["loss"] for r in rm if "loss" in r}
    ov = [(r["step"], r["val_loss"]) for r in om if "val_loss" in r]
    rv = [(r["step"], r["val_loss"]) for r in rm if "val_loss" in r]
    steps = sorted(set(ot) & set(rt))
    rel = [abs(ot[s] - rt[s]) / abs(rt[s]) for s in steps]
    rs = json.load(open(os.path.join(a.ref, "summary.json")))
    o_time, r_time = time_file(a.ours), time_file(a.ref)
    o_tokens = sum(r.get("tokens", 0) for r in om if "loss" in r)
    o_wall = max((r.get("elapsed_s", 0) for r in om if "loss" in r), default=0)
    out = {
        "steps": len(steps), "steps_ours": len(ot), "steps_ref": len(rt),
        "loss_max_rel_diff": max(rel) if rel else None, "loss_mean_rel_diff": sum(rel) / len(rel) if rel else None,
        "worst_step": steps[rel.index(max(rel))] if rel else None,
        "first_loss": [ot.get(1), rt.get(1)], "last_loss": [ot.get(steps[-1]), rt.get(steps[-1])] if steps else None,
        "val_loss_ours": ov, "val_loss_ref": rv,
        "train_wall_s": {"ours": o_wall, "ref": rs.get("train_wall_s")},
        "train_tokens_per_s": {"ours": o_tokens / o_wall if o_wall else None, "ref": rs.get("tokens_per_s")},
        "process_wall_s": {"ours_train": o_time.get("wall_s"), "ref_train_and_eval": r_time.get("wall_s")},
        "peak_rss_mb": {"ours_train": o_time["peak_rss_kb"] / 1024 if "peak_rss_kb" in o_time else None,
                        "ref": rs.get("peak_rss_mb")},
        "accuracy": {"ref": rs.get("accuracy"), "n_ref": rs.get("n"), "ref_eval_wall_s": rs.get("eval_wall_s")},
    }
    for e in glob.glob(os.path.join(a.ours, "eval-*.json")):
        j = json.load(open(e))
        out["accuracy"].update({"ours": j.get("accuracy"), "ours_strict": j.get("accuracy_strict"), "n_ours": j.get("n"),
                                "ours_eval_wall_s": j.get("wall_s")})
    if a.svg:
        svg([("finetune (Swift)", [(s, ot[s]) for s in sorted(ot)], "none", "#1f77b4", ov),
             ("PyTorch + PEFT", [(s, rt[s]) for s in sorted(rt)], "6,4", "#d62728", rv)], a.title, a.svg)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
