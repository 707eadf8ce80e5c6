// Package sdnotify speaks systemd's notify protocol (sd_notify(3)): it
// tells the service manager that the daemon is ready, reloading or
// stopping, keeps the watchdog fed, and publishes a one-line status.
//
// [FromEnv] reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID once and
// removes them from the environment, so the plugin processes the daemon
// starts never see them and cannot speak for it. Every method of a nil
// [Notifier], or of one without a socket (not run by systemd), does nothing
// and returns nil: callers never check whether systemd is there.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notifier sends state changes to systemd. The zero value and nil do
// nothing. Its methods may be called from several goroutines at once.
type Notifier struct {
	addr     *net.UnixAddr // nil: no socket, every method is a no-op
	watchdog time.Duration // WATCHDOG_USEC; 0 when disabled or meant for another process
}

// FromEnv returns the Notifier that systemd set up for this process, and
// removes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the
// environment. Call it once, early, before any child process starts. The
// socket is a path or, with a leading '@', an abstract socket; any other
// form (vsock) is ignored. The watchdog counts only when WATCHDOG_PID is
// this process or absent (systemd sets it, but a supervisor that cannot know
// the pid before exec may leave it out).
func FromEnv() *Notifier {
	socket := os.Getenv("NOTIFY_SOCKET")
	usec := os.Getenv("WATCHDOG_USEC")
	pid := os.Getenv("WATCHDOG_PID")
	os.Unsetenv("NOTIFY_SOCKET")
	os.Unsetenv("WATCHDOG_USEC")
	os.Unsetenv("WATCHDOG_PID")

	n := &Notifier{}
	if strings.HasPrefix(socket, "/") || (strings.HasPrefix(socket, "@") && len(socket) > 1) {
		n.addr = &net.UnixAddr{Name: socket, Net: "unixgram"}
	}
	if us, err := strconv.ParseUint(usec, 10, 63); err == nil && us > 0 && n.addr != nil {
		if p, err := strconv.Atoi(pid); pid == "" || (err == nil && p == os.Getpid()) {
			n.watchdog = time.Duration(us) * time.Microsecond
		}
	}
	return n
}

// Enabled reports whether n sends anything: the process runs under systemd
// with a notify socket.
func (n *Notifier) Enabled() bool {
	return n != nil && n.addr != nil
}

// Ready tells systemd that start-up (or a reload) finished: READY=1, with
// status as STATUS= when it is not empty.
func (n *Notifier) Ready(status string) error {
	if status == "" {
		return n.send("READY=1")
	}
	return n.send("READY=1\nSTATUS=" + oneLine(status))
}

// Reloading tells systemd that a reload began: RELOADING=1 with
// MONOTONIC_USEC, the CLOCK_MONOTONIC time that systemd 253 and later want
// for Type=notify-reload (older versions ignore it). Send [Notifier.Ready]
// when the reload is over, whether it succeeded or not.
func (n *Notifier) Reloading() error {
	msg := "RELOADING=1"
	if us, ok := monotonicUsec(); ok {
		msg += "\nMONOTONIC_USEC=" + strconv.FormatUint(us, 10)
	}
	return n.send(msg)
}

// Stopping tells systemd that shutdown began: STOPPING=1.
func (n *Notifier) Stopping() error {
	return n.send("STOPPING=1")
}

// Status publishes s as the status line that `systemctl status` shows.
// Newlines in s become spaces.
func (n *Notifier) Status(s string) error {
	return n.send("STATUS=" + oneLine(s))
}

// ExtendTimeout asks systemd for d more time, counted from now, to finish
// what it is waiting for (start-up, a reload, shutdown):
// EXTEND_TIMEOUT_USEC (systemd 236 and later; older versions ignore it).
// Send it again before d runs out, and only while the work progresses, or
// a stuck start would never time out.
func (n *Notifier) ExtendTimeout(d time.Duration) error {
	return n.send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// Watchdog feeds the watchdog: WATCHDOG=1. Call it every
// [Notifier.WatchdogInterval] from the loop whose progress it vouches for,
// never from a timer of its own, or a stuck daemon would still look alive.
func (n *Notifier) Watchdog() error {
	return n.send("WATCHDOG=1")
}

// WatchdogInterval returns how often to call [Notifier.Watchdog]: half of
// WatchdogSec=, as sd_watchdog_enabled(3) advises. It is 0 when there is no
// watchdog, or it is meant for another process (WATCHDOG_PID).
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog / 2
}

// send writes msg as one datagram. It dials for each message, as
// sd_notify(3) does: a message is rare, and a socket systemd re-created
// (daemon-reexec) is found again.
func (n *Notifier) send(msg string) error {
	if !n.Enabled() {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// oneLine makes s fit on one status line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
