package daemon

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// TestAdminTimeouts: a POST that announces a body and sends none, and an
// idle keep-alive connection, are closed by the admin server after its
// read and idle timeouts, not held (issue 15, item 8).
func TestAdminTimeouts(t *testing.T) {
	t.Setenv(pluginVar, "deliver")
	t.Setenv("T_ADMIN", "admin-token")
	a := startDaemon(t, daemonTOML("", `token_env = "T_ADMIN"
read_timeout = "300ms"
write_timeout = "1s"
idle_timeout = "300ms"`, t.TempDir(), deliverSinkTOML()))

	tests := []struct {
		name    string
		request string
	}{
		{"body announced, never sent", "POST /v1/reload HTTP/1.1\r\nHost: " + a.admin + "\r\nAuthorization: Bearer admin-token\r\n" +
			"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"},
		{"idle keep-alive", "GET /healthz HTTP/1.1\r\nHost: " + a.admin + "\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", a.admin)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if _, err := io.WriteString(c, tt.request); err != nil {
				t.Fatal(err)
			}
			// Read until the server closes; a deadline far above the
			// timeouts tells a held connection from a closed one.
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, bufio.NewReader(c))
			held := time.Since(start)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection still open after %v (read %d bytes), want it closed after about 300ms", held, n)
			}
			if tt.name == "idle keep-alive" && n == 0 {
				t.Errorf("GET /healthz got no answer before the close, want one (the premise: the connection was served, then idle)")
			}
			if held > 3*time.Second {
				t.Errorf("connection held %v, want it closed after about 300ms", held)
			}
		})
	}
}
