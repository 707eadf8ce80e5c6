package daemon

import (
	"slices"
	"testing"
)

// TestAdminHosts: the Host names the admin API accepts besides loopback
// and the connection's own address: the listener's host, and admin.listen's
// name when systemd passed the socket (its address is an IP); a wildcard
// adds none.
func TestAdminHosts(t *testing.T) {
	tests := []struct {
		addrs []string
		want  []string
	}{
		{[]string{"10.0.0.5:8081"}, []string{"10.0.0.5"}},
		{[]string{"0.0.0.0:8081"}, nil},
		{[]string{"10.0.0.5:8081", "admin.internal:8081"}, []string{"10.0.0.5", "admin.internal"}},
		{[]string{"10.0.0.5:8081", "10.0.0.5:8081"}, []string{"10.0.0.5"}},
		{[]string{"[::]:8081", "admin.internal:8081"}, []string{"admin.internal"}},
	}
	for _, tt := range tests {
		if got := adminHosts(tt.addrs...); !slices.Equal(got, tt.want) {
			t.Errorf("adminHosts(%q) = %q, want %q", tt.addrs, got, tt.want)
		}
	}
}
