// Package sdlisten takes the listening sockets that systemd passes to a
// socket-activated service, as sd_listen_fds(3) does, with the standard
// library only: LISTEN_PID names the process they are for, LISTEN_FDS
// counts them from file descriptor 3, and LISTEN_FDNAMES names them,
// colon-separated, from each socket unit's FileDescriptorName=.
//
// The kernel keeps a socket that systemd holds open while the service
// restarts: connections made meanwhile wait in its backlog instead of
// being refused.
package sdlisten

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// firstFD is SD_LISTEN_FDS_START: the first socket passed is fd 3.
const firstFD = 3

// FromEnv returns the listeners systemd passed to this process, by name,
// and removes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from the
// environment, so that the processes this one starts never see them. Call
// it once, early, before any child process starts. Without the variables,
// or when LISTEN_PID is another process's, it returns nil and no error.
// Each listener holds a close-on-exec copy of its descriptor; the
// descriptors passed are closed.
func FromEnv() (map[string]net.Listener, error) {
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	got, err := parse(os.Getpid(), pid, fds, names)
	if err != nil || got == nil {
		return nil, err
	}
	for i := range got {
		syscall.CloseOnExec(firstFD + i) // none leaks into a child, whatever happens next
	}
	out := make(map[string]net.Listener, len(got))
	for i, name := range got {
		f := os.NewFile(uintptr(firstFD+i), name)
		ln, err := net.FileListener(f) // a copy of the descriptor
		f.Close()
		if err != nil {
			for _, ln := range out {
				ln.Close()
			}
			return nil, fmt.Errorf("socket %q passed by systemd (fd %d) is not a listening stream socket (ListenStream= in its socket unit): %w", name, firstFD+i, err)
		}
		out[name] = ln
	}
	return out, nil
}

// parse reads the three variables for the process pid: it returns one
// name per descriptor passed, from fd 3 on, or nil when nothing was
// passed to pid.
func parse(pid int, listenPID, listenFDs, listenFDNames string) ([]string, error) {
	if listenPID == "" && listenFDs == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(listenPID); err != nil || p != pid {
		return nil, nil // meant for another process: not ours to take
	}
	n, err := strconv.Atoi(listenFDs)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS=%q is not a count of sockets", listenFDs)
	}
	if n == 0 {
		return nil, nil
	}
	if listenFDNames == "" {
		return nil, errors.New("systemd passed sockets without names (LISTEN_FDNAMES is not set): give each socket unit a FileDescriptorName= (systemd 227 or later)")
	}
	names := strings.Split(listenFDNames, ":")
	if len(names) != n {
		return nil, fmt.Errorf("LISTEN_FDS=%d but LISTEN_FDNAMES=%q names %d sockets", n, listenFDNames, len(names))
	}
	seen := make(map[string]bool, n)
	for _, name := range names {
		if seen[name] {
			return nil, fmt.Errorf("systemd passed two sockets named %q (LISTEN_FDNAMES=%q): a socket unit with two ListenStream= names both with its FileDescriptorName=; put each listener in a socket unit of its own", name, listenFDNames)
		}
		seen[name] = true
	}
	return names, nil
}
