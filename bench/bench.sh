#!/usr/bin/env bash
# bench.sh measures durable ingest against baselines on this machine, one
# after another in one run (machines are shared and noisy: compare ratios):
#
#   1. a bare net/http handler that only reads the body (pipelined-load bare)
#   2. pipelined with the default pipeline.toml (archive + SQLite sinks),
#      fsync before every 2xx, dedup and rules evaluated
#   3. Benthos v4.60.0, http_server -> file, no fsync (when it can be built)
#
# at 64 and 8 connections with the CallKaro payload (distinct callSids), and
# prints requests/s, p50, p99, the ratio to the bare handler, the daemon's
# memory and the CPU each process (daemon, each plugin) spent per event.
# Usage: bench/bench.sh [duration, default 10s]. `make bench` runs it.
#
# Environment:
#   CONFIG=path       the pipeline.toml to run (default: the repository's)
#   BASELINE_BIN=path another pipelined binary (say, the previous commit's)
#                     measured the same way, right after this one: "baseline"
#   BASELINE_CONFIG=path  the pipeline.toml the baseline runs (default: CONFIG);
#                     give an older build its own, which lacks keys added since
#                     (e.g. /tmp/base/pipeline.toml of its worktree)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
WORK=$(mktemp -d /tmp/pipelined-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

make build >/dev/null
go build -o "$WORK/load" ./cmd/pipelined-load
LOAD="$WORK/load"

. bench/lib.sh # cpu_ticks, wait_port, start_daemon

run() { # name url conns [flags]
	"$LOAD" run -url "$2" -c "$3" -d "$DUR" -json "${@:4}" > "$WORK/$1-$3.json" ||
		echo "bench: $1 at $3 connections: the load generator reported a failure (see the table)" >&2
}

# 1. bare
"$LOAD" bare -listen 127.0.0.1:9090 & BARE=$!
wait_port 9090
run bare http://127.0.0.1:9090/ 64
run bare http://127.0.0.1:9090/ 8
kill $BARE; wait $BARE 2>/dev/null || true

# 2. pipelined, default config, on a copy in a scratch directory
# (lib.sh's start_daemon).
REPO=$PWD
CONFIG=$(realpath "${CONFIG:-$REPO/pipeline.toml}")
daemon() { # name binary config
	start_daemon "$2" "$3"
	wait_port 8080
	wait_port 8081 # the admin listener, whose /metrics says whether there are sinks
	# With sinks, the end-to-end mode: queue lag while loading, drain after.
	local lag=()
	# grep reads everything (no -q): under pipefail, grep -q leaving early
	# could fail curl with SIGPIPE and drop the end-to-end mode at random.
	if curl -sf http://127.0.0.1:8081/metrics | grep '^pipelined_queue_depth' >/dev/null; then
		lag=(-metrics http://127.0.0.1:8081/metrics)
	fi
	# CPU per event: the daemon's and each plugin's utime+stime before
	# and after each run (the end-to-end mode waits until the queues are
	# drained, so delivery is counted too), over the events it sent.
	local procs=("$PL" $(pgrep -P "$PL" || true))
	cpu_ticks "${procs[@]}" > "$WORK/$1-64.cpu0"
	run "$1" http://127.0.0.1:8080/hooks/callkaro 64 "${lag[@]}"
	cpu_ticks "${procs[@]}" > "$WORK/$1-64.cpu1"
	grep -E 'VmHWM|RssAnon|RssFile' /proc/$PL/status > "$WORK/$1-mem.txt" || true
	cpu_ticks "${procs[@]}" > "$WORK/$1-8.cpu0"
	run "$1" http://127.0.0.1:8080/hooks/callkaro 8 "${lag[@]}"
	cpu_ticks "${procs[@]}" > "$WORK/$1-8.cpu1"
	kill -TERM $PL 2>/dev/null || true
	wait $PL 2>/dev/null || true
}
daemon pipelined "$REPO/bin/pipelined" "$CONFIG"
if [ -n "${BASELINE_BIN:-}" ]; then daemon baseline "$(realpath "$BASELINE_BIN")" "$(realpath "${BASELINE_CONFIG:-$CONFIG}")"; fi

# 3. Benthos, built in a throwaway module (never a dependency of pipelined)
BENTHOS=${BENTHOS:-}
if [ -z "$BENTHOS" ]; then
	mkdir -p "$WORK/benthos-mod"
	(cd "$WORK/benthos-mod" && printf 'module benthosbench\n\ngo 1.26\n' > go.mod &&
		go get -tool github.com/redpanda-data/benthos/v4/cmd/benthos@v4.60.0 >/dev/null 2>&1 &&
		go build -o "$WORK/benthos" github.com/redpanda-data/benthos/v4/cmd/benthos >/dev/null 2>&1) &&
		BENTHOS="$WORK/benthos" || echo "bench: Benthos could not be built; skipped" >&2
fi
if [ -n "$BENTHOS" ]; then
	cat > "$WORK/benthos.yaml" <<YAML
http:
  enabled: false
input:
  http_server:
    address: 127.0.0.1:9092
    path: /hooks/callkaro
output:
  file:
    path: $WORK/benthos-out.jsonl
    codec: lines
logger:
  level: WARN
YAML
	"$BENTHOS" -c "$WORK/benthos.yaml" & BT=$!
	wait_port 9092
	run benthos http://127.0.0.1:9092/hooks/callkaro 64 -any-2xx
	run benthos http://127.0.0.1:9092/hooks/callkaro 8 -any-2xx
	kill $BT; wait $BT 2>/dev/null || true
fi

python3 - "$WORK" "$(getconf CLK_TCK)" <<'PY'
import json, os, sys
work, hz = sys.argv[1], int(sys.argv[2])
def get(name, c):
    p = os.path.join(work, f"{name}-{c}.json")
    return json.load(open(p)) if os.path.exists(p) else None
print(f"{'target':<11}{'conns':>6}{'req/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'× bare':>8}{'errors':>8}")
for c in (64, 8):
    bare = get("bare", c)
    for name in ("bare", "pipelined", "baseline", "benthos"):
        r = get(name, c)
        if not r: continue
        ratio = r["requests_per_sec"] / bare["requests_per_sec"] if bare else 0
        print(f"{name:<11}{c:>6}{r['requests_per_sec']:>11.0f}{r['latency_ms']['p50']:>9.2f}{r['latency_ms']['p99']:>9.2f}{ratio:>8.2f}{r['errors']:>8}")
print("queue lag per sink (age of the oldest queued event, sampled during the run), and drain time after it:")
for c in (64, 8):
    for name in ("pipelined", "baseline"):
        r = get(name, c)
        for s in (r or {}).get("sinks") or []:
            print(f"  {name:<10}{c:>3} conns  {s['sink']:<10} lag p50 {s['lag_p50_s']:.3f} s  p99 {s['lag_p99_s']:.3f} s"
                  f"  depth {s['depth_start']}->{s['depth_end']} (max {s['depth_max']})  drained in {s['drain_s']:.2f} s")
def ticks(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            name, pid, t = line.split()
            out[(name, pid)] = int(t)
    return out
print("CPU per event (utime+stime from /proc/<pid>/stat before and after the run, drain included, over the events sent):")
for c in (64, 8):
    for name in ("pipelined", "baseline"):
        r = get(name, c)
        t0, t1 = ticks(os.path.join(work, f"{name}-{c}.cpu0")), ticks(os.path.join(work, f"{name}-{c}.cpu1"))
        if not r or not t1:
            continue
        events = r["sent"] - r["errors"]
        parts, total = [], 0.0
        for key in t1:
            us = (t1[key] - t0.get(key, 0)) / hz * 1e6 / max(events, 1)
            total += us
            parts.append(f"{key[0]} {us:.0f}")
        print(f"  {name:<10}{c:>3} conns  {events} events  total {total:.0f} us/event  (" + ", ".join(parts) + ")")
for name in ("pipelined", "baseline"):
    mem = os.path.join(work, f"{name}-mem.txt")
    if os.path.exists(mem):
        print(f"{name} memory after the 64-connection run: " + " ".join(open(mem).read().split()))
PY
