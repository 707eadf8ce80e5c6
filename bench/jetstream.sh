#!/usr/bin/env bash
# jetstream.sh measures pipelined on the JetStream backend, the way
# bench/bench.sh measures it on Badger: requests/s, p50, p99 and the CPU
# each process spent per event, with
#
#   R1  one nats-server with JetStream, a stream of 1 replica
#   R3  three nats-server processes in one cluster (as tests/e2e's cluster
#       tests start them), a stream of 3 replicas
#   R1c the same cluster, a stream of 1 replica (what the cluster tests'
#       BenchmarkJetStreamIngest calls R1); not run unless TOPOS names it
#
# and two configurations derived from each build's own pipeline.toml, the
# backend switched to jetstream:
#
#   ingest  without its [[sink]] and [[route]] tables: nothing delivered
#   e2e     as it is (archive + SQLite sinks): the load generator's
#           end-to-end mode (-metrics) waits until both queues are drained,
#           so delivery is in the CPU figures
#
# at 64 and 8 connections (cmd/pipelined-load, CallKaro payload, distinct
# callSids). nats-server is built from the Go module in go.mod, as the
# cluster tests build it. Every daemon run gets fresh nats-server processes
# with empty store directories, so each starts from a fresh stream.
#
# CPU per event: utime+stime from /proc/<pid>/stat before and after each
# load (bench/lib.sh's cpu_ticks) of the daemon, of each of its plugins and
# of every nats-server process (on R3 split into the stream's leader and
# its two followers), over the events the load sent (warm-up included).
#
# Usage: bench/jetstream.sh [duration, default 10s]. `make bench-jetstream`.
#
# Environment:
#   BASELINE_BIN=path     another pipelined binary (its plugins next to it),
#                         measured right after this tree's bin/pipelined
#                         in each (topology, configuration): "baseline"
#   BASELINE_CONFIG=path  the pipeline.toml the baseline's configurations are
#                         derived from (default: ../pipeline.toml beside
#                         BASELINE_BIN's directory, else the repository's)
#   ROUNDS=n              repeat everything n times (default 1); even rounds
#                         run the baseline first, to even out drift
#   TOPOS="R1 R3" MODES="ingest e2e" CONNS="64 8"   what to run
#   HTTP_PORT=48080 ADMIN_PORT=48081   the daemon's listeners
#   NATS_PORT=44220       R1's client port; R3's nodes take NATS_PORT+1..+3,
#                         their cluster routes +2000, monitoring ports +4000
#   KEEP=1                keep the scratch directory (logs, JSON, ticks)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DUR=${1:-10s}
ROUNDS=${ROUNDS:-1}
TOPOS=${TOPOS:-R1 R3}
MODES=${MODES:-ingest e2e}
CONNS=${CONNS:-64 8}
HTTP_PORT=${HTTP_PORT:-48080}
ADMIN_PORT=${ADMIN_PORT:-48081}
NATS_PORT=${NATS_PORT:-44220}
WORK=$(mktemp -d /tmp/pipelined-jsbench.XXXXXX)
cleanup() {
	kill $(jobs -p) 2>/dev/null || true
	wait 2>/dev/null || true
	if [ -n "${KEEP:-}" ]; then echo "jetstream.sh: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

. bench/lib.sh # cpu_ticks

for p in $HTTP_PORT $ADMIN_PORT $NATS_PORT $((NATS_PORT + 4000)) \
	$((NATS_PORT + 1)) $((NATS_PORT + 2)) $((NATS_PORT + 3)) \
	$((NATS_PORT + 2001)) $((NATS_PORT + 2002)) $((NATS_PORT + 2003)) \
	$((NATS_PORT + 4001)) $((NATS_PORT + 4002)) $((NATS_PORT + 4003)); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		echo "jetstream.sh: port $p is in use; move HTTP_PORT, ADMIN_PORT or NATS_PORT" >&2
		exit 1
	fi
done

make build >/dev/null
go build -o "$WORK/load" ./cmd/pipelined-load
go build -o "$WORK/nats-server" github.com/nats-io/nats-server/v2
LOAD=$WORK/load
NATS=$WORK/nats-server

BUILDS=(pipelined)
declare -A BIN CONF
BIN[pipelined]=$REPO/bin/pipelined
CONF[pipelined]=$REPO/pipeline.toml
if [ -n "${BASELINE_BIN:-}" ]; then
	BUILDS+=(baseline)
	BIN[baseline]=$(realpath "$BASELINE_BIN")
	default_conf=$REPO/pipeline.toml
	[ -f "$(dirname "${BIN[baseline]}")/../pipeline.toml" ] && default_conf=$(dirname "${BIN[baseline]}")/../pipeline.toml
	CONF[baseline]=$(realpath "${BASELINE_CONFIG:-$default_conf}")
fi

# derive src mode replicas urls: the config of one daemon run, on stdout.
# Every edit must match exactly once, or the script stops: a pipeline.toml
# that changed shape must not be measured as something else.
derive() {
	python3 - "$@" "$HTTP_PORT" "$ADMIN_PORT" <<'PY'
import re, sys
src, mode, replicas, urls, http, admin = sys.argv[1:]
s = open(src).read()
def sub(pat, repl):
    global s
    s, n = re.subn(pat, repl, s, flags=re.M)
    if n != 1:
        sys.exit(f"jetstream.sh: {src}: {pat!r} matched {n} times, not once")
sub(r'^listen = "127\.0\.0\.1:8080"$', f'listen = "127.0.0.1:{http}"')
sub(r'^listen = "127\.0\.0\.1:8081"$', f'listen = "127.0.0.1:{admin}"')
quoted = ", ".join(f'"{u}"' for u in urls.split())
sub(r'^backend = "badger"$', f'backend = "jetstream"\nurls = [{quoted}]\nreplicas = {replicas}')
if mode == "ingest":
    i = re.search(r'^\[\[sink\]\]$', s, flags=re.M)
    if not i:
        sys.exit(f"jetstream.sh: {src}: no [[sink]] table to cut for the ingest-only mode")
    s = s[:i.start()]
    if re.search(r'^\[\[route\]\]$', s, flags=re.M):
        sys.exit(f"jetstream.sh: {src}: a [[route]] before the first [[sink]]")
sys.stdout.write(s)
PY
}

NATS_PIDS=()
NATS_NAMES=()
# start_nats topo: fresh nats-server processes with empty stores, waiting
# until each answers /healthz (JetStream up; in a cluster, a meta leader).
start_nats() {
	NATS_PIDS=()
	NATS_NAMES=()
	NATS_URLS=()
	NATS_MON=()
	rm -rf "$WORK/nats" && mkdir -p "$WORK/nats"
	local n i port routes="" conf
	if [ "$1" = R1 ]; then # R1c and R3: the cluster
		n=1
	else
		n=3
		for i in 1 2 3; do routes+="${routes:+, }nats-route://127.0.0.1:$((NATS_PORT + 2000 + i))"; done
	fi
	for i in $(seq "$n"); do
		[ "$n" = 1 ] && port=$NATS_PORT || port=$((NATS_PORT + i))
		conf=$WORK/nats/n$i.conf
		{
			echo "server_name: n$i"
			echo "listen: 127.0.0.1:$port"
			echo "http: 127.0.0.1:$((port + 4000))"
			echo "jetstream { store_dir: \"$WORK/nats/n$i\" }"
			if [ "$n" = 3 ]; then echo "cluster { name: pipelined-bench, listen: 127.0.0.1:$((port + 2000)), routes: [$routes] }"; fi
		} > "$conf"
		"$NATS" -c "$conf" > "$WORK/nats/n$i.log" 2>&1 &
		NATS_PIDS+=($!)
		NATS_NAMES+=("n$i")
		NATS_URLS+=("nats://127.0.0.1:$port")
		NATS_MON+=("http://127.0.0.1:$((port + 4000))")
	done
	local m
	for m in "${NATS_MON[@]}"; do
		for _ in $(seq 300); do curl -sf "$m/healthz" >/dev/null && continue 2; sleep 0.1; done
		echo "jetstream.sh: nats-server at $m not healthy after 30 s" >&2
		return 1
	done
}

stop_nats() {
	local p
	for p in "${NATS_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${NATS_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	NATS_PIDS=()
}

# leader: the server_name of the stream PIPELINED's leader, from /jsz.
leader() {
	local m
	for m in "${NATS_MON[@]}"; do
		curl -sf "$m/jsz?accounts=true&streams=true" | python3 -c '
import json, sys
for a in json.load(sys.stdin).get("account_details") or []:
    for st in a.get("stream_detail") or []:
        if st.get("name") == "PIPELINED" and (st.get("cluster") or {}).get("leader"):
            print(st["cluster"]["leader"]); sys.exit(0)
sys.exit(1)' && return 0
	done
	echo "?"
}

# unit round topo mode build: one daemon run on fresh nats-server processes,
# a load at each of CONNS connections.
unit() {
	local round=$1 topo=$2 mode=$3 build=$4 replicas=1 c tag
	if [ "$topo" = R3 ]; then replicas=3; fi
	tag=r$round-$topo-$mode-$build
	echo "jetstream.sh: round $round, $topo, $mode, $build" >&2
	if ! start_nats "$topo"; then stop_nats; return 0; fi
	rm -rf "$WORK/pl" && mkdir -p "$WORK/pl"
	ln -sfn "$REPO/examples" "$WORK/pl/examples"
	ln -sfn "$REPO/examples" "$WORK/examples" # an older config's ../examples
	derive "${CONF[$build]}" "$mode" "$replicas" "${NATS_URLS[*]}" > "$WORK/pl/pipeline.toml"
	cp "$WORK/pl/pipeline.toml" "$WORK/$tag.toml"
	# env -C, not a subshell: $! is the daemon itself.
	env -C "$WORK/pl" "${BIN[$build]}" serve -c "$WORK/pl/pipeline.toml" -log-level warn \
		2> "$WORK/$tag.daemon.log" & local PL=$!
	local ready=
	for _ in $(seq 300); do
		curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && { ready=1; break; }
		kill -0 "$PL" 2>/dev/null || break
		sleep 0.1
	done
	if [ -z "$ready" ]; then
		echo "jetstream.sh: $tag: the daemon did not get ready; its log:" >&2
		tail -n 20 "$WORK/$tag.daemon.log" >&2
		kill -TERM "$PL" 2>/dev/null || true; wait "$PL" 2>/dev/null || true
		stop_nats
		return 0
	fi
	local lag=()
	# grep reads everything (no -q): see bench.sh.
	if curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^pipelined_queue_depth' >/dev/null; then
		lag=(-metrics "http://127.0.0.1:$ADMIN_PORT/metrics")
	fi
	if [ "$mode" = e2e ] && [ ${#lag[@]} = 0 ]; then echo "jetstream.sh: $tag: no queue metrics; the drain is not waited for" >&2; fi
	# Labels of the processes: daemon, its plugins, each nats-server as
	# "nats-leader" or "nats-follower" of the stream (R1: "nats").
	local lead i procs=("$PL" $(pgrep -P "$PL" || true))
	lead=$(leader)
	: > "$WORK/$tag.labels"
	for i in "${!NATS_PIDS[@]}"; do
		procs+=("${NATS_PIDS[$i]}")
		if [ "$topo" = R1 ]; then echo "${NATS_PIDS[$i]} nats"
		elif [ "${NATS_NAMES[$i]}" = "$lead" ]; then echo "${NATS_PIDS[$i]} nats-leader"
		else echo "${NATS_PIDS[$i]} nats-follower"; fi >> "$WORK/$tag.labels"
	done
	echo "$lead" > "$WORK/$tag.leader"
	for c in $CONNS; do
		cpu_ticks "${procs[@]}" > "$WORK/$tag-$c.cpu0"
		"$LOAD" run -url "http://127.0.0.1:$HTTP_PORT/hooks/callkaro" -c "$c" -d "$DUR" -json "${lag[@]}" \
			> "$WORK/$tag-$c.json" 2> "$WORK/$tag-$c.err" ||
			echo "jetstream.sh: $tag at $c connections: the load generator reported a failure: $(tail -n 3 "$WORK/$tag-$c.err")" >&2
		cpu_ticks "${procs[@]}" > "$WORK/$tag-$c.cpu1"
	done
	kill -TERM "$PL"; wait "$PL" 2>/dev/null || true
	stop_nats
}

echo "jetstream.sh: builds ${BUILDS[*]}; ${BIN[pipelined]} on ${CONF[pipelined]}${BASELINE_BIN:+; ${BIN[baseline]} on ${CONF[baseline]}}; $(date -u +%FT%TZ)" >&2
for round in $(seq "$ROUNDS"); do
	order=("${BUILDS[@]}")
	if [ $((round % 2)) = 0 ] && [ ${#BUILDS[@]} = 2 ]; then order=(baseline pipelined); fi
	for topo in $TOPOS; do
		for mode in $MODES; do
			for build in "${order[@]}"; do unit "$round" "$topo" "$mode" "$build"; done
		done
	done
done
echo "jetstream.sh: done $(date -u +%FT%TZ)" >&2

python3 - "$WORK" "$(getconf CLK_TCK)" "$ROUNDS" "$TOPOS" "$MODES" "$CONNS" "${BUILDS[*]}" <<'PY'
import json, os, sys
work, hz, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
topos, modes, conns, builds = (a.split() for a in sys.argv[4:8])
def load(p):
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None
def ticks(p):
    out = {}
    if os.path.exists(p):
        for line in open(p):
            name, pid, t = line.split()
            out[pid] = (name, int(t))
    return out
def labels(p):
    out = {}
    if os.path.exists(p):
        for line in open(p):
            pid, label = line.split()
            out[pid] = label
    return out
short = {"pipelined": "daemon", "pipelined-sink-archive": "archive", "pipelined-sink-sql": "sql"}
cols = ["daemon", "archive", "sql", "nats", "nats-leader", "nats-follower"]
for r in range(1, rounds + 1):
    print(f"\nround {r}\n")
    print("| topo | config | conns | build | req/s | p50 ms | p99 ms | errors | events | daemon | archive | sql | nats | **total µs/event** | drain s |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for topo in topos:
        for mode in modes:
            for c in conns:
                for b in builds:
                    tag = f"r{r}-{topo}-{mode}-{b}"
                    res = load(f"{work}/{tag}-{c}.json")
                    if not res:
                        print(f"| {topo} | {mode} | {c} | {b} | (no result) |||||||||||")
                        continue
                    t0, t1, lab = ticks(f"{work}/{tag}-{c}.cpu0"), ticks(f"{work}/{tag}-{c}.cpu1"), labels(f"{work}/{tag}.labels")
                    events = max(res["sent"] - res["errors"], 1)
                    per = {}
                    for pid, (name, t) in t1.items():
                        key = lab.get(pid) or short.get(name, name)
                        per[key] = per.get(key, 0) + (t - t0.get(pid, (name, 0))[1]) / hz * 1e6 / events
                    total = sum(per.values())
                    if topo == "R1":
                        nats = f"{per.get('nats', 0):.0f}"
                    else:
                        l, f = per.get("nats-leader", 0), per.get("nats-follower", 0)
                        nats = f"{l + f:.0f} (leader {l:.0f}, followers {f:.0f})"
                    sinks = res.get("sinks") or []
                    drain = f"{max(s['drain_s'] for s in sinks):.2f}" if sinks else "–"
                    dash = lambda k: f"{per[k]:.0f}" if k in per else "–"
                    print(f"| {topo} | {mode} | {c} | {b} | {res['requests_per_sec']:,.0f} | {res['latency_ms']['p50']:.2f} | {res['latency_ms']['p99']:.2f} | {res['errors']} | {res['sent'] - res['errors']:,} | {dash('daemon')} | {dash('archive')} | {dash('sql')} | {nats} | **{total:.0f}** | {drain} |")
PY
