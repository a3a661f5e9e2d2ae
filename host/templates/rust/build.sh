#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component) next to this script.
# Needs the wasm32-wasip2 target: `rustup target add wasm32-wasip2`.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{lib}}.wasm" {{name}}.wasm
echo "{{name}}.wasm: $(wc -c <{{name}}.wasm) bytes"
