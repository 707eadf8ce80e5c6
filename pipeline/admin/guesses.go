package admin

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/pipelined/pipelined/pipeline/internal/forwarded"
)

// Guesses limits wrong admin tokens per client address, for the API's
// bearer token and the UI's login alike: after [GuessBurst] wrong tokens
// an address may try again once every [GuessEvery], and until then its
// calls are answered 429 without the token being compared. A right token
// costs nothing. It is safe for concurrent use; the zero value is not
// usable, call [NewGuesses].
type Guesses struct {
	mu    sync.Mutex
	addrs map[string]*rate.Limiter
}

// The limits of [Guesses].
const (
	GuessBurst = 10
	GuessEvery = 6 * time.Second
	// guessAddrs bounds the addresses remembered; when it is reached,
	// those that have their whole burst again are forgotten, and if none
	// has, all are (an attacker with that many addresses gets one more
	// burst each, not unlimited tries).
	guessAddrs = 4096
)

// StrongToken is the length, in bytes, from which an admin token is
// compared even while its client's address must wait ([Options.GuessWait]):
// 32 random characters are 128 bits or more (openssl rand -hex 32 gives
// 64), which no rate of guesses finds. For such a token the wait would
// protect nothing and only let any local user lock the operator out, since
// every client on loopback shares one address.
const StrongToken = 32

// GuessWait is how long client must wait before its token is compared:
// [Guesses.Wait], or 0 when the token is a [StrongToken]. The API's guard
// and the UI's login ask it.
func (o *Options) GuessWait(client string) time.Duration {
	if len(o.Token) >= StrongToken {
		return 0
	}
	return o.Guesses.Wait(client)
}

// TooManyGuesses sets the Retry-After header of a 429 answered to a client
// that must wait before its next token is compared.
func TooManyGuesses(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
}

// Client is the address that wrong tokens of r are counted against: the
// client's, behind the TrustedProxies (X-Forwarded-For), else the peer's.
func (o *Options) Client(r *http.Request) string {
	if len(o.TrustedProxies) > 0 {
		if ip, ok := forwarded.ClientIP(r, o.TrustedProxies); ok {
			return ip.String()
		}
	}
	return r.RemoteAddr
}

// NewGuesses returns an empty Guesses.
func NewGuesses() *Guesses { return &Guesses{addrs: map[string]*rate.Limiter{}} }

// host is the address of remoteAddr without its port, as wrong tokens
// are counted against it: an IPv6 address (not loopback) by its /64, the
// network one host is given; counted one by one, a client with a /64
// would have 2^64 addresses of GuessBurst guesses each, and every 4,096 of
// them would make Guesses forget all.
func host(remoteAddr string) string {
	h := remoteAddr
	if hh, _, err := net.SplitHostPort(remoteAddr); err == nil {
		h = hh
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a = a.Unmap(); a.Is6() && !a.IsLoopback() {
			if p, err := a.WithZone("").Prefix(64); err == nil {
				return p.String()
			}
		}
	}
	return h
}

// Wait reports how long the client at remoteAddr must wait before its
// next token is compared: 0 when it may try now.
func (g *Guesses) Wait(remoteAddr string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	l, ok := g.addrs[host(remoteAddr)]
	if !ok {
		return 0
	}
	if t := l.TokensAt(time.Now()); t < 1 {
		return time.Duration((1 - t) * float64(GuessEvery))
	}
	return 0
}

// Wrong records a wrong token from remoteAddr.
func (g *Guesses) Wrong(remoteAddr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := host(remoteAddr)
	l, ok := g.addrs[h]
	if !ok {
		if len(g.addrs) >= guessAddrs {
			g.forget()
		}
		l = rate.NewLimiter(rate.Every(GuessEvery), GuessBurst)
		g.addrs[h] = l
	}
	l.Allow()
}

// forget drops the addresses that have their whole burst again, or all
// of them when none has. g.mu is held.
func (g *Guesses) forget() {
	now := time.Now()
	for h, l := range g.addrs {
		if l.TokensAt(now) >= GuessBurst {
			delete(g.addrs, h)
		}
	}
	if len(g.addrs) >= guessAddrs {
		clear(g.addrs)
	}
}
