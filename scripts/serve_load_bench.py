#!/usr/bin/env python3
"""Load benchmark: `finetune serve` against llama.cpp's `llama-server` on the same GGUF.

    python3 scripts/serve_load_bench.py --gguf models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf \
        --finetune .build/release/finetune --llama-server /path/to/llama-server \
        [--clients 1,4,16] [--requests 4] [--max-tokens 64] [--threads 2] [--json out.json]

Starts each server in turn on a free port with the same thread count and 16 parallel rows
(finetune: --max-batch 16; llama-server: -np 16 with continuous batching and a context of 16 x
--ctx-per-slot), waits for /health, then for every N in --clients runs N client threads that
each send --requests completions one after another (the same prompts, in the same order, for
both servers; temperature 0, max_tokens --max-tokens, ignore_eos so every request generates
exactly max_tokens tokens). Reports per server and N: aggregate completion tokens/s over the
wall time of the level, and p50/p95 request latency. Only the standard library is used.
Either server can be left out (omit its binary).
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain why the sky is blue in simple words.",
    "List five uses of a paperclip.",
    "What is the capital of France, and what is it famous for?",
    "Describe a sunrise over the ocean.",
    "Give me three tips for learning a new language.",
    "Summarize the plot of a fairy tale you know.",
    "Why do cats purr?",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=3600):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_healthy(base, proc, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{base} not healthy after {timeout} s")


def percentile(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def run_level(base, model, clients, requests, max_tokens):
    latencies, tokens, errors = [], [], []
    lock = threading.Lock()

    def client(c):
        for r in range(requests):
            prompt = PROMPTS[(c * requests + r) % len(PROMPTS)]
            body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
            t0 = time.perf_counter()
            try:
                out = post(base + "/v1/completions", body)
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                with lock:
                    errors.append(str(e))
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                tokens.append(out["usage"]["completion_tokens"])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        print(f"  {len(errors)} failed requests, first: {errors[0]}", file=sys.stderr)
    return {
        "clients": clients, "requests": len(latencies), "errors": len(errors), "wall_s": wall,
        "completion_tokens": sum(tokens), "tokens_per_s": sum(tokens) / wall if wall > 0 else 0,
        "p50_ms": 1000 * percentile(latencies, 0.5) if latencies else None,
        "p95_ms": 1000 * percentile(latencies, 0.95) if latencies else None,
    }


def bench_server(name, cmd, port, model, args):
    print(f"{name}: {' '.join(cmd)}", file=sys.stderr)
    log = open(os.devnull, "w") if not args.server_log else open(f"{args.server_log}.{name}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        post(base + "/v1/completions", {"model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0})  # warm-up
        rows = []
        for n in args.clients:
            r = run_level(base, model, n, args.requests, args.max_tokens)
            r["server"] = name
            rows.append(r)
            print(f"  {name} N={n}: {r['tokens_per_s']:.1f} tokens/s, p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms", file=sys.stderr)
        return rows
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--finetune", help="the finetune binary (omit to skip)")
    ap.add_argument("--llama-server", help="the llama-server binary (omit to skip)")
    ap.add_argument("--clients", default="1,4,16", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--requests", type=int, default=4, help="requests per client per level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--parallel", type=int, default=16, help="rows decoded together by each server")
    ap.add_argument("--ctx-per-slot", type=int, default=512, help="llama-server: context per parallel slot")
    ap.add_argument("--server-log", help="write each server's output to PREFIX.NAME.log")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args()

    rows = []
    if args.finetune:
        port = free_port()
        cmd = [args.finetune, "serve", "--model", args.gguf, "--port", str(port), "--threads", str(args.threads),
               "--max-batch", str(args.parallel), "--served-name", "bench", "--max-queue", "1024"]
        rows += bench_server("finetune", cmd, port, "bench", args)
    if args.llama_server:
        port = free_port()
        cmd = [args.llama_server, "-m", args.gguf, "--port", str(port), "-t", str(args.threads), "-np", str(args.parallel),
               "-c", str(args.parallel * args.ctx_per_slot), "-cb", "--no-webui"]
        rows += bench_server("llama-server", cmd, port, "bench", args)

    print(f"| server | clients | requests | tokens/s | p50 ms | p95 ms |")
    print(f"| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['server']} | {r['clients']} | {r['requests']} | {r['tokens_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gguf": args.gguf, "max_tokens": args.max_tokens, "threads": args.threads, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
