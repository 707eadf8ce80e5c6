package admin_test

import (
	"fmt"
	"testing"

	"github.com/pipelined/pipelined/pipeline/admin"
)

// TestGuessesCountAnIPv6NetworkAsOne: wrong tokens from the addresses of
// one IPv6 /64 (what one host is given, and can use all of) are counted
// together; counted by address, each could guess GuessBurst times, and
// 2^64 of them without end. Another /64, an IPv4 address and loopback
// are counted apart.
func TestGuessesCountAnIPv6NetworkAsOne(t *testing.T) {
	g := admin.NewGuesses()
	for i := range admin.GuessBurst {
		g.Wrong(fmt.Sprintf("[2001:db8:1:2::%x]:4000", i+1))
	}
	for _, addr := range []string{"[2001:db8:1:2::ffff]:5000", "[2001:db8:1:2:abcd::1]:1", "2001:db8:1:2::77"} {
		if g.Wait(addr) == 0 {
			t.Errorf("%s may guess after %d wrong tokens from its /64, want it to wait", addr, admin.GuessBurst)
		}
	}
	for _, addr := range []string{"[2001:db8:1:3::1]:4000", "192.0.2.1:4000", "[::1]:4000", "127.0.0.1:4000"} {
		if g.Wait(addr) != 0 {
			t.Errorf("%s must wait for another network's wrong tokens", addr)
		}
	}
	for i := range admin.GuessBurst {
		g.Wrong(fmt.Sprintf("[::ffff:192.0.2.%d]:4000", i+1))
	}
	if g.Wait("192.0.2.200:1") != 0 {
		t.Error("IPv4 addresses (mapped into IPv6 or not) are counted one by one")
	}
}
