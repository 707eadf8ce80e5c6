package sdlisten

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const pid = 4242
	for _, tc := range []struct {
		name                   string
		listenPID, fds, fdname string
		want                   []string
		err                    string // part of the error; empty: none
	}{
		{name: "not socket-activated"},
		{name: "one named", listenPID: "4242", fds: "1", fdname: "ingest", want: []string{"ingest"}},
		{name: "two named", listenPID: "4242", fds: "2", fdname: "ingest:admin", want: []string{"ingest", "admin"}},
		{name: "wrong pid", listenPID: "4243", fds: "2", fdname: "ingest:admin"},
		{name: "pid not a number", listenPID: "x", fds: "1", fdname: "ingest"},
		{name: "no pid", fds: "1", fdname: "ingest"},
		{name: "zero sockets", listenPID: "4242", fds: "0"},
		{name: "count not a number", listenPID: "4242", fds: "two", fdname: "ingest:admin", err: `LISTEN_FDS="two" is not a count`},
		{name: "negative count", listenPID: "4242", fds: "-1", fdname: "ingest", err: "is not a count"},
		{name: "missing names", listenPID: "4242", fds: "1", err: "(LISTEN_FDNAMES is not set): give each socket unit a FileDescriptorName="},
		{name: "fewer names than sockets", listenPID: "4242", fds: "2", fdname: "ingest", err: `LISTEN_FDS=2 but LISTEN_FDNAMES="ingest" names 1 sockets`},
		{name: "more names than sockets", listenPID: "4242", fds: "1", fdname: "ingest:admin", err: `LISTEN_FDS=1 but LISTEN_FDNAMES="ingest:admin" names 2 sockets`},
		{name: "one name twice", listenPID: "4242", fds: "2", fdname: "ingest:ingest", err: `two sockets named "ingest"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(pid, tc.listenPID, tc.fds, tc.fdname)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parse(%q, %q, %q) = %q, %v; want an error with %q", tc.listenPID, tc.fds, tc.fdname, got, err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("parse(%q, %q, %q) = %q, %v; want %q", tc.listenPID, tc.fds, tc.fdname, got, err, tc.want)
			}
		})
	}
}

// TestFromEnvUnsets checks that the variables are gone after FromEnv,
// whether or not they were for this process, so that no plugin inherits them.
func TestFromEnvUnsets(t *testing.T) {
	for _, pid := range []string{"1", strings.Repeat("9", 3)} { // never this test's pid: nothing is taken
		t.Setenv("LISTEN_PID", pid)
		t.Setenv("LISTEN_FDS", "1")
		t.Setenv("LISTEN_FDNAMES", "ingest")
		lns, err := FromEnv()
		if lns != nil || err != nil {
			t.Fatalf("FromEnv() with LISTEN_PID=%s = %v, %v; want nil, nil", pid, lns, err)
		}
		for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			if v, ok := os.LookupEnv(k); ok {
				t.Errorf("after FromEnv, %s=%q is still set", k, v)
			}
		}
	}
}

// TestFromEnvBadCount checks that a malformed LISTEN_FDS for this process
// is an error and still leaves the environment clean.
func TestFromEnvBadCount(t *testing.T) {
	t.Setenv("LISTEN_PID", itoa(os.Getpid()))
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "ingest:admin")
	if _, err := FromEnv(); err == nil {
		t.Fatal("FromEnv() with 1 socket and 2 names: no error")
	}
	if _, ok := os.LookupEnv("LISTEN_FDNAMES"); ok {
		t.Error("after FromEnv, LISTEN_FDNAMES is still set")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
