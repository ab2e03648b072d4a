#!/usr/bin/env bash
# The Linux runtime on 64-bit ARM (Raspberry Pi, Jetson), tested under
# emulation: cross-builds memkern-runtime and the `memkern` binary
# (memkern-linux) for aarch64-unknown-linux-gnu with Debian's
# gcc-aarch64-linux-gnu and runs, under qemu-aarch64-static, the runtime's
# vault tests and real-model smoke test (memories in, KV block saved,
# restored on the second ask), the binary's SIGKILL crash test and the
# native kernels' bit-agreement tests (NEON with and without SDOT against
# the portable code: QEMU's default CPU has SDOT). CPU backend only: burn's
# wgpu backend is left out of the ARM build (no Vulkan under user-mode QEMU,
# and it would double the cross build's time).
# Needs: apt-get install qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross;
# rustup target add aarch64-unknown-linux-gnu. The runner and linker are in
# .cargo/config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
# The crash test starts the `memkern` binary itself; under user-mode QEMU it
# must go through the emulator (there is no binfmt handler).
export MEMKERN_EXEC_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"

# One cargo invocation, one feature set: memkern-models and the runtime
# are built once for both packages.
ARGS=(--target "$TARGET" -p memkern-runtime -p memkern-linux --no-default-features
  --test runtime --test smoke --test crash "$@")
SECONDS=0
cargo build "${ARGS[@]}" --bin memkern
echo "aarch64 build: ${SECONDS}s"
SECONDS=0
cargo run -q --target "$TARGET" -p memkern-linux --no-default-features --bin memkern -- --version
cargo test "${ARGS[@]}"
cargo test --target "$TARGET" -p memkern-models --no-default-features --features flex --lib llama::native
echo "aarch64 tests under qemu-aarch64: ${SECONDS}s"
