#!/usr/bin/env python3
"""Writes the small seed corpora of Fuzz/Seeds/ (docs/RELIABILITY.md) from the repository's
fixtures and from hand-made minimal files; larger fixtures are named in Fuzz/Seeds/TARGET.list
and copied into the working corpus by scripts/fuzz.sh instead. Deterministic; rerun after
changing it:  python3 Fuzz/make_seeds.py"""
import json, os, shutil, struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "Fuzz", "Seeds")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def out(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def copy(target, src, name=None):
    with open(os.path.join(ROOT, src), "rb") as f:
        out(target, name or os.path.basename(src), f.read())


# --- safetensors ---------------------------------------------------------------------------
def safetensors(tensors, metadata=None):
    header, blobs, off = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs += data
        off += len(data)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blobs


out("safetensors", "mixed.safetensors", safetensors([
    ("a.weight", "F32", [2, 3], struct.pack("<6f", 1, -2, 3.5, 0, 1e-3, 7)),
    ("b.weight", "BF16", [4], bytes.fromhex("803f0040c0400000")),
    ("c.weight", "F16", [1, 2], bytes.fromhex("003c00c0")),
    ("d", "I64", [2], struct.pack("<2q", 1, -100)),
    ("e", "I32", [1], struct.pack("<i", 7)),
    ("f", "F64", [1], struct.pack("<d", 0.5)),
    ("g", "U8", [3], b"\x01\x02\x03"),
    ("h", "BOOL", [1], b"\x01"),
    ("i", "I8", [0], b""),
], {"format": "pt"}))
out("safetensors", "unaligned.safetensors", safetensors([("x", "U8", [1], b"\x05"), ("y", "F32", [1], struct.pack("<f", 2))]))
copy("safetensors", "Tests/Fixtures/llama3-tiny/ndlinear/adapter_model.safetensors", "llama3-tiny-ndlinear.safetensors")

# --- GGUF ----------------------------------------------------------------------------------
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, i) for i in items)
    return struct.pack({U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
                        BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}[t], v)


def gguf(kvs, tensors=(), alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, ne (innermost first), ggml type, bytes)]."""
    body = struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(kvs))
    body += b"".join(gstr(k) + struct.pack("<I", t) + gval(t, v) for k, t, v in kvs)
    data, infos = b"", b""
    for name, ne, ty, blob in tensors:
        data += b"\0" * (-len(data) % alignment)
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", ty, len(data))
        data += blob
    body += infos
    return body + b"\0" * (-len(body) % alignment) + data


spm_tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["▁", "a", "b", "▁a", "▁b", "ab", "▁ab", "▁hello", "▁world"]
spm_types = [2, 3, 3] + [6] * 256 + [1] * 8
out("gguf", "llama-spm-tokenizer.gguf", gguf([
    ("general.architecture", STR, "llama"),
    ("tokenizer.ggml.model", STR, "llama"),
    ("tokenizer.ggml.tokens", ARR, (STR, spm_tokens)),
    ("tokenizer.ggml.scores", ARR, (F32, [0.0] * 259 + [-float(i) for i in range(8)])),
    ("tokenizer.ggml.token_type", ARR, (I32, spm_types)),
    ("tokenizer.ggml.bos_token_id", U32, 1),
    ("tokenizer.ggml.eos_token_id", U32, 2),
    ("tokenizer.ggml.unknown_token_id", U32, 0),
    ("tokenizer.ggml.add_bos_token", BOOL, True),
    ("tokenizer.chat_template", STR, "{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}"),
]))

byte_chars = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
cs, n = byte_chars[:], 0
for b in range(256):
    if b not in byte_chars:
        byte_chars.append(b)
        cs.append(256 + n)
        n += 1
gpt2_tokens = [chr(c) for c in cs] + ["Ġt", "he", "Ġthe", "in", "Ġa", "<|endoftext|>", "<|im_start|>"]
vocab = len(gpt2_tokens)
hidden, ff, kv = 8, 16, 1
f32 = lambda n, s=0.01: struct.pack("<%df" % n, *[((i * 7919) % 97 - 48) * s for i in range(n)])
q8_0 = lambda rows: (struct.pack("<e", 0.05) + bytes((i * 37) % 256 for i in range(32))) * rows
out("gguf", "llama-model-gpt2-tokenizer.gguf", gguf([
    ("general.architecture", STR, "llama"),
    ("general.alignment", U32, 32),
    ("llama.block_count", U32, 1),
    ("llama.context_length", U32, 64),
    ("llama.embedding_length", U32, hidden),
    ("llama.feed_forward_length", U32, ff),
    ("llama.attention.head_count", U32, 2),
    ("llama.attention.head_count_kv", U32, kv),
    ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
    ("llama.rope.freq_base", F32, 10000.0),
    ("llama.vocab_size", U32, vocab),
    ("tokenizer.ggml.model", STR, "gpt2"),
    ("tokenizer.ggml.pre", STR, "smollm"),
    ("tokenizer.ggml.tokens", ARR, (STR, gpt2_tokens)),
    ("tokenizer.ggml.token_type", ARR, (I32, [1] * (vocab - 2) + [3, 3])),
    ("tokenizer.ggml.merges", ARR, (STR, ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"])),
    ("tokenizer.ggml.bos_token_id", U32, vocab - 2),
    ("tokenizer.ggml.eos_token_id", U32, vocab - 2),
    ("tokenizer.ggml.padding_token_id", U32, vocab - 2),
], [
    ("token_embd.weight", [hidden, vocab], 0, f32(hidden * vocab)),
    ("output_norm.weight", [hidden], 0, f32(hidden, 0.1)),
    ("blk.0.attn_norm.weight", [hidden], 0, f32(hidden, 0.1)),
    ("blk.0.attn_q.weight", [hidden, hidden], 0, f32(hidden * hidden)),
    ("blk.0.attn_k.weight", [hidden, 4], 0, f32(hidden * 4)),
    ("blk.0.attn_v.weight", [hidden, 4], 0, f32(hidden * 4)),
    ("blk.0.attn_output.weight", [hidden, hidden], 0, f32(hidden * hidden)),
    ("blk.0.ffn_norm.weight", [hidden], 0, f32(hidden, 0.1)),
    ("blk.0.ffn_gate.weight", [32, ff // 2], 8, q8_0(ff // 2)),
    ("blk.0.ffn_up.weight", [hidden, ff], 1, struct.pack("<%de" % (hidden * ff), *[0.01] * (hidden * ff))),
    ("blk.0.ffn_down.weight", [ff, hidden], 30, struct.pack("<%dH" % (ff * hidden), *[0x3c23] * (ff * hidden))),
]))
out("gguf", "qwen2-metadata-only.gguf", gguf([
    ("general.architecture", STR, "qwen2"),
    ("general.name", STR, "tiny"),
    ("qwen2.block_count", U64, 0),
    ("some.array.of.arrays", ARR, (ARR, [(U8, [1, 2]), (I64, [-1])])),
    ("some.numbers", ARR, (F64, [0.5, -1.0])),
    ("some.flags", ARR, (BOOL, [True, False])),
    ("some.i16", I16, -3), ("some.u16", U16, 3), ("some.i8", I8, -1), ("some.u8", U8, 1), ("some.i64", I64, -5), ("some.f64", F64, 2.5),
]))

# --- tokenizer.json ------------------------------------------------------------------------
def trimmed_tokenizer_json(path, keep):
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    vocab = {t: i for t, i in tj["model"]["vocab"].items() if i < keep}
    merges = []
    for m in tj["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    tj["model"]["vocab"] = vocab
    tj["model"]["merges"] = merges
    tj["added_tokens"] = [t for t in tj.get("added_tokens", []) if t["id"] < keep] + [
        {"id": keep, "content": "<|extra|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}]
    return json.dumps(tj, ensure_ascii=False)


for name in ["smollm2", "qwen2", "llama3-bpe"]:
    p = os.path.join(SHARED, "tokenizers", name, "tokenizer.json")
    if os.path.exists(p):
        out("tokenizer-json", name + "-trimmed.json", trimmed_tokenizer_json(p, 400))
out("tokenizer-json", "minimal.json", json.dumps({
    "version": "1.0", "added_tokens": [{"id": 3, "content": "<s>", "special": True}],
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"], "byte_fallback": False}}))
out("tokenizer-json", "sequence.json", json.dumps({
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"1": 0, "Ġ": 1, "x": 2}, "merges": [["Ġ", "x"]], "ignore_merges": True}}))

# --- SentencePiece: stories260K's model is 8 KB ---------------------------------------------
copy("sentencepiece", "models/stories260K/tokenizer.model", "stories260K.model")

# --- records -------------------------------------------------------------------------------
for f in ["gsm8k_head.jsonl", "csqa_hf.jsonl", "csqa_original.jsonl", "aqua_test_head.json", "boolq_train_head.json", "math10k_head.json"]:
    copy("records", "Tests/Fixtures/data/" + f)
out("records", "pretokenized.jsonl", '{"input_ids":[1,5,6,7,8],"labels":[-100,5,6,7,8]}\n{"input_ids":[1,2]}\n{"text":"hello"}\n')
out("records", "array.json", '[{"instruction":"Add","input":"1 2","output":"3","answer":"3"},\n {"text":"\\u00e9\\ud83d\\ude42 1e-5 -0.0 12345678901234567890"}]')

# --- YAML config ---------------------------------------------------------------------------
for f in sorted(os.listdir(os.path.join(ROOT, "configs"))):
    copy("yaml-config", "configs/" + f)
out("yaml-config", "aliases.yaml", "a: &a [x, y]\nb: &b [*a, *a]\nlr: 1e-4\nuse_rslora: true\nname: 'q'\n")
out("yaml-config", "flow.json", '{"model": "m", "epochs": 2, "lora_targets": ["q_proj", "v_proj"], "seed": null}')

# --- Jinja chat templates ------------------------------------------------------------------
with open(os.path.join(ROOT, "Tests/Fixtures/chat_templates/golden.json"), encoding="utf-8") as f:
    golden = json.load(f)
for name, src in sorted(golden["templates"].items()):
    out("jinja", name + ".jinja", src)
for i, s in enumerate(golden["snippets"]):
    out("jinja", "snippet-%02d.jinja" % i, s["template"])
