#!/usr/bin/env bash
# Builds the plugin as a WebAssembly component: js-router.wasm next to this script (or at $1).
# Needs Node.js 18+ and npm; installs the pinned componentize-js from package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-js-router.wasm}

# Install (or refresh) the toolchain only when the lock file changed.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install`, not `npm ci`: npm 11's ci refuses any lock of this tree ("Missing:
  # …-win32-x64-msvc@ from lock file", platform-only optional packages); install still takes
  # every version from package-lock.json.
  npm install --no-audit --no-fund
fi
# `-d http fetch-event`: our world imports no wasi:http; without this flag the component
# would import it and fail to link in Hookwall's sandbox.
npx --no-install componentize-js src/plugin.js --wit ../../wit --world-name plugin \
  -d http fetch-event -o "$out"
echo "$out: $(wc -c <"$out") bytes"
