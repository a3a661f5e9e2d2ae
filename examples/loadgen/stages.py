#!/usr/bin/env python3
"""Per-stage CPU budget of a running Hookwall, from `perf script` output with call graphs.

Each sample is charged to the first stage in STAGES (most specific first) that has a frame on
its stack; samples with none are kernel, allocator or other. Prints a Markdown table: stage,
share of samples, and µs per request given the server's total CPU µs per request (argv[1],
e.g. from `loadgen compare`). How the README's tables were made (release binary, under load):

    perf record -F 149 --call-graph dwarf,32768 -p $(pgrep -f 'hookwall serve') -o p.data -- sleep 6
    perf script -i p.data -F comm,tid,ip,sym,dso > p.script
    python3 examples/loadgen/stages.py 234 < p.script

~1,300 samples give shares within about ±1.5 percentage points.
"""
import re, sys, collections

us_per_req = float(sys.argv[1]) if len(sys.argv) > 1 else None
STAGES = [  # (stage, regex on a frame), checked leaf-first; first match wins
    ("plugin (wasmtime call)", re.compile(r"JIT|wasmtime|cranelift|hookwall::plugin|wasm\[|hookwall_plugin|<wasm")),
    ("verify (signature)", re.compile(r"hookwall::verify|hmac|sha2::|subtle")),
    ("dedupe + rate limit", re.compile(r"hookwall::dedupe|hookwall::ratelimit|governor")),
    ("store (writer, redb)", re.compile(r"hookwall::store|redb::")),
    ("delivery + sink", re.compile(r"hookwall::delivery|hookwall::sink")),
    ("pipeline (event build, JSON)", re.compile(r"hookwall::pipeline|hookwall::event|serde_json")),
    ("HTTP (hyper, server)", re.compile(r"hyper::|hyper_util|hookwall::server|h2::|httparse")),
    ("telemetry (metrics, logs)", re.compile(r"hookwall::telemetry|metrics::|tracing")),
    ("tokio scheduler", re.compile(r"tokio::runtime|tokio::sync|tokio::task")),
]
counts = collections.Counter()
total = 0
sample = []
def flush():
    global total
    if not sample:
        return
    total += 1
    for name, rx in STAGES:
        if any(rx.search(f) for f in sample[1:]):
            counts[name] += 1
            break
    else:
        leaf = sample[1] if len(sample) > 1 else ""
        if "[kernel" in leaf or "k]" in leaf:
            counts["kernel (syscalls, switches, net)"] += 1
        elif re.search(r"malloc|free|memcpy|memmove|cfree|_int_", leaf):
            counts["malloc/free/memcpy (unattributed)"] += 1
        else:
            counts["other"] += 1
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        flush(); sample = []
        continue
    sample.append(line)
flush()
print(f"| stage | share of CPU samples | µs per request |")
print(f"|---|---:|---:|")
for name, n in counts.most_common():
    share = n / total
    per = f"{share * us_per_req:.1f}" if us_per_req else ""
    print(f"| {name} | {share*100:.1f} % | {per} |")
print(f"({total} samples)")
