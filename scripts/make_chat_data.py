#!/usr/bin/env python3
"""Makes data/gsm8k-chat-train-40.jsonl and data/gsm8k-chat-val-10.jsonl: small multi-turn chat
files (`messages` records) from the bundled GSM8K slices, for the README's "Chat data" run.

Each conversation is a system prompt and two consecutive GSM8K problems asked as two user turns;
each assistant turn is that problem's published solution with the `<<48/2=24>>` calculator
annotations removed and the final `#### 72` written as "The answer is 72." Nothing is generated
or paraphrased. Train: problems 1-80 of data/gsm8k-train-1000.jsonl (40 conversations);
validation: problems 1-20 of data/gsm8k-val-100.jsonl (10 conversations).
usage: python3 scripts/make_chat_data.py   (from the repository root)
"""
import json, re

SYSTEM = "You are a careful math tutor. Solve the problem step by step, then state the answer."


def turn(problem):
    reasoning, final = problem["answer"].rsplit("####", 1)
    reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
    return [{"role": "user", "content": problem["question"].strip()},
            {"role": "assistant", "content": f"{reasoning}\nThe answer is {final.strip()}."}]


def convert(src, dst, problems):
    rows = [json.loads(l) for l in open(src)][:problems]
    with open(dst, "w") as f:
        for a, b in zip(rows[0::2], rows[1::2]):
            f.write(json.dumps({"messages": [{"role": "system", "content": SYSTEM}] + turn(a) + turn(b)}, ensure_ascii=False) + "\n")


convert("data/gsm8k-train-1000.jsonl", "data/gsm8k-chat-train-40.jsonl", 80)
convert("data/gsm8k-val-100.jsonl", "data/gsm8k-chat-val-10.jsonl", 20)
