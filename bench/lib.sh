# bench/lib.sh: the functions bench/bench.sh, bench/jetstream.sh and
# bench/turns.sh share.
# Sourced (". bench/lib.sh"), never run.

# cpu_ticks pid... writes "name pid ticks" for each process: utime+stime
# in clock ticks from /proc/<pid>/stat (fields 14 and 15, counted after
# the parenthesised command name, which may hold spaces).
cpu_ticks() {
	local pid name
	for pid in "$@"; do
		[ -r "/proc/$pid/stat" ] || continue
		name=$(tr '\0' '\n' < "/proc/$pid/cmdline" | head -n 1)
		echo "${name##*/} $pid $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')"
	done
}

# wait_port port waits up to 10 s until something listens on 127.0.0.1:port.
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# start_daemon binary config [stderr] runs binary on a copy of config in
# $WORK/pl and sets PL to its pid. The copy, because relative paths resolve
# against the config file's directory, so the daemon's data lands there;
# examples/ is linked where the reference config and bench/ingest-only.toml
# look for the CallKaro schema. Needs WORK and REPO; stderr goes to the
# file given, else stays the script's. It refuses to start while another
# process holds the config's ports (8080, 8081): the load would go there.
start_daemon() {
	local port
	for port in 8080 8081; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "bench: 127.0.0.1:$port is taken by another process; stop it and run again" >&2
			return 1
		fi
	done
	rm -rf "$WORK/pl" && mkdir -p "$WORK/pl"
	cp "$2" "$WORK/pl/pipeline.toml"
	ln -sfn "$REPO/examples" "$WORK/pl/examples"
	ln -sfn "$REPO/examples" "$WORK/examples"
	(cd "$WORK/pl" && exec "$1" serve -c "$WORK/pl/pipeline.toml" -log-level warn) 2>"${3:-/dev/stderr}" & PL=$!
}
