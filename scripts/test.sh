#!/usr/bin/env bash
# The project's test command: formatting, lints, the no_std builds of the
# core for a Cortex-M4F, and every test. Fetches models on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
THUMB=thumbv7em-none-eabihf

step "cargo fmt --check"
cargo fmt --all --check

step "memkern-core for $THUMB: no features, alloc, defmt"
cargo build -p memkern-core --target "$THUMB"
cargo build -p memkern-core --target "$THUMB" --features alloc
cargo build -p memkern-core --target "$THUMB" --features alloc,defmt
cargo clippy -p memkern-core --target "$THUMB" -- -D warnings

step "clippy (all targets, all crates)"
cargo clippy --workspace --all-targets -- -D warnings

step "tests"
cargo test -p memkern-core --lib
cargo test --workspace

# The LLM on burn's wgpu backend (Mesa's lavapipe software Vulkan driver
# on CI machines, installed by .ci/run): llama.cpp agreement, 2 prompts x
# 8 tokens. Same test profile as above; only burn's wgpu half is new.
step "LLM on wgpu: llama.cpp agreement"
cargo test -p memkern-models --features wgpu --test llama_agreement -- wgpu --nocapture

step "all checks passed"
