#!/usr/bin/env bash
# Builds the plugin as a WebAssembly component: python-router.wasm next to this script (or at $1).
# Needs Python 3.9+ with venv; installs the pinned componentize-py into .venv.
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-python-router.wasm}

if [ ! -x .venv/bin/componentize-py ] || [ requirements.txt -nt .venv/bin/componentize-py ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  touch .venv/bin/componentize-py
fi
.venv/bin/componentize-py --wit-path ../../wit --world plugin componentize app -o "$out"
echo "$out: $(wc -c <"$out") bytes"
