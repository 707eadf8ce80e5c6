package daemon

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestMaxConnsPerIP: a peer past max_conns_per_ip open connections has the
// next closed at once; one of them closing makes room; a trusted proxy is
// not bounded.
func TestMaxConnsPerIP(t *testing.T) {
	for _, c := range []struct {
		name     string
		exempt   []netip.Prefix
		wantOpen bool
	}{
		{"bounded", nil, false},
		{"trusted proxy", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := limitPerIP(raw, 2, c.exempt)
			defer ln.Close()
			accepted := make(chan net.Conn, 10)
			go func() {
				for {
					conn, err := ln.Accept()
					if err != nil {
						close(accepted)
						return
					}
					accepted <- conn
				}
			}()
			dial := func() net.Conn {
				t.Helper()
				conn, err := net.Dial("tcp", raw.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				return conn
			}
			// isOpen reports whether the server side left conn open: a
			// read times out instead of ending. A close is waited for
			// long (the accepting goroutine may run late on a loaded
			// machine); staying open can only be seen for a while.
			isOpen := func(conn net.Conn) bool {
				wait := 200 * time.Millisecond
				if !c.wantOpen {
					wait = 10 * time.Second
				}
				conn.SetReadDeadline(time.Now().Add(wait))
				_, err := conn.Read(make([]byte, 1))
				var ne net.Error
				return errors.As(err, &ne) && ne.Timeout()
			}
			dial()
			dial()
			held := <-accepted
			<-accepted // premise: two connections held
			third := dial()
			if got := isOpen(third); got != c.wantOpen {
				t.Fatalf("third connection from one address with max_conns_per_ip 2: open = %v, want %v", got, c.wantOpen)
			}
			if c.wantOpen {
				return
			}
			held.Close()
			dial()
			select {
			case <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("a connection after one of two closed was not accepted")
			}
		})
	}
}

// TestPeer: the addresses of one IPv6 /64 count as one peer; IPv4
// addresses and the IPv6 loopback each as themselves.
func TestPeer(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"2001:db8:1:2:abcd::9", "2001:db8:1:2::"},
	} {
		if pa, pb := peer(netip.MustParseAddr(c.a)), peer(netip.MustParseAddr(c.b)); pa != pb {
			t.Errorf("peer(%s) = %s, peer(%s) = %s; want one peer", c.a, pa, c.b, pb)
		}
	}
	for _, c := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"192.0.2.1", "192.0.2.2"},
	} {
		if pa, pb := peer(netip.MustParseAddr(c.a)), peer(netip.MustParseAddr(c.b)); pa == pb {
			t.Errorf("peer(%s) = peer(%s) = %s; want two peers", c.a, c.b, pa)
		}
	}
	if got := peer(netip.MustParseAddr("::1")); got != netip.MustParseAddr("::1") {
		t.Errorf("peer(::1) = %s, want ::1", got)
	}
}

// TestAdminMaxConnsPerIP: the admin listener bounds a peer's connections
// as ingest's does ([server] max_conns_per_ip). It did not: one client
// that reached it, without a token (a 401 is kept alive for idle_timeout),
// could hold every file descriptor of the daemon, and the write-ahead
// log's files then failed to open ("too many open files").
func TestAdminMaxConnsPerIP(t *testing.T) {
	t.Setenv(pluginVar, "deliver")
	t.Setenv("T_ADMIN", "admin-token")
	a := startDaemon(t, daemonTOML(`max_conns_per_ip = 3`, `token_env = "T_ADMIN"`, t.TempDir(), deliverSinkTOML()))
	held := func() (net.Conn, bool) {
		c, err := net.Dial("tcp", a.admin)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "GET /v1/sinks HTTP/1.1\r\nHost: "+a.admin+"\r\n\r\n"); err != nil {
			return c, false
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		return c, err == nil && strings.HasPrefix(line, "HTTP/1.1 401")
	}
	for i := range 3 {
		if _, ok := held(); !ok {
			t.Fatalf("admin connection %d of 3 was not answered 401 and kept", i+1)
		}
	}
	if _, ok := held(); ok {
		t.Errorf("a 4th admin connection from one address with max_conns_per_ip 3 was served, want it closed at once")
	}
}
