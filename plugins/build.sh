#!/usr/bin/env bash
# Builds the bundled plugins as WebAssembly components and copies each to plugins/<name>.wasm.
# Needs the wasm32-wasip2 target: `rustup target add wasm32-wasip2`.
set -euo pipefail
cd "$(dirname "$0")"

cargo build --release --locked --target wasm32-wasip2
for manifest in */Cargo.toml; do
  grep -q cdylib "$manifest" || continue # a shared library crate, not a plugin
  name=$(dirname "$manifest")
  cp "target/wasm32-wasip2/release/${name//-/_}.wasm" "$name.wasm"
  echo "plugins/$name.wasm: $(wc -c <"$name.wasm") bytes"
done
