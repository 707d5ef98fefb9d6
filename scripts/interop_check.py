#!/usr/bin/env python3
"""Checks that what `finetune` writes loads in the Python ecosystem and computes the same thing.

For every fixture model (Tests/Fixtures/{llama-tiny,qwen2-tiny,qwen3-tiny,llama3-tiny}) and every
adapter kind (lora/ -> peft-lora, ndlinear/ -> peft-lokr, dora/ -> peft-lora with use_dora):

  1. `finetune export` the fixture adapter, load it with `PeftModel.from_pretrained` on the
     transformers base, check PEFT built exactly the adapter tensors in the file (same keys,
     shapes and values), and compare PEFT's logits with `finetune logits --adapter <export>`
     on the fixture's input_ids/attention_mask;
  2. `finetune merge --dtype f32`, load it with `AutoModelForCausalLM.from_pretrained`, compare
     its logits with `finetune logits` on the merged directory and on base + adapter;
  3. `finetune merge` in the base's own dtype with a tiny --max-shard-size (sharded output),
     load it with transformers, compare with `finetune logits` on the same directory;
  4. `finetune train` a few steps on the fixture batch, load the trained adapter in PEFT and
     compare logits with `finetune logits --adapter <run>/adapter`;
  5. the other direction: adapters PEFT itself writes with rank_pattern/alpha_pattern (key order
     matters), use_rslora, a regex target_modules string, layers_to_transform, exclude_modules,
     "all-linear", DoRA (use_dora, random magnitudes), and LoKr with decomposed factors
     (decompose_both, small r), random values,
     read by `finetune logits --adapter` and compared with PEFT's logits.

Logits are compared where attention_mask is 1, all in float32, against a bound of 1e-4.
Prints a table; exits 1 if any check fails (2 if the tools could not run).

Needs torch, transformers and peft (not part of CI). Usage:
    swift build && python3 scripts/interop_check.py [--finetune .build/debug/finetune]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")
MODELS = ["llama-tiny", "qwen2-tiny", "qwen3-tiny", "llama3-tiny"]
KINDS = [("lora", "peft-lora"), ("ndlinear", "peft-lokr"), ("dora", "peft-lora")]
TOL = 1e-4


def find_finetune(explicit):
    candidates = [explicit] if explicit else [
        os.environ.get("FINETUNE", ""),
        os.path.join(ROOT, ".build", "release", "finetune"),
        os.path.join(ROOT, ".build", "debug", "finetune"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("error: no finetune executable found (build it with `swift build`, or pass --finetune PATH)")


class Check:
    def __init__(self):
        self.rows = []

    def add(self, model, kind, what, value, ok, note=""):
        self.rows.append((model, kind, what, value, ok, note))

    def table(self):
        head = ("model", "adapter", "check", "max |Δ|", "result", "")
        rows = [head] + [(m, k, w, v if isinstance(v, str) else f"{v:.3g}", "ok" if ok else "FAIL", n)
                         for m, k, w, v, ok, n in self.rows]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
        lines = []
        for i, r in enumerate(rows):
            lines.append("  ".join(str(c).ljust(widths[j]) for j, c in enumerate(r)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths[:-1]))
        return "\n".join(lines)

    @property
    def failed(self):
        return [r for r in self.rows if not r[4]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--finetune", help="path of the finetune executable (default: .build/{release,debug}/finetune)")
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    try:
        import torch
        import transformers
        import peft
        from peft import PeftModel
        from peft.utils import get_peft_model_state_dict
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        sys.exit(f"error: {e} (this check needs torch, transformers and peft)")

    ft = find_finetune(args.finetune)
    torch.set_num_threads(2)
    # Quiet: progress bars, deprecation notes, and PEFT's warning that it ignores the keys we
    # add to adapter_config.json (finetune_adapter_type, ndlinear_alpha, ...), which is expected.
    import warnings
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"finetune: {ft}\ntorch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}\n")
    tmp = tempfile.mkdtemp(prefix="interop-")
    check = Check()

    def run(*cmd):
        p = subprocess.run([ft, *cmd], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"finetune {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()}")
        return p

    def ours(model, inp, adapter=None):
        out = os.path.join(tmp, "logits.safetensors")
        cmd = ["logits", "--model", model, "--input", inp, "--output", out]
        if adapter:
            cmd += ["--adapter", adapter]
        run(*cmd)
        return load_file(out)["logits"]

    def theirs(model, ids, mask):
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits.float()

    def masked_diff(a, b, mask):
        keep = mask.bool().unsqueeze(-1).expand_as(a)
        return (a - b).abs()[keep].max().item()

    def base_model(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def peft_load(base_dir, adapter_dir):
        """PEFT on the transformers base; also checks PEFT built exactly the file's tensors."""
        model = PeftModel.from_pretrained(base_model(base_dir), adapter_dir).eval()
        built = get_peft_model_state_dict(model)
        saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
        problems = []
        if set(built) != set(saved):
            problems.append(f"keys differ: missing in PEFT {sorted(set(saved) - set(built))[:3]}, "
                            f"extra in PEFT {sorted(set(built) - set(saved))[:3]}")
        else:
            for k, v in saved.items():
                if built[k].shape != v.shape or not torch.equal(built[k].float(), v.float()):
                    problems.append(f"{k}: PEFT holds {tuple(built[k].shape)}, file {tuple(v.shape)}")
                    break
        with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "pt") as f:
            if (f.metadata() or {}).get("format") != "pt":
                problems.append("safetensors metadata lacks format=pt")
        return model, problems

    try:
        for name in args.models:
            base_dir = os.path.join(FIXTURES, name)
            expected_path = os.path.join(base_dir, "expected.safetensors")
            expected = load_file(expected_path)
            ids, mask = expected["input_ids"], expected["attention_mask"]

            # The fixture batch as pre-tokenized JSONL (padding dropped) for `finetune train`.
            data = os.path.join(tmp, f"{name}-batch.jsonl")
            with open(data, "w") as fh:
                for row in range(ids.shape[0]):
                    n = int(mask[row].sum())
                    fh.write(json.dumps({"input_ids": ids[row, :n].tolist(), "labels": expected["labels"][row, :n].tolist()}) + "\n")

            for kind, fmt in KINDS:
                src = os.path.join(base_dir, kind)
                work = os.path.join(tmp, f"{name}-{kind}")

                # 1. export -> PEFT
                exported = os.path.join(work, "export")
                run("export", "--adapter", src, "--format", fmt, "--output", exported, "--model", base_dir)
                cfg = json.load(open(os.path.join(exported, "adapter_config.json")))
                model, problems = peft_load(base_dir, exported)
                ours_adapter = ours(base_dir, expected_path, exported)
                d = masked_diff(theirs(model, ids, mask), ours_adapter, mask)
                check.add(name, kind, f"PEFT {cfg['peft_type']} export vs finetune logits", d, d <= TOL and not problems,
                          "; ".join(problems))
                ref = load_file(os.path.join(src, "expected.safetensors"))["logits"]
                d = masked_diff(ours_adapter, ref, mask)
                check.add(name, kind, "finetune logits (export) vs fixture", d, d <= TOL)

                # 2. merge f32 -> transformers
                merged = os.path.join(work, "merged-f32")
                run("merge", "--model", base_dir, "--adapter", src, "--output", merged, "--dtype", "f32")
                tf = theirs(base_model(merged), ids, mask)
                d = masked_diff(tf, ours(merged, expected_path), mask)
                check.add(name, kind, "merged f32: transformers vs finetune", d, d <= TOL)
                d = masked_diff(tf, ours_adapter, mask)
                check.add(name, kind, "merged f32 (transformers) vs base+adapter", d, d <= TOL)

                # 3. merge in the base dtype, forced sharding -> transformers
                sharded = os.path.join(work, "merged-sharded")
                p = run("merge", "--model", base_dir, "--adapter", src, "--output", sharded, "--max-shard-size", "40KB", "--json")
                report = json.loads(p.stdout)
                shards = len(report["files"])
                ok_layout = report["sharded"] and os.path.exists(os.path.join(sharded, "model.safetensors.index.json"))
                tf_model = base_model(sharded)
                tf = theirs(tf_model, ids, mask)
                d = masked_diff(tf, ours(sharded, expected_path), mask)
                cfg_dtype = json.load(open(os.path.join(sharded, "config.json"))).get(
                    "dtype", json.load(open(os.path.join(sharded, "config.json"))).get("torch_dtype"))
                check.add(name, kind, f"merged {report['dtype']} ({shards} shards): transformers vs finetune", d,
                          d <= TOL and ok_layout and cfg_dtype == report["dtype"],
                          f"rounding {report['max_rounding_error']:.2g}, vs adapter {masked_diff(tf, ours_adapter, mask):.2g}")

                # 4. a trained adapter -> PEFT
                run_dir = os.path.join(work, "train")
                run("train", "--model", base_dir, "--data", data, "--output", run_dir, "--adapter-type", kind,
                    "--r", "4", "--steps", str(args.train_steps), "--batch-size", "2", "--lr", "1e-2",
                    "--warmup-steps", "0", "--no-shuffle", "--threads", "1")
                adapter = os.path.join(run_dir, "adapter")
                tcfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
                model, problems = peft_load(base_dir, adapter)
                if not tcfg.get("base_model_name_or_path"):
                    problems.append("base_model_name_or_path is empty")
                d = masked_diff(theirs(model, ids, mask), ours(base_dir, expected_path, adapter), mask)
                check.add(name, kind, f"trained ({args.train_steps} steps, {tcfg['peft_type']}) in PEFT vs finetune", d,
                          d <= TOL and not problems, "; ".join(problems))
        # 5. PEFT-written adapters read by finetune (PEFT's config semantics).
        from peft import LoKrConfig, LoraConfig, get_peft_model
        allp = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        variants = [
            ("rank/alpha patterns", LoraConfig(r=4, lora_alpha=8, target_modules=allp,
                                               rank_pattern={"layers.0.self_attn.q_proj": 2, "q_proj": 6},
                                               alpha_pattern={r"layers\.[01]\.self_attn\.v_proj": 5, "model.layers.1.mlp.down_proj": 3.5})),
            # Saved with sorted keys, so the general key comes first in the file and wins for
            # layer 0 too (a longest-key rule would give layer 0 rank 2).
            ("pattern order (first key wins)", LoraConfig(r=4, lora_alpha=8, target_modules=allp,
                                                          rank_pattern={r"layers\.\d+\.self_attn\.q_proj": 6,
                                                                        "model.layers.0.self_attn.q_proj": 2})),
            ("use_rslora", LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=allp)),
            ("regex target_modules", LoraConfig(r=4, lora_alpha=8, target_modules=r"model\.layers\.0\.self_attn\.(q|v)_proj")),
            ("layers_to_transform [1]", LoraConfig(r=4, lora_alpha=8, target_modules=allp, layers_to_transform=[1])),
            ("exclude_modules", LoraConfig(r=4, lora_alpha=8, target_modules=allp, exclude_modules=["down_proj"])),
            ("all-linear", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")),
            ("DoRA (use_dora), q/v only", LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj"])),
            ("LoKr decompose_both, r=2", LoKrConfig(r=2, alpha=3, target_modules=allp, decompose_both=True)),
            ("LoKr whole factors, alpha_pattern", LoKrConfig(r=8, alpha=16, target_modules=allp, alpha_pattern={"o_proj": 4})),
        ]
        for name in [m for m in ("llama-tiny", "qwen3-tiny") if m in args.models]:
            base_dir = os.path.join(FIXTURES, name)
            expected_path = os.path.join(base_dir, "expected.safetensors")
            expected = load_file(expected_path)
            ids, mask = expected["input_ids"], expected["attention_mask"]
            for i, (label, cfg) in enumerate(variants):
                torch.manual_seed(i)
                model = get_peft_model(base_model(base_dir), cfg).eval()
                with torch.no_grad():
                    for pname, p in model.named_parameters():
                        if "lora_" in pname or "lokr_" in pname:
                            p.uniform_(-0.2, 0.2)
                out = os.path.join(tmp, f"{name}-peft-{i}")
                model.save_pretrained(out)
                # The reference is what PEFT makes of the saved files (as a user would load them).
                reloaded, problems = peft_load(base_dir, out)
                d = masked_diff(theirs(reloaded, ids, mask), ours(base_dir, expected_path, out), mask)
                check.add(name, cfg.peft_type.value.lower(), f"PEFT-written: {label}", d, d <= TOL and not problems,
                          "; ".join(problems))
    except RuntimeError as e:
        print(check.table())
        print(f"\nerror: {e}")
        return 2
    finally:
        if args.keep:
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(check.table())
    failed = check.failed
    print(f"\n{len(check.rows) - len(failed)}/{len(check.rows)} checks passed (bound {TOL:g} on logits)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
