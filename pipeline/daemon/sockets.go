package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/pipelined/pipelined/pipeline/config"
)

// The names of the daemon's listeners, as a socket unit's
// FileDescriptorName= gives them under systemd socket activation.
const (
	ingestSocket = "ingest" // [server] listen
	adminSocket  = "admin"  // [admin] listen
)

// socketSection is the config table whose listen a socket replaces.
var socketSection = map[string]string{ingestSocket: "server", adminSocket: "admin"}

// ErrSocketActivation is returned by [Daemon.Run], before anything
// starts, when the sockets systemd passed (socket activation, see
// [Options.Listeners]) do not fit: a socket whose name is no listener's,
// one listener passed without the other, a socket that is not TCP, or an
// admin socket off loopback without an admin token. The error says what to
// change in the socket units; restarting will not help.
var ErrSocketActivation = errors.New("the sockets systemd passed do not fit pipelined")

// checkSockets returns why the inherited sockets cannot serve, or nil.
// Both listeners come from systemd or neither does: a socket unit that is
// missing (not enabled, or without FileDescriptorName=) is caught at start
// rather than served around by binding the address it would hold.
func (d *Daemon) checkSockets(token []byte) error {
	if d.socketsErr != nil {
		return fmt.Errorf("%w: %v", ErrSocketActivation, d.socketsErr)
	}
	if len(d.sockets) == 0 {
		return nil
	}
	names := make([]string, 0, len(d.sockets))
	for name := range d.sockets {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if _, ok := socketSection[name]; !ok {
			return fmt.Errorf("%w: a socket is named %q, which is no listener of pipelined: set FileDescriptorName=ingest (for [server] listen) or FileDescriptorName=admin (for [admin] listen) in its socket unit",
				ErrSocketActivation, name)
		}
	}
	for _, name := range []string{ingestSocket, adminSocket} {
		ln := d.sockets[name]
		if ln == nil {
			other := ingestSocket
			if name == ingestSocket {
				other = adminSocket
			}
			return fmt.Errorf("%w: systemd passed the %s socket but not the %s one: add a socket unit with FileDescriptorName=%s and ListenStream= the [%s] listen address (examples/systemd/pipelined-%[4]s.socket), or pass no socket at all",
				ErrSocketActivation, other, name, name, socketSection[name])
		}
		if _, ok := ln.(*net.TCPListener); !ok {
			return fmt.Errorf("%w: the %s socket systemd passed is not a TCP socket (%s %s): give ListenStream= an address and port",
				ErrSocketActivation, name, ln.Addr().Network(), ln.Addr())
		}
	}
	if a := d.sockets[adminSocket].Addr().String(); len(token) == 0 && !config.OnLoopback(a) {
		return fmt.Errorf("%w: the admin socket systemd passed, %s, is not on loopback and no admin token is set: set [admin] token_file or token_env, or ListenStream=127.0.0.1:PORT in the admin socket unit",
			ErrSocketActivation, a)
	}
	return nil
}

// sayInherited logs which listeners came from systemd, once at start,
// and warns when the admin socket is not at [admin] listen: the commands
// that talk to the daemon (pipelined reload, which systemctl reload runs;
// sinks, dlq, ...) find it there.
func (d *Daemon) sayInherited(cfg *config.Config, ls *listeners) {
	if len(d.sockets) == 0 {
		return
	}
	d.log.Info("listening on the sockets systemd passed (socket activation): their socket units own the addresses, and [server] listen and [admin] listen are not used to bind",
		"from_systemd", ingestSocket+","+adminSocket, "ingest", ls.ingest.Addr().String(), "admin", ls.admin.Addr().String())
	if !sameAddr(cfg.Admin.Listen, d.sockets[adminSocket].Addr()) {
		d.log.Warn("the admin socket systemd passed is not at [admin] listen, where pipelined reload (which systemctl reload runs), sinks, dlq and replay look for the daemon: make [admin] listen the admin socket unit's ListenStream=",
			"socket", d.sockets[adminSocket].Addr().String(), "admin_listen", cfg.Admin.Listen)
	}
}

// sameAddr reports whether a listener at a could be the listen address
// hostport: the same port, and the same address unless hostport names a
// host that is not an IP address (localhost: any loopback address).
func sameAddr(hostport string, a net.Addr) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil || port != fmt.Sprint(ap.Port()) {
		return false
	}
	ip := ap.Addr().Unmap()
	switch want, err := netip.ParseAddr(host); {
	case host == "":
		return ip.IsUnspecified()
	case strings.EqualFold(host, "localhost"):
		return ip.IsLoopback()
	case err != nil:
		return true // a host name: not resolved here
	default:
		return want.Unmap() == ip
	}
}

// socketOf is the name of the listener whose listen address key is.
func socketOf(key string) string {
	for name, section := range socketSection {
		if key == section+".listen" {
			return name
		}
	}
	return ""
}

// socketOwned reports whether key is the listen address of a listener
// systemd passed: a reload cannot change it, and neither can a restart of
// the service alone.
func (d *Daemon) socketOwned(key string) bool {
	name := socketOf(key)
	return name != "" && d.sockets[name] != nil
}
