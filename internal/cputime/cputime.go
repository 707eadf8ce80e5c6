// Package cputime reads the CPU time a process has used: for the plugins'
// benchmarks (the figure bench/bench.sh reports per process), and for tests
// that bound the work a request costs the daemon, which a loaded machine's
// wall clock cannot.
package cputime

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// Process returns the user + system CPU time of every thread of process
// pid so far, from /proc/<pid>/stat (a resolution of 10ms).
func Process(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: the fields
	// counted here start after its closing parenthesis, at field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime and stime, fields 14 and 15
		n, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// Self returns the user + system CPU time this process has used so far,
// from getrusage (finer than Process's 10ms).
func Self() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// PerEvent resets b's timer, runs round(i) for every i below b.N, each
// round handling events events, and reports the CPU time process pid used
// over them per event as the metric unit. Pid 0 is this process, read by
// Self; any other is read by Process.
func PerEvent(b *testing.B, pid, events int, unit string, round func(i int)) {
	b.Helper()
	read := Self
	if pid != 0 {
		read = func() (time.Duration, error) { return Process(pid) }
	}
	b.ResetTimer()
	start, err := read()
	if err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		round(i)
	}
	end, err := read()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((end-start).Nanoseconds())/float64(b.N*events), unit)
}
