#!/usr/bin/env bash
# Writes models/tests/fixtures/smollm2-<TYPE>.jsonl: llama.cpp's prompt ids,
# first-position top-5 logits and 32 greedy tokens for the prompts of
# shared/fixtures/smollm2_reference.jsonl, on SmolLM2-135M-Instruct
# quantised by llama-quantize to each file type memkern writes (the same
# bytes `memkern models quantize` writes: tests/quantize.rs).
#
#   tools/llama-fixtures/reference.sh [TYPE…]     # default: all ten
#
# Needs llama.cpp built by benches/llama-cpp/build.sh (its libllama, an
# AVX2 + AVX-512 x86-64 build: the ISA the agreement tests reproduce), a
# C++ compiler, python3, and the model in the memkern cache.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
ref="$("$root/tools/llama-fixtures/build-reference.sh")"
bindir="$(dirname "$ref")"
cache="${MEMKERN_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/memkern/models}"
model="$cache/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"
[[ -f "$model" ]] || { echo "no $model: run 'memkern models fetch' first" >&2; exit 1; }
prompts="$root/../shared/fixtures/smollm2_reference.jsonl"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -c "
import json, sys
sys.stdout.write('\0'.join(json.loads(l)['prompt'] for l in open('$prompts')))" > "$tmp/prompts"
types=("$@")
[[ ${#types[@]} -gt 0 ]] || types=(Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K)
for t in "${types[@]}"; do
  "$bindir/llama-quantize" --allow-requantize "$model" "$tmp/$t.gguf" "$t" 2 >"$tmp/log" 2>&1 \
    || { cat "$tmp/log" >&2; exit 1; }
  "$ref" "$tmp/$t.gguf" < "$tmp/prompts" 2>"$tmp/log" > "$tmp/$t.jsonl" || { cat "$tmp/log" >&2; exit 1; }
  out="$root/models/tests/fixtures/smollm2-$t.jsonl"
  python3 - "$prompts" "$tmp/$t.jsonl" "$out" <<'PY'
import json, sys
prompts = [json.loads(l)['prompt'] for l in open(sys.argv[1])]
rows = [json.loads(l) for l in open(sys.argv[2])]
assert len(rows) == len(prompts)
with open(sys.argv[3], 'w') as f:
    for p, r in zip(prompts, rows):
        f.write(json.dumps({'prompt': p, **r}, ensure_ascii=False) + '\n')
PY
  echo "wrote $out" >&2
  rm -f "$tmp/$t.gguf"
done
