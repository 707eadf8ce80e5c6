package daemon

import (
	"net"
	"net/netip"
	"sync"
)

// perIPListener closes, as soon as it accepts them, the connections of a
// peer that has max open already ([server] max_conns_per_ip), so that one
// address (one IPv6 /64) cannot hold every connection the daemon can serve. Peers in
// exempt (trusted_proxies) are not counted: every sender behind a proxy
// shares its address.
type perIPListener struct {
	net.Listener
	max    int
	exempt []netip.Prefix

	mu    sync.Mutex
	conns map[netip.Addr]int
}

func limitPerIP(ln net.Listener, max int, exempt []netip.Prefix) net.Listener {
	if max <= 0 {
		return ln
	}
	return &perIPListener{Listener: ln, max: max, exempt: exempt, conns: map[netip.Addr]int{}}
}

// Accept returns the next connection of a peer under its bound.
func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil {
			return c, nil
		}
		ip := ap.Addr().Unmap()
		if l.isExempt(ip) {
			return c, nil
		}
		ip = peer(ip)
		l.mu.Lock()
		if l.conns[ip] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.conns[ip]++
		l.mu.Unlock()
		return &countedConn{Conn: c, l: l, ip: ip}, nil
	}
}

// peer returns what one peer is known by: its address, or for IPv6 its
// /64, the block one host or site is given (RFC 6177), whose 2^64
// addresses would each have max connections of their own.
func peer(ip netip.Addr) netip.Addr {
	if ip.Is6() && !ip.IsLoopback() {
		return netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}

func (l *perIPListener) isExempt(ip netip.Addr) bool {
	for _, p := range l.exempt {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (l *perIPListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[ip]--; l.conns[ip] <= 0 {
		delete(l.conns, ip)
	}
}

// countedConn gives its peer's count back once, on the first Close.
type countedConn struct {
	net.Conn
	l    *perIPListener
	ip   netip.Addr
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
