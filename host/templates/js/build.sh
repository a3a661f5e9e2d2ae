#!/usr/bin/env bash
# Builds the plugin as a WebAssembly component: {{name}}.wasm next to this script (or at $1).
# Needs Node.js 18+ and npm; installs the pinned componentize-js from package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-{{name}}.wasm}

# Install the toolchain (package.json pins componentize-js) on the first build.
if [ ! -d node_modules/@bytecodealliance/componentize-js ]; then
  npm install --no-audit --no-fund
fi
# `-d http fetch-event`: our world imports no wasi:http; without this flag the component
# would import it and fail to link in Hookwall's sandbox.
npx --no-install componentize-js src/plugin.js --wit wit --world-name plugin \
  -d http fetch-event -o "$out"
echo "$out: $(wc -c <"$out") bytes"
