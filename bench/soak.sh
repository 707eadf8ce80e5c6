#!/usr/bin/env bash
# soak.sh runs pipelined at a fixed rate for a long time and records, side
# by side and by wall clock (UTC), what is needed to tell a stall of the
# daemon from a machine that starved it:
#
#   load.txt      the load generator's -interval lines (1 s): answers,
#                 latency p50/p99/max, in flight and the oldest's age
#   vmstat.txt    vmstat -t 1 (run queue, idle, iowait)
#   proc.txt      every second: CPU and I/O pressure (/proc/pressure,
#                 "some" total µs) and the CPU ticks of the daemon, the
#                 generator and each plugin
#   metrics.txt   the daemon's /metrics every 10 s (writer, log, ingest,
#                 queues, Go runtime)
#   daemon.log    the daemon at -log-level debug, without Badger's four
#                 lines per write (its flushes, compactions and L0 stalls
#                 stay)
#   files.txt     every second: the files of the log's directory and of its
#                 write-ahead log (new tables, memtables, segments)
#   goroutines-*  /debug/pprof/goroutine?debug=2 taken when a 1 s line shows
#                 a request in flight for over SPIKE_MS (at most one a 10 s)
#
# Usage: CONFIG=bench/soak.toml OUT=dir bench/soak.sh, then
# bench/soak-report.py dir (CONTROL=... for a bare handler loaded alongside)
# CONFIG must listen on INGEST and ADMIN, have [admin] pprof = true, and
# send its http sink (if any) to 127.0.0.1:$RECEIVER, where a bare receiver
# is started. Environment: RATE (200), DUR ("20m"), INGEST (18300), ADMIN
# (18301), RECEIVER (18302), SPIKE_MS (250), BIN (bin/pipelined: another
# build, its plugins beside it).
set -euo pipefail
# All in a function, read whole before it runs: bash reads a script as it
# goes, and an edit of this file during a soak of an hour made the rest of
# the run execute from a shifted offset (it truncated load.txt).
main() {
cd "$(dirname "$0")/.."
: "${CONFIG:?set CONFIG to the configuration file}" "${OUT:?set OUT to a new directory for the records}"
RATE=${RATE:-200}
DUR=${DUR:-20m}
INGEST=${INGEST:-18300}
ADMIN=${ADMIN:-18301}
RECEIVER=${RECEIVER:-18302}
SPIKE_MS=${SPIKE_MS:-250}
[ -n "${BIN:-}" ] || make build >/dev/null
BIN=$(realpath "${BIN:-bin/pipelined}")
export TZ=UTC
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
CONFIG=$(realpath "$CONFIG")
REPO=$PWD
PL=
trap '[ -z "$PL" ] || kill $PL 2>/dev/null; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
go build -o "$OUT/load" ./cmd/pipelined-load
. bench/lib.sh # cpu_ticks, wait_port

"$OUT/load" bare -listen "127.0.0.1:$RECEIVER" 2>"$OUT/receiver.log" &
(cd "$(dirname "$CONFIG")" && exec "$BIN" serve -c "$CONFIG" -log-level debug) 2>&1 |
	grep --line-buffered -v -E 'badger: (writeRequests called|Writing to memtable|Sending updates to subscribers|[0-9]+ entries written)' >"$OUT/daemon.log" &
wait_port "$INGEST" && wait_port "$ADMIN" || { echo "soak: the daemon did not start:" >&2; tail "$OUT/daemon.log" >&2; exit 1; }
PL=$(pgrep -f -n "^$BIN serve -c $CONFIG")
echo "soak: daemon pid $PL, records in $OUT" >&2

vmstat -t 1 >"$OUT/vmstat.txt" &
LOGDIR=$(sed -n 's/^dir *= *"\(.*\)"/\1/p' "$CONFIG" | head -n 1)
case $LOGDIR in /*) ;; *) LOGDIR=$(dirname "$CONFIG")/$LOGDIR ;; esac
(
	while sleep 1; do
		echo "# $(date -u +%H:%M:%S)"
		ls -l --time-style=+%T "$LOGDIR" "$LOGDIR/wal" 2>/dev/null | awk 'NF >= 7 && $1 ~ /^-/ {print $7, $5, $6}'
	done
) >"$OUT/files.txt" &
(
	while sleep 1; do
		echo "$(date -u +%H:%M:%S) cpu_some_us=$(awk '/some/ {sub("total=", "", $5); print $5}' /proc/pressure/cpu) io_some_us=$(awk '/some/ {sub("total=", "", $5); print $5}' /proc/pressure/io) $(cpu_ticks $PL $(pgrep -P $PL) $(pgrep -f -n "$OUT/load run") | awk '{printf "%s=%s ", $1, $3}')"
	done
) >"$OUT/proc.txt" &
(
	while sleep 10; do
		echo "# $(date -u +%H:%M:%S)"
		curl -s "http://127.0.0.1:$ADMIN/metrics" | grep -E '^(pipelined_writer_|pipelined_log_|pipelined_ingest_duration_seconds_(count|sum)|pipelined_ingest_duration_seconds_bucket\{.*le="(0.05|0.1|0.25|0.5|1|2.5|5)"|pipelined_queue_depth|go_goroutines|go_memstats_heap_inuse|process_resident|process_cpu)' || true
	done
) >"$OUT/metrics.txt" &

touch "$OUT/load.txt"
(
	last=0
	tail --pid=$$ -n 0 -F "$OUT/load.txt" 2>/dev/null | while read -r line; do
		ms=${line##*oldest_inflight_ms=}
		ms=${ms%% *}
		now=$(date +%s)
		if [[ $line == interval* ]] && awk -v m="$ms" -v s="$SPIKE_MS" 'BEGIN{exit !(m > s)}' && ((now - last >= 10)); then
			last=$now
			curl -s "http://127.0.0.1:$ADMIN/debug/pprof/goroutine?debug=2" >"$OUT/goroutines-$(date -u +%H%M%S).txt"
		fi
	done
) &

echo "soak: $RATE events/s for $DUR from $(date -u +%H:%M:%S) UTC" >&2
"$OUT/load" run -url "http://127.0.0.1:$INGEST/hooks/callkaro" -rate "$RATE" -c 64 -d "$DUR" -timeout 60s -interval 1s -json \
	>"$OUT/report.json" 2>"$OUT/load.txt" || echo "soak: the load generator exited $?" >&2
echo "soak: done at $(date -u +%H:%M:%S) UTC" >&2
sleep 2
}
main "$@"
exit
