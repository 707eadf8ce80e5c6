# bench/lib.sh: the functions bench/bench.sh and bench/jetstream.sh share.
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
