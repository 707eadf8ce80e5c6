#!/usr/bin/env bash
# trace.sh measures what tracing costs ingest, one variant after another in
# one run (the machine is shared and noisy: compare ratios, not numbers):
#
#   baseline   a pipelined built from BASELINE_REV (default: the commit
#              before tracing, e310391) or the binary BASELINE_BIN
#   off        this build, no [telemetry] (the default)
#   ratio 0.01 this build, sample_ratio = 0.01, exporting over gRPC to a
#              local collector (bench/otlpsink)
#   ratio 1    this build, sample_ratio = 1.0, every request traced
#
# each with bench/ingest-only.toml (durable ingest, no sinks) at 64 and 8
# connections with the CallKaro payload. Usage: bench/trace.sh [duration,
# default 10s]. ROUNDS (default 2) runs the four variants that many times,
# in turn, and reports the median of each: other load on the machine then
# falls on every variant alike. PORT (default 18380) is the ingest port; the admin API takes
# PORT+1 and the collector PORT+2, so that other daemons on 8080 are left
# alone; the script stops if one of them is taken.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
WORK=$(mktemp -d /tmp/pipelined-trace-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
REPO=$PWD

go build -o "$WORK/pipelined" ./cmd/pipelined
go build -o "$WORK/load" ./cmd/pipelined-load
go build -o "$WORK/otlpsink" ./bench/otlpsink
BASE=${BASELINE_BIN:-}
if [ -z "$BASE" ]; then
	mkdir -p "$WORK/base"
	git archive "${BASELINE_REV:-e310391}" | tar -x -C "$WORK/base"
	(cd "$WORK/base" && go build -o "$WORK/baseline" ./cmd/pipelined)
	BASE="$WORK/baseline"
fi

PORT=${PORT:-18380}
ADMIN=$((PORT + 1))
OTLP=$((PORT + 2))
for p in $PORT $ADMIN $OTLP; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		echo "trace.sh: port $p is taken; set PORT to a free range" >&2
		exit 1
	fi
done
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

"$WORK/otlpsink" -listen 127.0.0.1:$OTLP > "$WORK/spans.txt" & SINK=$!
wait_port $OTLP

ROUNDS=${ROUNDS:-2}
variant() { # name binary telemetry-lines
	rm -rf "$WORK/pl" && mkdir -p "$WORK/pl"
	sed -e "s/127.0.0.1:8080/127.0.0.1:$PORT/; s/127.0.0.1:8081/127.0.0.1:$ADMIN/" bench/ingest-only.toml > "$WORK/pl/pipeline.toml"
	printf '\n%b\n' "$3" >> "$WORK/pl/pipeline.toml"
	ln -sfn "$REPO/examples" "$WORK/pl/examples"
	ln -sfn "$REPO/examples" "$WORK/examples"
	(cd "$WORK/pl" && exec "$2" serve -c "$WORK/pl/pipeline.toml" -log-level warn) & PL=$!
	wait_port $PORT
	for c in 64 8; do
		"$WORK/load" run -url http://127.0.0.1:$PORT/hooks/callkaro -c $c -d "$DUR" -json > "$WORK/$1-$c-$ROUND.json" ||
			echo "trace.sh: $1 at $c connections: the load generator reported a failure" >&2
	done
	# The daemon's CPU time (user + system, clock ticks): per request it
	# hardly depends on what else the machine runs, unlike req/s.
	awk '{print $14 + $15}' "/proc/$PL/stat" > "$WORK/$1-cpu-$ROUND.txt"
	curl -s http://127.0.0.1:$ADMIN/metrics | grep -E '^pipelined_trace_spans_dropped_total' > "$WORK/$1-dropped.txt" || true
	kill -TERM $PL; wait $PL 2>/dev/null || true
}
TEL="[telemetry]\notlp_endpoint = \"http://127.0.0.1:$OTLP\""
for ROUND in $(seq "$ROUNDS"); do
	variant baseline "$BASE" ""
	variant off "$WORK/pipelined" ""
	variant r001 "$WORK/pipelined" "$TEL\nsample_ratio = 0.01"
	variant r1 "$WORK/pipelined" "$TEL\nsample_ratio = 1.0"
done
kill -TERM $SINK; wait $SINK 2>/dev/null || true

python3 - "$WORK" "$ROUNDS" <<'PY'
import glob, json, os, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def get(key, c):
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, f"{key}-{c}-*.json")))]
    if not runs: return None
    med = lambda f: statistics.median(f(r) for r in runs)
    return {"requests_per_sec": med(lambda r: r["requests_per_sec"]), "p50": med(lambda r: r["latency_ms"]["p50"]),
            "p99": med(lambda r: r["latency_ms"]["p99"]), "errors": sum(r["errors"] for r in runs),
            "each": " ".join(f"{r['requests_per_sec']:.0f}" for r in runs)}
tick = os.sysconf("SC_CLK_TCK")
def cpu_us(key):
    # CPU µs of the daemon per request sent (both connection counts, warm-up included), per round
    out = []
    for p in sorted(glob.glob(os.path.join(work, f"{key}-cpu-*.txt"))):
        rnd = p.rsplit("-", 1)[1][:-4]
        sent = sum(json.load(open(os.path.join(work, f"{key}-{c}-{rnd}.json")))["sent"] for c in (64, 8))
        out.append(float(open(p).read()) / tick * 1e6 / sent)
    return out
print(f"median of {rounds} round(s); req/s of each round in the last column")
names = [("baseline", "baseline (before tracing)"), ("off", "tracing off"), ("r001", "ratio 0.01"), ("r1", "ratio 1.0")]
print(f"{'variant':<27}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'× baseline':>12}{'errors':>8}  rounds")
for c in (64, 8):
    base = get("baseline", c)
    for key, label in names:
        r = get(key, c)
        if not r: continue
        print(f"{label:<27}{c:>6}{r['requests_per_sec']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
              f"{r['requests_per_sec']/base['requests_per_sec']:>12.2f}{r['errors']:>8}  {r['each']}")
print("daemon CPU per request (µs; median, then each round):")
base_cpu = statistics.median(cpu_us("baseline"))
for key, label in names:
    v = cpu_us(key)
    print(f"  {label:<27}{statistics.median(v):>7.0f}  × baseline {statistics.median(v)/base_cpu:.2f}   " + " ".join(f"{x:.0f}" for x in v))
print("spans the collector received:", open(os.path.join(work, "spans.txt")).read().strip() or "?")
for key in ("r001", "r1"):
    d = open(os.path.join(work, f"{key}-dropped.txt")).read().strip()
    print(f"{key}: {d or 'pipelined_trace_spans_dropped_total absent'}")
PY
