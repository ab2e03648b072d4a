#!/usr/bin/env bash
# Builds tools/llama-fixtures/reference.cpp against the libllama that
# benches/llama-cpp/build.sh builds, and prints the binary's path (what
# reference.sh and gemma.sh run).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bindir="$(dirname "$("$root/benches/llama-cpp/build.sh")")"
lcpp="$(cd "$bindir/../.." && pwd)"
inc="$(dirname "$(find "$lcpp/src" -path '*/include/llama.h' | head -1)")"
ginc="$(dirname "$(find "$lcpp/src" -path '*/ggml/include/ggml.h' | head -1)")"
ref="$bindir/memkern-reference"
g++ -O2 -std=c++17 "$root/tools/llama-fixtures/reference.cpp" -I "$inc" -I "$ginc" \
  -L "$bindir" -lllama -lggml -lggml-base -Wl,-rpath,"$bindir" -o "$ref" >&2
echo "$ref"
