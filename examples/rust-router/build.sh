#!/usr/bin/env bash
# Builds the plugin as a WebAssembly component: rust-router.wasm next to this script.
# Needs the wasm32-wasip2 target: `rustup target add wasm32-wasip2`.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked --target wasm32-wasip2
cp target/wasm32-wasip2/release/rust_router.wasm rust-router.wasm
echo "rust-router.wasm: $(wc -c <rust-router.wasm) bytes"
