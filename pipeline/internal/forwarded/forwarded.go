// Package forwarded finds a request's client behind reverse proxies.
package forwarded

import (
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP returns the address of the client of r: the peer's, or, when
// the peer is one of the trusted proxies, the last address in
// X-Forwarded-For that is not one. It reports false for a peer address
// that does not parse, or a garbled X-Forwarded-For from behind a trusted
// proxy (the address it returns is then the last it could read).
func ClientIP(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	ip := ap.Addr().Unmap()
	if !In(trusted, ip) {
		return ip, true
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return ip, false
		}
		ip = a.Unmap()
		if !In(trusted, ip) {
			return ip, true
		}
	}
	return ip, true
}

// In reports whether ip is in one of list's prefixes.
func In(list []netip.Prefix, ip netip.Addr) bool {
	for _, p := range list {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
