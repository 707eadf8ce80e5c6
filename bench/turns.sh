#!/usr/bin/env bash
# turns.sh compares two builds of pipelined taking turns, which is how a
# change is measured on a shared, noisy machine: whatever else runs there
# falls on both alike. For each of ROUNDS rounds it starts this tree's
# build, then BASELINE_BIN's, on CONFIG (a fresh data directory each time),
# loads it at CONNS connections for DUR, and prints one line per run:
#
#   req/s, p50, p99, p99.9 and max latency (the load generator's),
#   commits over 10, 25 and 50 ms (pipelined_writer_commit_duration_seconds:
#   a stalled group commit holds every connection at once), and the CPU
#   per event of the daemon and of each plugin (/proc/<pid>/stat).
#
# Usage: BASELINE_BIN=/path/to/old/bin/pipelined bench/turns.sh
# Environment: ROUNDS (default 3), CONNS (64), DUR ("15s"),
#   CONFIG (default bench/ingest-only.toml; the repository's pipeline.toml
#   for the end-to-end mode), BASELINE_CONFIG (default CONFIG).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASELINE_BIN:?set BASELINE_BIN to the pipelined binary to compare with, its plugins next to it}"
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
DUR=${DUR:-15s}
WORK=$(mktemp -d /tmp/pipelined-turns.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

make build >/dev/null
go build -o "$WORK/load" ./cmd/pipelined-load
. bench/lib.sh # cpu_ticks, wait_port, start_daemon

REPO=$PWD
CONFIG=$(realpath "${CONFIG:-bench/ingest-only.toml}")
BASELINE_CONFIG=$(realpath "${BASELINE_CONFIG:-$CONFIG}")
BASELINE_BIN=$(realpath "$BASELINE_BIN")

turn() { # name binary config
	start_daemon "$2" "$3" "$WORK/daemon.log"
	wait_port 8080 && wait_port 8081 && kill -0 $PL 2>/dev/null || {
		echo "turns: $1 ($2) did not start; its log:" >&2
		cat "$WORK/daemon.log" >&2
		exit 1
	}
	local lag=()
	if curl -sf http://127.0.0.1:8081/metrics | grep '^pipelined_queue_depth' >/dev/null; then
		lag=(-metrics http://127.0.0.1:8081/metrics) # with sinks: wait for the drain, so delivery is counted
	fi
	local procs=("$PL" $(pgrep -P "$PL" || true))
	cpu_ticks "${procs[@]}" > "$WORK/cpu0"
	"$WORK/load" run -url http://127.0.0.1:8080/hooks/callkaro -c "$CONNS" -d "$DUR" -json "${lag[@]}" > "$WORK/load.json" ||
		echo "turns: $1: the load generator reported a failure" >&2
	cpu_ticks "${procs[@]}" > "$WORK/cpu1"
	curl -sf http://127.0.0.1:8081/metrics > "$WORK/metrics.txt" || true
	kill -TERM $PL 2>/dev/null || true
	wait $PL 2>/dev/null || true
	python3 - "$1" "$WORK" "$(getconf CLK_TCK)" <<'PY'
import json, os, re, sys
name, work, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = json.load(open(os.path.join(work, "load.json")))
l = d["latency_ms"]
buckets, count = {}, 0
for line in open(os.path.join(work, "metrics.txt")):
    m = re.match(r'pipelined_writer_commit_duration_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
    if m:
        buckets[m.group(1)] = int(m.group(2))
    m = re.match(r"pipelined_writer_commit_duration_seconds_count (\d+)", line)
    if m:
        count = int(m.group(1))
# "?" when the metrics could not be read (the daemon died, say): never a 0 that was not counted.
over = " ".join(f">{int(float(le) * 1000)}ms=" + (str(count - buckets[le]) if le in buckets else "?") for le in ("0.01", "0.025", "0.05"))
def ticks(f):
    return {(n, p): int(t) for n, p, t in (line.split() for line in open(os.path.join(work, f)))}
t0, t1 = ticks("cpu0"), ticks("cpu1")
n = d["sent"] or 1
cpu = " ".join(f"{k[0]}={(t1[k] - t0[k]) * 1e6 / hz / n:.0f}" for k in t0 if k in t1)
print(f"{name:<9} req/s={d['requests_per_sec']:.0f} p50={l['p50']:.1f} p99={l['p99']:.1f} p99.9={l['p99.9']:.1f} max={l['max']:.0f}"
      f"  commits {over}  µs/event {cpu}" + (f"  errors={d['errors']}" if d["errors"] else ""))
PY
}

echo "$ROUNDS rounds, $CONNS connections, $DUR each; this tree ($(git rev-parse --short HEAD)) against $BASELINE_BIN"
for i in $(seq "$ROUNDS"); do
	echo "round $i"
	turn "  this" "$REPO/bin/pipelined" "$CONFIG"
	turn "  baseline" "$BASELINE_BIN" "$BASELINE_CONFIG"
done
