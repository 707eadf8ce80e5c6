#!/usr/bin/env bash
# sweep.sh measures how durable ingest scales with the payload size: for
# each size, the bare handler and then pipelined on bench/ingest-only.toml
# (or CONFIG), both at 64 connections, one after another.
# Usage: bench/sweep.sh [duration, default 10s] [sizes in KiB, default "1 4 16 64"]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
SIZES=${2:-1 4 16 64}
WORK=$(mktemp -d /tmp/pipelined-sweep.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
make build >/dev/null
go build -o "$WORK/load" ./cmd/pipelined-load
REPO=$PWD
CONFIG=$(realpath "${CONFIG:-bench/ingest-only.toml}")
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# The CallKaro payload padded to each size through its transcription field.
for kb in $SIZES; do
	python3 - "$kb" "$WORK/payload-$kb.json" <<'PY'
import json, sys
kb, out = int(sys.argv[1]), sys.argv[2]
d = json.load(open("examples/callkaro/call_ended.json"))
pad = kb * 1024 - len(json.dumps(d))
if pad > 0:
    d["data"]["transcription"] = str(d["data"]["transcription"]) + " " + "x" * (pad - 1)
open(out, "w").write(json.dumps(d))
PY
done

printf '%-8s %10s %10s %8s %9s\n' payload bare pipelined "× bare" "p99 ms"
for kb in $SIZES; do
	"$WORK/load" bare -listen 127.0.0.1:9090 2>/dev/null & BARE=$!
	wait_port 9090
	"$WORK/load" run -url http://127.0.0.1:9090/ -c 64 -d "$DUR" -payload "$WORK/payload-$kb.json" -json > "$WORK/bare-$kb.json"
	kill $BARE; wait $BARE 2>/dev/null || true
	# A copy in a scratch directory: relative paths resolve against the
	# config file's directory, so its data lands there (see bench.sh).
	rm -rf "$WORK/pl" && mkdir -p "$WORK/pl"
	cp "$CONFIG" "$WORK/pl/pipeline.toml"
	ln -sfn "$REPO/examples" "$WORK/pl/examples"
	ln -sfn "$REPO/examples" "$WORK/examples"
	(cd "$WORK/pl" && exec "$REPO/bin/pipelined" serve -c "$WORK/pl/pipeline.toml" -log-level warn) 2>/dev/null & PL=$!
	wait_port 8080
	"$WORK/load" run -url http://127.0.0.1:8080/hooks/callkaro -c 64 -d "$DUR" -payload "$WORK/payload-$kb.json" -json > "$WORK/pl-$kb.json" || true
	kill -TERM $PL; wait $PL 2>/dev/null || true
	python3 - "$kb" "$WORK/bare-$kb.json" "$WORK/pl-$kb.json" <<'PY'
import json, sys
kb, b, p = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
print(f"{kb + ' KiB':<8} {b['requests_per_sec']:>10.0f} {p['requests_per_sec']:>10.0f} {p['requests_per_sec'] / b['requests_per_sec']:>8.2f} {p['latency_ms']['p99']:>9.2f}"
      + (f"  ({p['errors']} errors)" if p['errors'] else ""))
PY
done
