#!/usr/bin/env python3
"""PyTorch + PEFT reference for `finetune train` and `finetune eval`, for like-for-like runs.

Same data (file order, no shuffling), same templates and prompt masking, same batching (rows
padded on the right, the loss is the mean over every target token of the step), same AdamW,
schedule and clipping as `finetune train`; LoRA through PEFT, NdLinear-LoRA through the
Kronecker module of the reference repository (ensemble-core/NdLinear-LoRA: `NdLinear` with
`align_layers.0` = W0 [c, a] applied along the first axis of the input viewed as [a, b], and
`align_layers.1` = W1 [d, b] along the second; no bias; y = W x + alpha * vec(W0 mat(x) W1^T)).

To compare with `finetune train`, both sides start from the SAME adapter: this script writes
its initial adapter with `--save-init DIR` (a PEFT LoRA directory, or the NdLinear-LoRA
reference layout with `ndlinear_lora_config.json`) and `finetune train --adapter-init DIR
--no-shuffle` starts from it; or this script starts from one of ours with `--adapter-init`.

Outputs in --output: metrics.jsonl (one row per optimizer step: step, loss, lr, grad_norm,
tokens, tokens_per_s; plus val_loss rows), adapter/ (same layouts as --save-init),
summary.json (wall time, tokens/s, peak RSS, eval accuracy), preds-<task>.jsonl.

  pip install torch transformers peft
  python3 scripts/reference_finetune.py --model models/real/smollm2-135m-f32 \\
      --data runs/data/arc-e-train512.json --output runs/ref/arc-e-lora --adapter-type lora \\
      --r 8 --template alpaca --batch-size 8 --lr 3e-4 --warmup-steps 6 \\
      --save-init runs/init/arc-e-lora --eval-data runs/data/arc-e-test500.json --task arc-e
"""
import argparse
import json
import math
import os
import re
import resource
import sys
import time

import torch
import torch.nn as nn

PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ----------------------------------------------------------------------------- data

def load_records(path):
    """A JSON array or JSONL of instruction/input/output/answer records (file order)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        recs = json.loads(text)
    else:
        recs = [json.loads(l) for l in text.splitlines() if l.strip()]
    for i, r in enumerate(recs):
        if "instruction" not in r or "output" not in r:
            sys.exit(f"{path}: record {i + 1}: expected instruction/input/output/answer fields")
    return recs


def alpaca_prompt(r):
    inp = r.get("input") or ""
    if inp:
        return ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                f"### Instruction:\n{r['instruction']}\n\n### Input:\n{inp}\n\n### Response:\n")
    return ("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
            f"### Instruction:\n{r['instruction']}\n\n### Response:\n")


def ndlinear_prompt(r):
    return "### Instruction:\n" + str(r["instruction"]).strip() + "\n\n### Solution:\n"


def chat_messages(r):
    user = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
    return [{"role": "user", "content": user}]


class Template:
    """Renders and tokenizes records as `finetune` does (PromptTemplate.swift, Tokenization.swift)."""

    def __init__(self, name, tok, max_length, mask_prompt=True):
        if name not in ("alpaca", "ndlinear", "chat"):
            sys.exit(f"--template {name}: this reference implements alpaca, ndlinear and chat")
        self.name, self.tok, self.max_length, self.mask = name, tok, max_length, mask_prompt

    def enc(self, text, special=True):
        return self.tok(text, add_special_tokens=special)["input_ids"]

    def prompt(self, r):
        if self.name == "alpaca":
            return alpaca_prompt(r)
        if self.name == "ndlinear":
            return ndlinear_prompt(r)
        return self.tok.apply_chat_template(chat_messages(r), add_generation_prompt=True, tokenize=False)

    def prompt_ids(self, r):
        return self.enc(self.prompt(r), special=self.name != "chat")

    def example(self, r):
        eos, m = self.tok.eos_token_id, self.max_length
        prompt = self.prompt(r)
        if self.name == "alpaca":
            # LLM-Adapters tokenize(): truncate, then the EOS id if there is room.
            ids = self.enc(prompt + r["output"])[:m]
            if ids and ids[-1] != eos and len(ids) < m:
                ids.append(eos)
            n_prompt = len(self.enc(prompt)[:m])
        elif self.name == "ndlinear":
            # NdLinear-LoRA GeneralTextDataset: EOS string appended, one call, truncation.
            full = prompt + str(r["output"]).strip() + "\n\n### Final Answer:\n\\boxed{" + str(r["answer"]).strip() + "}"
            if not full.endswith(self.tok.eos_token):
                full += self.tok.eos_token
            ids = self.enc(full)[:m]
            n_prompt = len(self.enc(prompt)[:m])
        else:
            msgs = chat_messages(r) + [{"role": "assistant", "content": r["output"]}]
            full = self.tok.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
            if not full.startswith(prompt):
                sys.exit("chat template: the conversation does not start with the generation prompt")
            ids = self.enc(full, special=False)[:m]
            n_prompt = len(self.enc(prompt, special=False)[:m])
        n_prompt = min(n_prompt, len(ids))
        labels = ([-100] * n_prompt + ids[n_prompt:]) if self.mask else list(ids)
        return ids, labels

    def stop_strings(self):
        return {"alpaca": ["### Instruction", "### Input", "### Response"],
                "ndlinear": ["### Instruction", "### Solution"], "chat": []}[self.name]


def pad_batch(rows, pad_id):
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    lab = torch.full((len(rows), T), -100, dtype=torch.long)
    att = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, :len(x)] = torch.tensor(x)
        lab[i, :len(y)] = torch.tensor(y)
        att[i, :len(x)] = 1
    return ids, att, lab


# ----------------------------------------------------------------------------- NdLinear-LoRA

def balanced(n):
    """The most balanced factor pair (a <= b), a the largest divisor <= sqrt(n)."""
    a = int(math.isqrt(n))
    while n % a:
        a -= 1
    return a, n // a


class NdLinear(nn.Module):
    """The reference NdLinear: one nn.Linear per axis of the input viewed as [a, b]."""

    def __init__(self, input_dims, hidden_size):
        super().__init__()
        self.input_dims, self.hidden_size = input_dims, hidden_size
        self.align_layers = nn.ModuleList(nn.Linear(i, h, bias=False) for i, h in zip(input_dims, hidden_size))

    def forward(self, x):
        n = len(self.input_dims)
        for i, layer in enumerate(self.align_layers):
            x = torch.transpose(x, i + 1, n)      # axis i last
            shp = x.shape
            x = layer(x.reshape(-1, shp[-1])).view(*shp[:-1], layer.out_features)
            x = torch.transpose(x, i + 1, n)
        return x


class NdAdapter(nn.Module):
    def __init__(self, in_factors, out_factors):
        super().__init__()
        self.adapter = NdLinear(in_factors, out_factors)


class NdLinearLoRA(nn.Module):
    """y = base(x) + alpha * NdLinear(x viewed as [a, b]) flattened to out."""

    def __init__(self, base, alpha):
        super().__init__()
        self.base, self.alpha = base, alpha
        self.in_factors, self.out_factors = balanced(base.in_features), balanced(base.out_features)
        self.adapter = NdAdapter(self.in_factors, self.out_factors)

    def forward(self, x):
        lead = x.shape[:-1]
        z = self.adapter.adapter(x.reshape(-1, *self.in_factors)).reshape(*lead, self.base.out_features)
        return self.base(x) + self.alpha * z


def wrap_ndlinear(model, alpha, targets):
    wrapped = {}
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                w = NdLinearLoRA(child, alpha)
                setattr(mod, child_name, w)
                full = f"{name}.{child_name}"
                wrapped[full] = {"in_features": child.in_features, "out_features": child.out_features,
                                 "in_factors": list(w.in_factors), "out_factors": list(w.out_factors)}
    return wrapped


def nd_state(model):
    return {k: v.detach().contiguous() for k, v in model.named_parameters() if ".adapter.adapter.align_layers." in k}


def save_ndlinear(model, wrapped, alpha, base_name, out):
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    save_file(nd_state(model), os.path.join(out, "adapter_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "ndlinear_lora_config.json"), "w") as f:
        json.dump({"base_model_name": base_name, "lora_alpha": alpha, "bias": False, "wrapped_modules": wrapped}, f, indent=2)


def load_ndlinear(model, path):
    """Our NdLinear-LoRA adapter in the reference layout or as a PEFT LoKr directory."""
    from safetensors.torch import load_file
    w = load_file(os.path.join(path, "adapter_model.safetensors"))
    params = dict(model.named_parameters())
    if os.path.exists(os.path.join(path, "ndlinear_lora_config.json")):
        src = {k: v for k, v in w.items()}
    else:   # PEFT LoKr: base_model.model.<module>.lokr_w1 / lokr_w2
        src = {}
        for k, v in w.items():
            mod = k[len("base_model.model."):].rsplit(".", 1)[0]
            idx = {"lokr_w1": 0, "lokr_w2": 1}[k.rsplit(".", 1)[1]]
            src[f"{mod}.adapter.adapter.align_layers.{idx}.weight"] = v
    missing = set(k for k in params if ".align_layers." in k) - set(src)
    if missing:
        sys.exit(f"{path}: missing adapter tensors, e.g. {sorted(missing)[0]}")
    with torch.no_grad():
        for k, v in src.items():
            params[k].copy_(v.to(params[k].dtype))


# ----------------------------------------------------------------------------- model + adapter

def build(args, tok):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    targets = PROJ if args.target_modules == "all-linear" else args.target_modules.split(",")
    if args.adapter_type == "none":
        return model, [], None
    if args.adapter_type == "lora":
        from peft import LoraConfig, PeftModel, get_peft_model
        if args.adapter_init:
            model = PeftModel.from_pretrained(model, args.adapter_init, is_trainable=True)
        else:
            cfg = LoraConfig(r=args.r, lora_alpha=args.alpha if args.alpha is not None else 2 * args.r,
                             lora_dropout=0.0, target_modules=targets, bias="none", task_type="CAUSAL_LM")
            model = get_peft_model(model, cfg)
        if args.save_init:
            model.save_pretrained(args.save_init)
        save = lambda out: model.save_pretrained(out)
    else:
        alpha = args.alpha if args.alpha is not None else 1.0
        wrapped = wrap_ndlinear(model, alpha, targets)
        if args.adapter_init:
            load_ndlinear(model, args.adapter_init)
        save = lambda out: save_ndlinear(model, wrapped, alpha, args.model, out)
        if args.save_init:
            save(args.save_init)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, params, save


def lr_at(step, args, total):
    """`finetune train`'s LRSchedule (as transformers' schedulers): step counts from 0."""
    w = args.warmup_steps
    if step < w:
        return args.lr * step / max(1, w)
    if args.schedule == "constant":
        return args.lr
    frac = (step - w) / max(1, total - w)
    if args.schedule == "linear":
        return args.lr * max(0.0, 1 - frac)
    return args.lr * 0.5 * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def val_loss(model, val, pad_id, bs):
    tot, n = 0.0, 0
    for i in range(0, len(val), bs):
        ids, att, lab = pad_batch(val[i:i + bs], pad_id)
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
        tgt = lab[:, 1:]
        l = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="sum")
        tot += l.item()
        n += int((tgt != -100).sum())
    return tot / max(n, 1), n


# ----------------------------------------------------------------------------- eval

@torch.no_grad()
def merge(model, kind):
    """Folds the adapter into the base weights for generation (what PEFT users do for
    inference; W + scale*B*A, or W + alpha*kron(W0, W1)): same function, base-model speed."""
    if kind == "lora":
        model.merge_adapter()
    elif kind == "ndlinear":
        for m in model.modules():
            if isinstance(m, NdLinearLoRA) and not getattr(m, "merged", False):
                w0, w1 = (l.weight for l in m.adapter.adapter.align_layers)
                m.base.weight += m.alpha * torch.kron(w0, w1)
                m.merged = True
                m.forward = m.base.forward


CHOICES = {"boolq": ["true", "false"], "piqa": ["solution1", "solution2"], "siqa": ["answer1", "answer2", "answer3", "answer4", "answer5"],
           "arc-e": ["answer1", "answer2", "answer3", "answer4", "answer5"], "arc-c": ["answer1", "answer2", "answer3", "answer4", "answer5"],
           "obqa": ["answer1", "answer2", "answer3", "answer4", "answer5"], "hellaswag": ["ending1", "ending2", "ending3", "ending4"],
           "winogrande": ["option1", "option2"]}
NUMERIC = {"gsm8k", "svamp", "addsub", "multiarith", "singleeq", "mawps"}


def score(task, output, answer):
    """LLM-Adapters' rules: text up to `### Response:`, stripped; commonsense = first alternative,
    numeric = last number without commas within 0.001, aqua = first letter A-E."""
    text = output.split("### Response:")[0].strip()
    if task in CHOICES:
        m = re.search("|".join(CHOICES[task]), text)
        pred = m.group(0) if m else ""
        return pred, pred == answer
    if task in NUMERIC:
        nums = re.findall(r"-?\d+\.?\d*", text.replace(",", ""))
        if not nums:
            return "", False
        pred = nums[-1]
        try:
            return pred, abs(float(pred) - float(answer)) <= 0.001
        except ValueError:
            return pred, False
    if task == "aqua":
        m = re.search("[A-E]", text)
        pred = m.group(0) if m else ""
        return pred, pred == answer.strip()
    sys.exit(f"--task {task}: unknown")


@torch.no_grad()
def evaluate(model, tok, tmpl, recs, args):
    model.eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    stops = tmpl.stop_strings()
    ge = model.generation_config.eos_token_id
    eos = sorted({tok.eos_token_id} | set(ge if isinstance(ge, list) else [] if ge is None else [ge]) - {None})
    rows, correct, gen_tokens = [], 0, 0
    t0 = time.time()
    for i in range(0, len(recs), args.eval_batch_size):
        chunk = recs[i:i + args.eval_batch_size]
        prompts = [tmpl.prompt_ids(r) for r in chunk]
        T = max(map(len, prompts))
        ids = torch.tensor([[pad] * (T - len(p)) + p for p in prompts])
        att = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=args.max_new_tokens, do_sample=False,
                             num_beams=1, eos_token_id=eos, pad_token_id=pad)
        for r, p, o in zip(chunk, prompts, out[:, T:].tolist()):
            # Up to and including the first stop token, as `finetune eval` counts them.
            n = next((k + 1 for k, t in enumerate(o) if t in eos), len(o))
            gen_tokens += n
            text = tok.decode(o[:n], skip_special_tokens=True)
            for s in stops:
                text = text.split(s)[0]
            pred, ok = score(args.task, text, str(r.get("answer", "")))
            correct += ok
            rows.append({"index": len(rows), "output": text, "prediction": pred, "answer": r.get("answer"), "correct": ok})
        print(f"eval {len(rows)}/{len(recs)}: accuracy {correct / len(rows):.4f}, {gen_tokens / (time.time() - t0):.1f} tokens/s",
              file=sys.stderr, flush=True)
    return rows, correct, gen_tokens, time.time() - t0


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory (float32 compute)")
    ap.add_argument("--data", help="training data (instruction/input/output/answer JSON or JSONL), used in file order")
    ap.add_argument("--val-data")
    ap.add_argument("--output", required=True)
    ap.add_argument("--adapter-type", choices=["lora", "ndlinear", "none"], default="ndlinear", help="none: the base model (eval only)")
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, help="LoRA lora_alpha (default 2r) or NdLinear alpha (default 1)")
    ap.add_argument("--target-modules", default="all-linear")
    ap.add_argument("--template", default="alpaca")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--no-mask-prompt", action="store_true")
    ap.add_argument("--steps", type=int, help="optimizer steps (default: one pass over --data)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--adam-betas", default="0.9,0.999")
    ap.add_argument("--adam-eps", type=float, default=1e-8)
    ap.add_argument("--schedule", choices=["constant", "linear", "cosine"], default="linear")
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--save-init", help="write the initial adapter here (for `finetune train --adapter-init`)")
    ap.add_argument("--adapter-init", help="start from this adapter (PEFT LoRA; NdLinear reference layout or PEFT LoKr)")
    ap.add_argument("--eval-data", help="after training, evaluate by greedy generation on this file")
    ap.add_argument("--task", help="scoring rule for --eval-data (arc-e, boolq, gsm8k, ...)")
    ap.add_argument("--eval-limit", type=int)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(args.model)
    tmpl = Template(args.template, tok, args.max_length, not args.no_mask_prompt)
    model, params, save = build(args, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    summary = {"adapter_type": args.adapter_type, "trainable_parameters": sum(p.numel() for p in params),
               "template": args.template, "torch": torch.__version__, "threads": args.threads}

    if args.data:
        if not params:
            sys.exit("--data needs an adapter to train (--adapter-type lora or ndlinear)")
        train = [tmpl.example(r) for r in load_records(args.data)]
        val = [tmpl.example(r) for r in load_records(args.val_data)] if args.val_data else []
        total = args.steps or math.ceil(len(train) / args.batch_size)
        b1, b2 = (float(x) for x in args.adam_betas.split(","))
        opt = torch.optim.AdamW(params, lr=args.lr, betas=(b1, b2), eps=args.adam_eps, weight_decay=args.weight_decay)
        metrics = open(os.path.join(args.output, "metrics.jsonl"), "w")
        if val:
            model.eval()
            v, n = val_loss(model, val, pad_id, args.batch_size)
            summary["val_loss_before"] = v
            metrics.write(json.dumps({"step": 0, "val_loss": v, "val_tokens": n}) + "\n")
            print(f"validation loss before training: {v:.4f}", file=sys.stderr)
        model.train()
        t0, seen, pos = time.time(), 0, 0
        for step in range(1, total + 1):
            ts = time.time()
            rows = [train[(pos + k) % len(train)] for k in range(args.batch_size)]
            pos += args.batch_size
            ids, att, lab = pad_batch(rows, pad_id)
            for g in opt.param_groups:
                g["lr"] = lr_at(step - 1, args, total)
            opt.zero_grad(set_to_none=True)
            # transformers' loss: mean over every target token of the batch (labels shifted inside).
            loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm if args.max_grad_norm > 0 else float("inf"))
            opt.step()
            tokens = int(att.sum())
            seen += tokens
            dt = time.time() - ts
            row = {"step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"], "grad_norm": norm.item(),
                   "tokens": tokens, "tokens_per_s": tokens / dt, "elapsed_s": time.time() - t0}
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            eta = (time.time() - t0) / step * (total - step)
            print(f"step {step}/{total} loss {row['loss']:.4f} lr {row['lr']:.2e} {seen / (time.time() - t0):.0f} tok/s ETA {eta:.0f}s",
                  file=sys.stderr, flush=True)
        wall = time.time() - t0
        summary.update({"steps": total, "train_wall_s": wall, "train_tokens": seen, "tokens_per_s": seen / wall,
                        "final_loss": row["loss"]})
        if val:
            model.eval()
            v, n = val_loss(model, val, pad_id, args.batch_size)
            summary["val_loss_after"] = v
            metrics.write(json.dumps({"step": total, "val_loss": v, "val_tokens": n}) + "\n")
            print(f"validation loss after training: {v:.4f}", file=sys.stderr)
        metrics.close()
        save(os.path.join(args.output, "adapter"))

    if args.eval_data:
        if not args.task:
            sys.exit("--eval-data needs --task")
        recs = load_records(args.eval_data)[:args.eval_limit]
        merge(model, args.adapter_type)
        rows, correct, gen, secs = evaluate(model, tok, tmpl, recs, args)
        with open(os.path.join(args.output, f"preds-{args.task}.jsonl"), "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        summary.update({"task": args.task, "n": len(rows), "accuracy": correct / max(1, len(rows)),
                        "eval_wall_s": secs, "eval_tokens_per_s": gen / secs})
        print(f"{args.task}: accuracy {correct / max(1, len(rows)):.4f} ({correct}/{len(rows)}) in {secs:.1f} s", file=sys.stderr)
    summary["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
