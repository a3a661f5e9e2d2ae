#!/usr/bin/env bash
# Builds the plugin as a WebAssembly component: order-lifecycle.wasm next to this script.
# Needs the wasm32-wasip2 target: `rustup target add wasm32-wasip2`.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --locked --target wasm32-wasip2
cp target/wasm32-wasip2/release/order_lifecycle.wasm order-lifecycle.wasm
echo "order-lifecycle.wasm: $(wc -c <order-lifecycle.wasm) bytes"
