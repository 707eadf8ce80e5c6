package daemon

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/pipelined/pipelined/internal/testlog"
)

// TestShortAdminTokenWarns: a daemon whose admin token is shorter than
// admin.StrongToken says at its start that wrong guesses can lock operators
// out, and what token to use instead; one with a long token says nothing.
func TestShortAdminTokenWarns(t *testing.T) {
	for _, c := range []struct {
		token string
		warn  bool
	}{
		{"admin-token", true},
		{strings.Repeat("a", 31), true},
		{strings.Repeat("a", 32), false},
	} {
		t.Run(fmt.Sprint(len(c.token)), func(t *testing.T) {
			t.Setenv(pluginVar, "deliver")
			t.Setenv("T_ADMIN", c.token)
			var logs testlog.Buffer
			startDaemonWith(t, daemonTOML("", `token_env = "T_ADMIN"`, t.TempDir(), deliverSinkTOML()), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, nil)
			out := logs.String()
			warned := strings.Contains(out, "level=WARN") && strings.Contains(out, "admin token is shorter than 32 characters") &&
				strings.Contains(out, "openssl rand -hex 32") && strings.Contains(out, fmt.Sprintf("bytes=%d", len(c.token)))
			if warned != c.warn {
				t.Errorf("a token of %d bytes: warned = %v, want %v; log:\n%s", len(c.token), warned, c.warn, out)
			}
			if strings.Contains(out, c.token) {
				t.Errorf("the log holds the token:\n%s", out)
			}
		})
	}
}
