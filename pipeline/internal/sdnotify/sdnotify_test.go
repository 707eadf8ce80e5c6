package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen plays systemd: it binds a unixgram socket at addr and returns a
// function that reads the next datagram.
func listen(t *testing.T, addr string) func() string {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read notify socket: %v", err)
		}
		return string(buf[:n])
	}
}

func socketPath(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "notify.sock")
	if len(p) >= 108 { // sun_path
		dir, err := os.MkdirTemp("", "sd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		p = filepath.Join(dir, "notify.sock")
	}
	return p
}

func TestFromEnvSendsEachMessage(t *testing.T) {
	sock := socketPath(t)
	recv := listen(t, sock)
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := FromEnv()

	for _, k := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("after FromEnv, %s = %q, want it unset so plugins do not inherit it", k, v)
		}
	}
	if !n.Enabled() {
		t.Fatalf("Enabled() = false with NOTIFY_SOCKET=%s, want true", sock)
	}
	if got, want := n.WatchdogInterval(), 15*time.Second; got != want {
		t.Errorf("WatchdogInterval() = %v, want %v", got, want)
	}

	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"Ready", func() error { return n.Ready("serving 2 sinks") }, "READY=1\nSTATUS=serving 2 sinks"},
		{"Ready without status", func() error { return n.Ready("") }, "READY=1"},
		{"Status on one line", func() error { return n.Status("sink archive:\n  restarting\n") }, "STATUS=sink archive: restarting"},
		{"Watchdog", n.Watchdog, "WATCHDOG=1"},
		{"Stopping", n.Stopping, "STOPPING=1"},
		{"ExtendTimeout", func() error { return n.ExtendTimeout(15 * time.Second) }, "EXTEND_TIMEOUT_USEC=15000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(); err != nil {
				t.Fatalf("%s() = %v, want nil", tt.name, err)
			}
			if got := recv(); got != tt.want {
				t.Errorf("%s() sent %q, want %q", tt.name, got, tt.want)
			}
		})
	}

	t.Run("Reloading", func(t *testing.T) {
		before, _ := monotonicUsec()
		if err := n.Reloading(); err != nil {
			t.Fatalf("Reloading() = %v, want nil", err)
		}
		after, _ := monotonicUsec()
		got := recv()
		lines := strings.Split(got, "\n")
		if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
			t.Fatalf("Reloading() sent %q, want RELOADING=1 and MONOTONIC_USEC=", got)
		}
		us, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
		if err != nil || us < before || us > after {
			t.Errorf("MONOTONIC_USEC = %s, want CLOCK_MONOTONIC between %d and %d µs", lines[1], before, after)
		}
	})
}

func TestAbstractSocket(t *testing.T) {
	name := "@pipelined-sdnotify-test-" + strconv.Itoa(os.Getpid())
	recv := listen(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	n := FromEnv()
	if err := n.Ready("up"); err != nil {
		t.Fatalf("Ready() on abstract socket %s = %v", name, err)
	}
	if got, want := recv(), "READY=1\nSTATUS=up"; got != want {
		t.Errorf("Ready() sent %q, want %q", got, want)
	}
}

func TestWatchdogInterval(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	tests := []struct {
		name      string
		socket    bool
		usec, pid string
		want      time.Duration
	}{
		{"ours", true, "500000", me, 250 * time.Millisecond},
		{"pid left out", true, "500000", "", 250 * time.Millisecond},
		{"another process's", true, "500000", "1", 0},
		{"bad pid", true, "500000", "x", 0},
		{"disabled", true, "", "", 0},
		{"zero", true, "0", me, 0},
		{"not a number", true, "30s", me, 0},
		{"no socket", false, "500000", me, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.socket {
				t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
			} else {
				t.Setenv("NOTIFY_SOCKET", "")
			}
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			if got := FromEnv().WatchdogInterval(); got != tt.want {
				t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: WatchdogInterval() = %v, want %v", tt.usec, tt.pid, got, tt.want)
			}
		})
	}
}

func TestWithoutSystemdDoesNothing(t *testing.T) {
	for _, socket := range []string{"", "@", "relative.sock", "vsock:2:1234"} {
		t.Setenv("NOTIFY_SOCKET", socket)
		for name, n := range map[string]*Notifier{"nil": nil, "zero": {}, "FromEnv": FromEnv()} {
			if n.Enabled() {
				t.Errorf("NOTIFY_SOCKET=%q: %s Notifier Enabled() = true, want false", socket, name)
			}
			for _, err := range []error{n.Ready("x"), n.Reloading(), n.Stopping(), n.Status("x"), n.Watchdog(), n.ExtendTimeout(time.Second)} {
				if err != nil {
					t.Errorf("NOTIFY_SOCKET=%q: %s Notifier sent with error %v, want a silent no-op", socket, name, err)
				}
			}
			if d := n.WatchdogInterval(); d != 0 {
				t.Errorf("NOTIFY_SOCKET=%q: %s Notifier WatchdogInterval() = %v, want 0", socket, name, d)
			}
		}
	}
}

func TestSendToMissingSocketFails(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
	if err := FromEnv().Ready(""); err == nil {
		t.Error("Ready() to a socket nobody listens on = nil, want an error")
	}
}
