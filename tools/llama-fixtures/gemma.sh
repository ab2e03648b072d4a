#!/usr/bin/env bash
# Writes models/tests/fixtures/gemma3-270m-q4_k_m.jsonl: llama.cpp's prompt
# ids (BOS added, as the model's metadata asks), first-position top-5
# logits and 32 greedy tokens on Gemma 3 270M Q4_K_M (the catalogued
# `gemma3-270m-q4-k-m`, pulled with `memkern models pull`), for the prompts
# of shared/fixtures/smollm2_reference.jsonl plus tools/llama-fixtures/
# gemma_prompts.jsonl (Gemma's turn markers, whitespace runs, byte fallback).
#
#   tools/llama-fixtures/gemma.sh
#
# Needs what reference.sh needs.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
ref="$("$root/tools/llama-fixtures/build-reference.sh")"
cache="${MEMKERN_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/memkern/models}"
model="$cache/gemma3-270m-q4-k-m/gemma-3-270m-q4_k_m.gguf"
[[ -f "$model" ]] || { echo "no $model: run 'memkern models pull gemma3-270m-q4-k-m' first" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 - "$root/../shared/fixtures/smollm2_reference.jsonl" "$root/tools/llama-fixtures/gemma_prompts.jsonl" > "$tmp/prompts" <<'PY'
import json, sys
ps = [json.loads(l)['prompt'] for f in sys.argv[1:] for l in open(f) if l.strip()]
sys.stdout.write('\0'.join(ps))
PY
"$ref" "$model" --add-special < "$tmp/prompts" 2>"$tmp/log" > "$tmp/out.jsonl" || { cat "$tmp/log" >&2; exit 1; }
out="$root/models/tests/fixtures/gemma3-270m-q4_k_m.jsonl"
python3 - "$tmp/prompts" "$tmp/out.jsonl" "$out" <<'PY'
import json, sys
prompts = open(sys.argv[1], encoding='utf-8').read().split('\0')
rows = [json.loads(l) for l in open(sys.argv[2])]
assert len(rows) == len(prompts), (len(rows), len(prompts))
with open(sys.argv[3], 'w') as f:
    for p, r in zip(prompts, rows):
        f.write(json.dumps({'prompt': p, **r}, ensure_ascii=False) + '\n')
PY
echo "wrote $out" >&2
