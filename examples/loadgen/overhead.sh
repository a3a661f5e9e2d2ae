#!/usr/bin/env bash
# Ingest throughput with metrics + tracing on, and with both off, measured alternately in one
# run: ON OFF ON OFF … so machine drift hits both alike. Prints each round and the ratio of the
# medians (OFF / ON: how much faster ingest is without them).
#
#   examples/loadgen/overhead.sh [debug|release] [rounds] [seconds]
#
# "on":  [admin] listener with the Prometheus recorder installed, RUST_LOG=info (event spans on).
# "off": no admin listener, [telemetry] metrics = false, RUST_LOG=off (no recorder, no spans).
# Sinks are paused, so the numbers are about ingest (verify → store commit), not delivery.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${1:-debug}"
rounds="${2:-3}"
secs="${3:-5}"
flag=""; [ "$profile" = release ] && flag="--release"
cargo build -q $flag -p hookwall -p loadgen
bin="target/$profile"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

config() { # name listen admin-section telemetry-section
  mkdir -p "$work/$1/plugins"
  cat > "$work/$1/hookwall.toml" <<TOML
[server]
listen = "$2"
[storage]
path = "data"
fsync = false
$3
$4
[sources.bench]
path = "/hooks/bench"
verify = { scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["overhead-bench-secret"], id_header = "X-Event-Id" }
sinks = ["bench"]
[sinks.bench]
type = "file"
path = "events.jsonl"
paused = true
TOML
}

measure() { # name rust_log
  local dir="$work/$1" addr
  addr="$(grep '^listen' "$dir/hookwall.toml" | head -1 | cut -d'"' -f2)"
  rm -rf "$dir/data"
  RUST_LOG="$2" "$bin/hookwall" serve --config "$dir/hookwall.toml" 2>"$dir/log" &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/${addr%:*}/${addr#*:}) 2>/dev/null && break; sleep 0.1; done
  "$bin/loadgen" run --config "$dir/hookwall.toml" --source bench -c 32 -d "${secs}s" --warmup 1s \
    --pool 60000 --json 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["requests_per_sec"]))'
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

config on "127.0.0.1:$(free_port)" "[admin]
listen = \"127.0.0.1:$(free_port)\"" "[telemetry]
metrics = true"
config off "127.0.0.1:$(free_port)" "" "[telemetry]
metrics = false"

on=(); off=()
for r in $(seq "$rounds"); do
  a="$(measure on info)"; b="$(measure off off)"
  on+=("$a"); off+=("$b")
  echo "round $r: on $a req/s, off $b req/s"
done
python3 - "$profile" "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
profile, on, off = sys.argv[1], list(map(float, sys.argv[2].split())), list(map(float, sys.argv[3].split()))
m_on, m_off = statistics.median(on), statistics.median(off)
print(f"{profile} build: median on {m_on:.0f} req/s, off {m_off:.0f} req/s; "
      f"on/off = {m_on/m_off:.3f} (overhead {100*(1-m_on/m_off):.1f} %)")
PY
