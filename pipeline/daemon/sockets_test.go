package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/internal/testlog"
	"github.com/pipelined/pipelined/pipeline/config"
)

// listenTB listens on network/address for the test's length.
func listenTB(t *testing.T, network, address string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestCheckSockets(t *testing.T) {
	loop := func() net.Listener { return listenTB(t, "tcp", "127.0.0.1:0") }
	for _, tc := range []struct {
		name    string
		sockets map[string]net.Listener
		envErr  error
		token   string
		err     string // part of the error; empty: none
	}{
		{name: "none", sockets: map[string]net.Listener{}},
		{name: "both", sockets: map[string]net.Listener{"ingest": loop(), "admin": loop()}},
		{name: "unknown name", sockets: map[string]net.Listener{"ingest": loop(), "admin": loop(), "metrics": loop()},
			err: `a socket is named "metrics", which is no listener of pipelined: set FileDescriptorName=ingest`},
		{name: "default name of a socket unit", sockets: map[string]net.Listener{"pipelined.socket": loop()},
			err: `a socket is named "pipelined.socket"`},
		{name: "ingest without admin", sockets: map[string]net.Listener{"ingest": loop()},
			err: "systemd passed the ingest socket but not the admin one: add a socket unit with FileDescriptorName=admin"},
		{name: "admin without ingest", sockets: map[string]net.Listener{"admin": loop()},
			err: "systemd passed the admin socket but not the ingest one: add a socket unit with FileDescriptorName=ingest and ListenStream= the [server] listen address"},
		{name: "not TCP", sockets: map[string]net.Listener{"ingest": listenTB(t, "unix", filepath.Join(t.TempDir(), "s")), "admin": loop()},
			err: "the ingest socket systemd passed is not a TCP socket"},
		{name: "admin off loopback without token", sockets: map[string]net.Listener{"ingest": loop(), "admin": listenTB(t, "tcp", "0.0.0.0:0")},
			err: "is not on loopback and no admin token is set"},
		{name: "admin off loopback with token", sockets: map[string]net.Listener{"ingest": loop(), "admin": listenTB(t, "tcp", "0.0.0.0:0")}, token: "t"},
		{name: "not taken", envErr: errors.New("LISTEN_FDS=1 but LISTEN_FDNAMES names 2 sockets"), sockets: map[string]net.Listener{},
			err: "LISTEN_FDS=1 but"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse("test.toml", []byte(sinksTOML("", t.TempDir(), "")))
			if err != nil {
				t.Fatal(err)
			}
			d := New(cfg, &Options{Listeners: tc.sockets})
			d.socketsErr = tc.envErr
			err = d.checkSockets([]byte(tc.token))
			if tc.err == "" {
				if err != nil {
					t.Fatalf("checkSockets() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrSocketActivation) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("checkSockets() = %v, want ErrSocketActivation with %q", err, tc.err)
			}
		})
	}
}

func TestSameAddr(t *testing.T) {
	a := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8081}
	any4 := &net.TCPAddr{IP: net.IPv4zero, Port: 8081}
	for _, tc := range []struct {
		listen string
		addr   net.Addr
		want   bool
	}{
		{"127.0.0.1:8081", a, true},
		{"localhost:8081", a, true},
		{"admin.internal:8081", a, true}, // a host name is not resolved
		{"127.0.0.1:8082", a, false},
		{"127.0.0.2:8081", a, false},
		{":8081", any4, true},
		{"0.0.0.0:8081", any4, true},
		{":8081", a, false},
		{"not an address", a, false},
	} {
		if got := sameAddr(tc.listen, tc.addr); got != tc.want {
			t.Errorf("sameAddr(%q, %v) = %v, want %v", tc.listen, tc.addr, got, tc.want)
		}
	}
}

// TestSocketActivatedReload serves on listeners passed as systemd would
// pass them, and reloads a file that moves both listen addresses: the
// daemon keeps serving where the sockets are, warns that the addresses
// cannot change, and does not count them among the keys a restart applies.
func TestSocketActivatedReload(t *testing.T) {
	const base = `
[server]
listen = %q
[admin]
listen = %q
[log]
dir = %q
[[source]]
name = "src"
path = "/hooks/src"
auth = { type = "none" }
`
	ingest, adm := listenTB(t, "tcp", "127.0.0.1:0"), listenTB(t, "tcp", "127.0.0.1:0")
	dir := t.TempDir()
	moved := fmt.Sprintf(base, "127.0.0.1:1", "127.0.0.1:2", dir)
	var logs testlog.Buffer
	d, addrs := startDaemonWith(t, fmt.Sprintf(base, ingest.Addr(), adm.Addr(), dir), Options{
		Logger:    slog.New(slog.NewJSONHandler(&logs, nil)),
		Listeners: map[string]net.Listener{"ingest": ingest, "admin": adm},
		Load:      func() (*config.Config, error) { return config.Parse("test.toml", []byte(moved)) },
	}, nil)
	if addrs.ingest != ingest.Addr().String() || addrs.admin != adm.Addr().String() {
		t.Fatalf("the daemon serves on %s and %s, want the sockets passed, %s and %s", addrs.ingest, addrs.admin, ingest.Addr(), adm.Addr())
	}
	said := 0
	for _, l := range logs.Lines(t, "") {
		if strings.HasPrefix(l["msg"].(string), "listening on the sockets systemd passed") && l["from_systemd"] == "ingest,admin" {
			said++
		}
	}
	if said != 1 {
		t.Errorf("the start said %d times that its listeners came from systemd, want once:\n%s", said, logs.String())
	}
	logs.Reset()
	res, err := d.reloadAndWait(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.RestartNeeded) != 0 {
		t.Errorf("reload: restart needed for %v, want none (a restart of pipelined does not move a socket systemd holds)", res.RestartNeeded)
	}
	slices.Sort(res.SocketOwned)
	if want := []string{"admin.listen", "server.listen"}; !slices.Equal(res.SocketOwned, want) {
		t.Errorf("reload: socket_owned %v, want %v", res.SocketOwned, want)
	}
	got := map[string]string{}
	for _, l := range logs.Lines(t, "") {
		if l["msg"] == socketOwnedWarning {
			got[l["key"].(string)] = l["running"].(string) + " " + l["new"].(string)
		}
	}
	want := map[string]string{"server.listen": ingest.Addr().String() + " 127.0.0.1:1", "admin.listen": adm.Addr().String() + " 127.0.0.1:2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("reload warned %v, want %v (running, new):\n%s", got, want, logs.String())
	}
	resp, err := http.Post("http://"+addrs.ingest+"/hooks/src", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatalf("post to the socket after the reload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("post after the reload: %d, want 200", resp.StatusCode)
	}
}
