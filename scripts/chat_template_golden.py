#!/usr/bin/env python3
"""Golden fixtures for the Swift chat-template interpreter and the `chat` prompt template.

Writes Tests/Fixtures/chat_templates/golden.json with:
  templates  name -> Jinja source (copied in, so the Swift tests read only the repo)
  cases      real templates rendered over several conversations by transformers' own
             `render_jinja_template` (the function behind `apply_chat_template`)
  snippets   small templates exercising single jinja features, rendered by transformers'
             compiled environment (`_compile_jinja_template`), or the error they raise
  chat_data  SmolLM2-135M-Instruct token ids of instruction records under `--template chat`,
             from `tokenizer.apply_chat_template(..., tokenize=True)`

Dicts are written as {"__dict__": [[key, value], ...]} so that key order (which `tojson` and
iteration expose) survives JSON readers that do not keep it.

Usage: python3 scripts/chat_template_golden.py   (needs transformers>=4.43 and jinja2>=3.1;
reads ../shared/data/tokenizers and models/real/smollm2-135m-f32, or $FINETUNE_SHARED / $SMOLLM2_DIR)
"""
import json
import os

from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("FINETUNE_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
SMOLLM2 = os.environ.get("SMOLLM2_DIR", os.path.join(REPO, "models/real/smollm2-135m-f32"))
TOKENIZERS = os.path.join(SHARED, "data/tokenizers")
OUT = os.path.join(REPO, "Tests/Fixtures/chat_templates/golden.json")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def config_template(path):
    t = json.loads(read(path)).get("chat_template")
    if isinstance(t, list):  # [{name, template}]: "default" wins
        t = next((x["template"] for x in t if x["name"] == "default"), t[0]["template"])
    return t


def enc(v):
    """JSON-encodes a value keeping dict order."""
    if isinstance(v, dict):
        return {"__dict__": [[k, enc(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return [enc(x) for x in v]
    return v


# name -> (source, special tokens transformers would pass as bos_token / eos_token)
LLAMA3 = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
QWEN = {"eos_token": "<|im_end|>"}
vocab_templates = os.path.join(TOKENIZERS, "llama.cpp-vocab/templates")
TEMPLATES = {
    "qwen2.5-7b-instruct": (read(os.path.join(vocab_templates, "Qwen-Qwen2.5-7B-Instruct.jinja")), QWEN),
    "qwen3-0.6b": (read(os.path.join(vocab_templates, "Qwen-Qwen3-0.6B.jinja")), QWEN),
    "llama-3.1-8b-instruct": (read(os.path.join(vocab_templates, "meta-llama-Llama-3.1-8B-Instruct.jinja")), LLAMA3),
    "llama-3.2-3b-instruct": (read(os.path.join(vocab_templates, "meta-llama-Llama-3.2-3B-Instruct.jinja")), LLAMA3),
    "qwen3-tokenizer-config": (config_template(os.path.join(TOKENIZERS, "qwen3/tokenizer_config.json")), QWEN),
    "smollm2-135m-instruct": (read(os.path.join(SMOLLM2, "chat_template.jinja")),
                              {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}),
}
rtp = config_template(os.path.join(TOKENIZERS, "qwen2/tokenizer_config.rtp-llm-fixture.json"))
if rtp:
    TEMPLATES["qwen2-rtp-llm-fixture"] = (rtp, {"eos_token": "<|endoftext|>"})

CONVERSATIONS = {
    "system_user": [{"role": "system", "content": "You are a careful assistant."},
                    {"role": "user", "content": "What is 2+2?"}],
    "user_only": [{"role": "user", "content": "Hello!"}],
    "multi_turn": [{"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke."}],
    "user_assistant": [{"role": "user", "content": "Name a prime."},
                       {"role": "assistant", "content": "7"}],
    "unicode_quotes": [{"role": "system", "content": "  Spaces around, tab\tand newline\n  "},
                       {"role": "user", "content": "Ünïcödé “quotes” 'single' \"double\" — 🎉 \\ {{ not jinja }} {% raw %}\r\nend  "}],
    "think": [{"role": "user", "content": "Solve 3*4."},
              {"role": "assistant", "content": "<think>\nmultiply 3 by 4\n</think>\n\nThe answer is 12."}],
    "think_then_user": [{"role": "user", "content": "Solve 3*4."},
                        {"role": "assistant", "content": "<think>\nmultiply\n</think>\n\n12"},
                        {"role": "user", "content": "And 5*6?"}],
}

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city (°C).",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name, e.g. \"Zürich\""},
                                                    "days": {"type": "integer", "minimum": 1}},
                   "required": ["city"]}}}
TOOL_CONVERSATION = [
    {"role": "system", "content": "Use tools when helpful."},
    {"role": "user", "content": "Weather in Zürich?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}}]},
    {"role": "tool", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
    {"role": "tool", "content": "second result"},
]


def render(source, messages, add_generation_prompt, tools=None, **kwargs):
    rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=source,
                                        add_generation_prompt=add_generation_prompt, **kwargs)
    return rendered[0]


def cases():
    out = []
    for tname, (source, special) in TEMPLATES.items():
        variants = [(c, g, {}) for c in CONVERSATIONS for g in (True, False)]
        if "qwen3" in tname:
            variants.append(("user_only", True, {"enable_thinking": False}))
        for conv, gen, extra in variants:
            kwargs = {**special, "date_string": "05 Mar 2025", **extra}
            out.append({"template": tname, "name": f"{conv}/{'gen' if gen else 'nogen'}" + "".join(f"/{k}" for k in extra),
                        "messages": enc(CONVERSATIONS[conv]), "add_generation_prompt": gen, "tools": None,
                        "kwargs": enc(kwargs), "expected": render(source, CONVERSATIONS[conv], gen, **kwargs)})
        # Tool use, where the template has it (tojson, tool_calls, tool responses).
        if "{%- if tools" in source or "tools is not none" in source:
            extras = [{}]
            if "builtin_tools" in source:
                extras.append({"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]})
            for extra in extras:
                kwargs = {**special, "date_string": "05 Mar 2025", **extra}
                msgs = TOOL_CONVERSATION[:3] if "llama" in tname else TOOL_CONVERSATION
                out.append({"template": tname, "name": "tools" + "".join(f"/{k}" for k in extra), "messages": enc(msgs),
                            "add_generation_prompt": True, "tools": enc([WEATHER_TOOL]), "kwargs": enc(kwargs),
                            "expected": render(source, msgs, True, tools=[WEATHER_TOOL], **kwargs)})
            if "llama" in tname:
                # raise_exception from a real template: tools but no user message.
                msgs = [{"role": "system", "content": "sys"}]
                try:
                    render(source, msgs, True, tools=[WEATHER_TOOL], **special)
                    raise SystemExit(f"{tname}: expected raise_exception")
                except Exception as e:  # jinja2.exceptions.TemplateError
                    out.append({"template": tname, "name": "tools/no_user", "messages": enc(msgs), "add_generation_prompt": True,
                                "tools": enc([WEATHER_TOOL]), "kwargs": enc(special), "error": str(e), "error_kind": "raised"})
    return out


# (template, context) pairs, each checking one feature against jinja2 itself.
SNIPPETS = [
    ("{% set x = 0 %}{% for i in [1,2] %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}", {}),
    ("{% for i in [1,2] %}{% if i == 2 %}[{{ y }}]{% endif %}{% set y = i %}{% endfor %}", {}),
    ("{% if true %}{% set z = 5 %}{% endif %}{{ z }}", {}),
    ("{% set ns = namespace(a=1, b='x') %}{% for i in [1,2,3] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }} {{ ns.b }} {{ ns }}", {}),
    ("{% for a in [1,2,3,4] if a > 1 %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.length }}/{{ loop.first }}/{{ loop.last }}/{{ loop.revindex }} {% else %}E{% endfor %}", {}),
    ("{% for a in [] %}x{% else %}empty{% endfor %}|{% for a in u %}x{% endfor %}|{% for k in d %}{{ k }}{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in d | items %}{{ k }}{{ v }}{% endfor %}", {"d": {"b": 1, "a": [2]}}),
    ("{% for a in 'abc' %}{{ loop.cycle('x', 'y') }}{{ a }}{% if a == 'b' %}{% break %}{% endif %}{% endfor %}", {}),
    ("{% for a in [1,2,3,4] %}{% if a is even %}{% continue %}{% endif %}{{ a }}{% endfor %}", {}),
    ("{{ 'abc'[::-1] }} {{ [1,2,3,4,5][1:4:2] }} {{ 'abc'[-1] }} {{ [1,2,3][-2:] }} {{ 'hello'[1:-1] }} [{{ [1,2][5] }}]", {}),
    ("{{ [1, 'a', none, true, 1.5, {'k': \"it's\"}] }} {{ (1, 2) is sequence }} {{ {'a': 1}['a'] }}", {}),
    ("{{ 1e15 }} {{ 1e16 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1/3 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ 10 / 4 }} {{ 3 - 5 }} {{ -2.5 // 1 }}", {}),
    ("{{ 'x' ~ 1 ~ none ~ u ~ true }}|{{ 1 + true }}|{{ [1] + [2] }}|{{ 1 == 1.0 }}|{{ 'a' < 'b' }}|{{ [1, 2] < [1, 3] }}", {}),
    ("{{ 'b' in 'abc' }} {{ 1 in [1, 2] }} {{ 'k' in d }} {{ 'z' not in d }} {{ 'a' in u }} {{ not true }} {{ true and 'x' }} {{ 0 or 'y' }} {{ none or 0 }}", {"d": {"k": 1}}),
    ("{{ x is defined }} {{ u is undefined }} {{ none is none }} {{ 'a' is string }} {{ u is iterable }} {{ u is sequence }} {{ {} is mapping }} {{ true is number }} {{ 1 is integer }} {{ 1.0 is float }} {{ false is false }} {{ 0 is false }} {{ true is true }} {{ 'a' is mapping }} {{ 3 is odd }} {{ 3 is divisibleby 3 }} {{ 'x' is in 'xyz' }} {{ 2 is equalto 2 }} {{ d.missing is none }}", {"x": 1, "d": {}}),
    ("[{{ '  a b \\n ' | trim }}] [{{ 'xxhixx' | trim('x') }}] {{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a b c'.rsplit(' ', 1) }} [{{ ' x '.strip() }}] [{{ '\\n\\nx\\n'.lstrip('\\n') }}] [{{ 'x\\n\\n'.rstrip() }}] {{ 'aXbX'.replace('X', '-') }} {{ 'aXbX'.replace('X', '-', 1) }}", {}),
    ("{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'Hello'.upper() }} {{ 'Hello'.lower() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.rfind('c') }} {{ 'abcabc'.count('b') }} {{ '-'.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }}", {}),
    ("{{ u | length }} [{{ u | first }}] [{{ [] | first }}] {{ [3, 1] | first }} {{ [3, 1] | last }} {{ 'abc' | first }} [{{ u | string }}] {{ none | string }} {{ 'abc' | length }} {{ d | length }} {{ u | default('dflt') }} {{ '' | default('e', true) }} {{ 0 | d('z') }}", {"d": {"a": 1, "b": 2}}),
    ("{{ ['b', 'a', 'C'] | join(', ') }} {{ ['b', 'a', 'C'] | sort }} {{ ['b', 'a', 'C'] | sort(reverse=true) }} {{ [3, 1, 2] | max }} {{ [3, 1, 2] | min }} {{ [1, 2, 3] | sum }} {{ [1, 2, 1] | unique | list }} {{ 'abc' | reverse }} {{ [1, 2] | reverse | list }} {{ 'hi' | upper }} {{ 'HI' | lower }} {{ 'hi there' | capitalize }} {{ 'a b' | title }}", {}),
    ("{{ xs | map(attribute='n') | join(',') }} {{ xs | selectattr('n', 'gt', 1) | list | length }} {{ xs | rejectattr('n') | list }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ ['a', 'code_interpreter', 'b'] | reject('equalto', 'code_interpreter') | join(', ') }} {{ ['a', 'b'] | map('upper') | list }}", {"xs": [{"n": 0}, {"n": 2}, {"n": 3}]}),
    ("{{ '3' | int + 1 }} {{ 'x' | int }} {{ 2.7 | int }} {{ '2.5' | float }} {{ -3 | abs }} {{ 2.567 | round(2) }} {% for k, v in d | dictsort %}{{ k }}{{ v }}{% endfor %} {{ 'one two  three' | wordcount }} {{ '<a href=\"x\">&</a>' | escape }} {{ 'x' | safe }} {{ d | attr('get') is callable }}", {"d": {"b": 1, "a": 2}}),
    ("{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent('--', blank=true) }}|{{ 'ab' | center(6) }}|", {}),
    ("{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ [] | tojson(indent=4) }}|{{ {} | tojson }}|{{ 'é\\n\"<>&\\u0001\\U0001F389' | tojson }}|{{ d | tojson(separators=(',', ':')) }}|{{ d | tojson(sort_keys=true) }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [1.0, 2.5e20, -0.0, none, true] | tojson }}",
     {"d": {"b": [1, {"x": None}], "a": "ü", "c": {}}}),
    ("{{- '  lead' }}  \n  {%- if true -%}  \n  X  \n  {%- endif -%}  \n  tail  ", {}),
    ("a\n  {% if true %}\n  b\n  {% endif %}\n  c\n  {# comment #}\n  d {{ 'e' }}\n{% for i in [1] %}  {{ i }}\n{% endfor %}\n", {}),
    ("x  {%+ if true %}y{% endif +%}\nz\n{%- raw -%}\n {{ not rendered }} {% if %}\n{%- endraw %}\nw{#- trimmed -#}  v", {}),
    ("{{ \"single 'in' double\" }} {{ 'esc \\'q\\' \\x41\\u00e9\\t|' }} {{ 'a' 'b' }} {{ '\\\\d' }} {{ '\\d' }}", {}),
    ("{% set a, b = [1, 2] %}{{ b }}{{ a }} {% set s %}captured {{ a }}{% endset %}[{{ s }}] {{ 1 if false }}|{{ 1 if false else 2 }}|{{ 'y' if true else 'n' }}", {}),
    ("{{ messages[0]['role'] }} {{ messages[0].content }} {{ messages[1:] | length }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ m.get('role') }} {{ m.get('x', 'dflt') }} {{ m.keys() | list }} {{ m.values() | list }}",
     {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "m": {"role": "r"}}),
    ("{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ dict(a=1, b='x') }} {{ namespace(x=1).x }} {{ strftime_now is defined }} {{ raise_exception is defined }}", {}),
    ("{% generation %}gen{{ 1 }}{% endgeneration %} {{ [1, 2, 3][1] }} {{ {'a': {'b': 'deep'}}.a.b }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 2 * 3 + 4 * 5 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}", {}),
    ("  {%- for m in ['a', 'b'] %}\n\t{{ m }}\n{%- endfor %}\n", {}),
    ("{% for x in [1, 2] %}{% for y in 'ab' %}{{ loop.index }}{{ y }}{{ x }}{% endfor %}[{{ loop.previtem }}|{{ loop.nextitem }}];{% endfor %}", {}),
    ("{{ x if x is not none else 'n' }} {{ not u is defined }} {{ u or 'fallback' }} {{ u is not defined and true }} {{ none }} {{ true }} {{ 1.0 }} {{ -0.5 }}", {"x": 0}),
    ("a  {# c #}  b\n  {#- c -#}\n c\n\t{# indented comment #}\nd", {}),
    ("{%- set x = 'v' -%}\n\n  {{ x }}  \n{{- ' y' }}\n  {% if true -%}\n  z\n{% endif %}", {}),
    ("{{ '  a b  c  '.split(none, 1) }} {{ '  a b  c  '.rsplit(none, 1) }} {{ ' x '.split(none, 0) }} {{ 'a--b--c'.rsplit('--', 1) }} {{ 'abc'.replace('', '.') }} {{ 'a😀b'[1] }} {{ 'a😀b' | length }}", {}),
    ("{{ \"they're bill's (x-ray) [oK]\" | title }} {{ \"they're bill's\".title() }} {{ 'ÉCOLE' | capitalize }}", {}),
    # Errors: (template, context) whose rendering raises.
    ("{{ raise_exception('boom: ' ~ x) }}", {"x": 42}),
    ("{{ u.attr }}", {}),
    ("{{ d.missing.deeper }}", {"d": {}}),
    ("{{ 1 + 'a' }}", {}),
    ("{{ u + 1 }}", {}),
    ("{{ x | nosuchfilter }}", {"x": 1}),
    ("{{ x is nosuchtest }}", {"x": 1}),
    ("{{ 1 // 0 }}", {}),
    ("{{ u | tojson }}", {}),
    ("{{ [].append(1) }}", {}),
    ("{% for x in 5 %}{% endfor %}", {}),
]

# Templates that must not parse: (template, line jinja2 reports).
SYNTAX_ERRORS = [
    "{% if x %}\nunclosed",
    "line one\n{{ x + }}",
    "{% for x in y %}{% endif %}",
    "{{ 'unterminated }}",
    "{# never closed",
    "{% unknowntag %}",
    "{{ x | }}",
    "{% set %}",
    "{% for %}{% endfor %}",
    "{{ (1, 2 }}",
    "{% if x %}{% else %}{% else %}{% endif %}",
]


def snippets():
    out = []
    for source, context in SNIPPETS:
        item = {"template": source, "context": enc(context)}
        try:
            item["expected"] = _compile_jinja_template(source).render(**context)
        except Exception as e:
            item["error"] = str(e)
            item["error_kind"] = "raised" if type(e).__name__ == "TemplateError" else "runtime"
        out.append(item)
    for source in SYNTAX_ERRORS:
        try:
            _compile_jinja_template(source)
            raise SystemExit(f"expected a syntax error: {source!r}")
        except Exception as e:
            out.append({"template": source, "context": enc({}), "error": str(e), "error_kind": "syntax",
                        "line": getattr(e, "lineno", None)})
    return out


def chat_data():
    """SmolLM2 ids under `--template chat`: prompt = [user] + generation prompt, full = [user, assistant]."""
    tok = AutoTokenizer.from_pretrained(SMOLLM2)
    records = [
        {"instruction": "Natalia sold clips to 48 of her friends in April. How many clips did she sell?",
         "input": "", "output": "She sold 48 clips.\nThe answer is 48.", "answer": "48"},
        {"instruction": "Translate to French.", "input": "Good morning, “friend”! 🎉",
         "output": "Bonjour, « ami » ! 🎉", "answer": None},
        {"instruction": "  Spaces kept  ", "input": "  and input  ", "output": "\n  output with newline\n", "answer": "x"},
    ]

    def ids(messages, gen):
        r = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True)
        return list(r["input_ids"] if hasattr(r, "keys") else r)

    out = []
    for r in records:
        user = r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")
        prompt_msgs = [{"role": "user", "content": user}]
        full_msgs = prompt_msgs + [{"role": "assistant", "content": r["output"]}]
        out.append({**r, "prompt": tok.apply_chat_template(prompt_msgs, add_generation_prompt=True, tokenize=False),
                    "full": tok.apply_chat_template(full_msgs, add_generation_prompt=False, tokenize=False),
                    "prompt_ids": ids(prompt_msgs, True), "full_ids": ids(full_msgs, False)})
    return {"template": "smollm2-135m-instruct", "tokenizer": "data/tokenizers/smollm2",
            "end_of_turn": "<|im_end|>", "end_of_turn_id": tok.convert_tokens_to_ids("<|im_end|>"), "records": out}


def main():
    golden = {
        "generator": "scripts/chat_template_golden.py",
        "templates": {name: source for name, (source, _) in TEMPLATES.items()},
        "cases": cases(),
        "snippets": snippets(),
        "chat_data": chat_data(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(golden['cases'])} cases, {len(golden['snippets'])} snippets, "
          f"{len(golden['chat_data']['records'])} chat records")


if __name__ == "__main__":
    main()
