package e2e

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestSocketActivationRestartRefusesNothing plays systemd's part in socket
// activation: the test holds the ingest and admin sockets, as a socket
// unit does, and passes them to `pipelined serve` (LISTEN_FDS,
// LISTEN_FDNAMES=ingest:admin, LISTEN_PID). A webhook goes through the
// inherited socket; the daemon is stopped; a webhook sent while no
// pipelined runs is not refused but waits in the socket's backlog, and the
// next daemon answers it 200 and delivers it.
func TestSocketActivationRestartRefusesNothing(t *testing.T) {
	dir := t.TempDir()
	listen := func() *net.TCPListener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln.(*net.TCPListener)
	}
	ingest, adm := listen(), listen()
	sockets := []harness.Socket{{Name: "ingest", Listener: ingest}, {Name: "admin", Listener: adm}}
	archive := filepath.Join(dir, "archive")
	// The file names the sockets' own addresses, as an operator's would:
	// a daemon that bound them itself would find them taken.
	file := harness.WriteConfig(t, dir, fmt.Sprintf(`
[server]
listen = %q
shutdown_timeout = "5s"
[admin]
listen = %q
`, ingest.Addr(), adm.Addr())+harness.BadgerLog(filepath.Join(dir, "log"))+harness.CallKaroSource+fmt.Sprintf(`
[[sink]]
name = "archive"
plugin = "archive"
config = { dir = %q }
delivery = { batch_max = 100, batch_wait = "5ms" }
`, archive)+harness.AllCallsRoute("archive"))

	first, err := harness.StartWith(t, file, harness.Options{Sockets: sockets})
	if err != nil {
		t.Fatal(err)
	}
	hook := "http://" + ingest.Addr().String() + "/hooks/callkaro"
	if first.URL != "http://"+ingest.Addr().String() {
		t.Fatalf("the daemon serves ingest at %s, want the socket passed, %s", first.URL, ingest.Addr())
	}
	if !strings.Contains(first.Log(), `"from_systemd":"ingest,admin"`) {
		t.Errorf("the start does not say that its listeners came from systemd:\n%s", first.Log())
	}
	code, ans, err := harness.Post(hook, harness.CallEvent("sid-sock-1", "interested"))
	if err != nil || code != http.StatusOK {
		t.Fatalf("POST through the inherited socket = %d %v %v, want 200", code, ans, err)
	}
	ids := []string{ans["id"].(string)}

	first.Signal(syscall.SIGTERM)
	select {
	case <-first.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("pipelined did not stop within 30s of SIGTERM")
	}
	if c := first.ExitCode(); c != 0 {
		t.Fatalf("pipelined exited %d after SIGTERM, want 0", c)
	}

	// No pipelined runs now. A sender's request is taken by the kernel
	// into the socket's backlog: not refused, not answered. The premise,
	// directly: a connection made now is accepted, not refused.
	conn, err := net.DialTimeout("tcp", ingest.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("a connection while no pipelined runs: %v; want it taken into the socket's backlog", err)
	}
	conn.Close()
	type answer struct {
		code int
		ans  map[string]any
		err  error
	}
	answered := make(chan answer, 1)
	client := &http.Client{Timeout: 60 * time.Second}
	go func() {
		code, ans, err := harness.PostWith(client, hook, "application/json", nil, harness.CallEvent("sid-sock-2", "interested"))
		answered <- answer{code, ans, err}
	}()
	select {
	case a := <-answered:
		t.Fatalf("a webhook sent while no pipelined runs was answered at once: %d %v %v; want it to wait for the next start", a.code, a.ans, a.err)
	case <-time.After(time.Second):
	}

	second, err := harness.StartWith(t, file, harness.Options{Sockets: sockets})
	if err != nil {
		t.Fatal(err)
	}
	var a answer
	select {
	case a = <-answered:
	case <-time.After(60 * time.Second):
		t.Fatal("the webhook sent between the two daemons was not answered within 60s of the second's start")
	}
	if a.err != nil || a.code != http.StatusOK {
		t.Fatalf("the webhook sent between the two daemons = %d %v %v, want 200 from the next one", a.code, a.ans, a.err)
	}
	ids = append(ids, a.ans["id"].(string))
	harness.WaitArchived(t, archive, ids, 30*time.Second)
	if _, err := second.Admin().Sinks(t.Context()); err != nil {
		t.Errorf("admin API through the inherited admin socket: %v", err)
	}
}

// TestSocketActivationMisnamedSocket passes one socket under the name a
// socket unit gives it without FileDescriptorName=: pipelined refuses to
// start, with exit 78 (systemd does not restart it) and one line that says
// what to set.
func TestSocketActivationMisnamedSocket(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	file := harness.WriteConfig(t, dir, harness.Listeners("")+harness.BadgerLog(filepath.Join(dir, "log"))+harness.CallKaroSource)
	d, err := harness.StartWith(t, file, harness.Options{NoWait: true, Sockets: []harness.Socket{{Name: "pipelined.socket", Listener: ln.(*net.TCPListener)}}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("pipelined still runs 30s after a misnamed socket")
	}
	if c := d.ExitCode(); c != 78 {
		t.Errorf("pipelined exited %d, want 78 (EX_CONFIG)", c)
	}
	if want := `a socket is named \"pipelined.socket\", which is no listener of pipelined: set FileDescriptorName=ingest`; !strings.Contains(d.Log(), want) {
		t.Errorf("the log does not say %s:\n%s", want, d.Log())
	}
}
