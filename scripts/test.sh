#!/usr/bin/env bash
# The project's test command: formatting, lints, the no_std builds of the
# core for a Cortex-M4F, and every test. Fetches models on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
THUMB=thumbv7em-none-eabihf

step "cargo fmt --check"
cargo fmt --all --check

# Rooms with one job: no module imports one that imports it back, and the
# runtime knows nothing of HTTP, argument parsing, terminals or async.
step "module import cycles; memkern-runtime's dependency tree"
python3 scripts/module_cycles.py
if cargo tree -p memkern-runtime --all-features -e normal --prefix none |
  grep -E '^(axum|clap|indicatif|tokio) '; then
  echo "memkern-runtime must not depend on axum, clap, indicatif or tokio" >&2
  exit 1
fi

step "memkern-core for $THUMB: no features, alloc, defmt"
cargo build -p memkern-core --target "$THUMB"
cargo build -p memkern-core --target "$THUMB" --features alloc
cargo build -p memkern-core --target "$THUMB" --features alloc,defmt
cargo clippy -p memkern-core --target "$THUMB" -- -D warnings

# The Cortex-M firmware is its own crate outside the workspace (it only
# builds for the MCU); the HIL tests below boot it in QEMU.
step "Cortex-M firmware (platforms/cortex-m): fmt, clippy, release build"
(
  cd platforms/cortex-m
  cargo fmt --check
  cargo clippy --release -- -D warnings
  cargo build --release
)

# One feature set for every host step, so the heavy dependency graph (burn
# with flex + wgpu, tract) is checked once and built once: burn's wgpu
# backend is part of the test build, and the wgpu agreement test runs on the
# default adapter (Mesa's lavapipe software Vulkan on CI, installed by
# .ci/run). MEMKERN_REQUIRE_WGPU=1 turns "no adapter" into a failure
# instead of a skip, so CI cannot pass without running it.
FEATURES=(--workspace --features memkern-models/wgpu)

step "clippy (all targets, all crates)"
cargo clippy "${FEATURES[@]}" --all-targets -- -D warnings

step "tests (models are fetched into the model cache on first use)"
cargo test "${FEATURES[@]}"

# The Linux runtime on 64-bit ARM, under user-mode QEMU (HIL, part 2).
step "aarch64: cross-build memkern-runtime and memkern, run vault/smoke/crash tests under qemu-aarch64"
if command -v qemu-aarch64-static >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then
  ./scripts/aarch64.sh
elif [ "${MEMKERN_REQUIRE_QEMU:-}" = 1 ]; then
  echo "qemu-aarch64-static or aarch64-linux-gnu-gcc missing but MEMKERN_REQUIRE_QEMU=1" >&2
  exit 1
else
  echo "SKIP: install qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross to run them"
fi

step "all checks passed"
