#!/usr/bin/env python3
"""Talks to a running `finetune serve` with the official `openai` Python client (pip install openai).

    python3 scripts/serve_openai_client.py --base-url http://127.0.0.1:8080/v1 \
        --models base,lora,nd --prompt-ids 177,83,47,229,82,157 --max-tokens 12 [--chat] [--api-key KEY]

For every model: a greedy completion, whole and streamed (the script checks they are equal and
that the stream ends with a finish reason); with --chat, the same for a chat completion of the
first model; then the error classes the client maps to exceptions (unknown model -> NotFoundError,
bad field -> BadRequestError, wrong key -> AuthenticationError when --api-key is given).
Prints one JSON object on stdout ({"models": [...], "completions": {model: text}, "chat": text,
"errors": {...}}) for the caller to compare; exits 1 on a failed check.
"""
import argparse
import json
import sys

import openai


def error_field(e, key):
    """A field of the OpenAI error body ({"error": {...}}) the client raised."""
    body = e.body if isinstance(e.body, dict) else {}
    return body.get("error", body).get(key)


def fail(msg):
    print(f"serve_openai_client: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--models", required=True, help="comma-separated model names to complete with")
    ap.add_argument("--prompt-ids", help="comma-separated prompt token ids")
    ap.add_argument("--prompt", help="prompt text")
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--chat", action="store_true", help="also run a chat completion (the model needs a chat template)")
    ap.add_argument("--api-key", default="none")
    a = ap.parse_args()

    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=600)
    out = {"models": sorted(m.id for m in client.models.list().data), "completions": {}, "errors": {}}
    prompt = [int(x) for x in a.prompt_ids.split(",")] if a.prompt_ids else a.prompt
    for model in a.models.split(","):
        whole = client.completions.create(model=model, prompt=prompt, max_tokens=a.max_tokens, temperature=0)
        text = whole.choices[0].text
        pieces, finish = [], None
        for chunk in client.completions.create(model=model, prompt=prompt, max_tokens=a.max_tokens, temperature=0, stream=True):
            if chunk.choices:
                pieces.append(chunk.choices[0].text)
                finish = chunk.choices[0].finish_reason or finish
        if "".join(pieces) != text:
            fail(f"{model}: streamed {''.join(pieces)!r} != whole {text!r}")
        if finish != whole.choices[0].finish_reason or whole.usage.completion_tokens <= 0:
            fail(f"{model}: finish {finish} vs {whole.choices[0].finish_reason}, usage {whole.usage}")
        out["completions"][model] = text

    if a.chat:
        model = a.models.split(",")[0]
        messages = [{"role": "user", "content": "Tell me a story."}]
        whole = client.chat.completions.create(model=model, messages=messages, max_tokens=a.max_tokens, temperature=0)
        text = whole.choices[0].message.content
        pieces = []
        for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=a.max_tokens, temperature=0, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        if "".join(pieces) != text:
            fail(f"chat: streamed {''.join(pieces)!r} != whole {text!r}")
        out["chat"] = text

    try:
        client.completions.create(model="no-such-model", prompt=prompt, max_tokens=1)
        fail("an unknown model was accepted")
    except openai.NotFoundError as e:
        out["errors"]["404"] = error_field(e, "code")
    try:
        client.completions.create(model=a.models.split(",")[0], prompt=prompt, max_tokens=1, temperature=9)
        fail("temperature 9 was accepted")
    except openai.BadRequestError as e:
        out["errors"]["400"] = error_field(e, "param")
    if a.api_key != "none":
        bad = openai.OpenAI(base_url=a.base_url, api_key="wrong", max_retries=0)
        try:
            bad.models.list()
            fail("a wrong API key was accepted")
        except openai.AuthenticationError as e:
            out["errors"]["401"] = error_field(e, "code")
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
