#!/usr/bin/env bash
# Builds the bundled plugins as WebAssembly components and copies each to plugins/<name>.wasm.
# Needs the wasm32-wasip2 target: `rustup target add wasm32-wasip2`.
#
# It also records a hash of everything they are built from in built-from.sha256, so a test can
# tell when a committed .wasm is older than its source (`./build.sh --sources-hash` prints it).
set -euo pipefail
cd "$(dirname "$0")"

sources_hash() {
  find ../wit ../guest-sdk/src ../guest-sdk/Cargo.toml Cargo.toml Cargo.lock ./*/Cargo.toml ./*/src -type f \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1
}
if [ "${1:-}" = "--sources-hash" ]; then
  sources_hash
  exit 0
fi

cargo build --release --locked --target wasm32-wasip2
for manifest in */Cargo.toml; do
  grep -q cdylib "$manifest" || continue # a shared library crate, not a plugin
  name=$(dirname "$manifest")
  cp "target/wasm32-wasip2/release/${name//-/_}.wasm" "$name.wasm"
  echo "plugins/$name.wasm: $(wc -c <"$name.wasm") bytes"
done
sources_hash >built-from.sha256
