package inspector

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The buttons of the UI answer Post/Redirect/Get: an action that succeeds
// answers 303 See Other to the page the operator came from, and the
// result ("Retried 12 dead letter(s) of crm.") rides along in a flash
// cookie that this page shows once and clears. Reloading that page does
// a GET: nothing is posted again, and the message is gone. A refused or
// failed action still answers its status with a page saying why.
//
// The cookie holds the message, the path of the page it is for and an
// expiry, signed with the sessions' key and bound to the session: only
// the UI writes a message into a page (html/template escapes it as any
// text besides), and another session's or an expired cookie is cleared
// unread.

const flashCookie = "pipelined_flash"

// flashTTL is how long a flash waits for its page: the browser follows a
// 303 at once.
const flashTTL = time.Minute

// maxFlash bounds the message a flash carries (a cookie holds 4 KiB); a
// longer one is cut, saying how long it was.
const maxFlash = 1 << 10

// seeOther ends a successful action: it sets the flash cookie with msg for
// the page at target (a path under /ui/, not escaped) and answers 303 See
// Other to it.
func (u *UI) seeOther(w http.ResponseWriter, r *http.Request, s session, target, msg string) {
	exp := time.Now().Add(flashTTL)
	b := binary.BigEndian.AppendUint64(nil, uint64(exp.Unix()))
	b = append(b, target...)
	b = append(b, 0)
	b = append(b, clip(maxFlash, msg)...)
	v := base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(u.flashMAC(s.value, b))
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: v, Path: "/ui/", MaxAge: int(flashTTL.Seconds()),
		HttpOnly: true, Secure: overHTTPS(r), SameSite: http.SameSiteStrictMode})
	w.Header().Set("Location", (&url.URL{Path: target}).EscapedPath())
	w.WriteHeader(http.StatusSeeOther)
}

// takeFlash returns the message of the flash cookie when it is for this
// page of this session, and clears the cookie; a cookie that is not valid
// (forged, another session's, signed with a key since replaced, expired)
// is cleared too. A valid one for another page is left for that page.
func (u *UI) takeFlash(w http.ResponseWriter, r *http.Request, sessionValue string) string {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return ""
	}
	target, msg, ok := u.openFlash(c.Value, sessionValue, time.Now())
	if ok && target != r.URL.Path {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true, Secure: overHTTPS(r), SameSite: http.SameSiteStrictMode})
	return msg
}

// openFlash checks the flash cookie's value v and returns its page and
// message.
func (u *UI) openFlash(v, sessionValue string, now time.Time) (target, msg string, ok bool) {
	p, m, found := strings.Cut(v, ".")
	if !found {
		return "", "", false
	}
	b, err1 := base64.RawURLEncoding.DecodeString(p)
	mac, err2 := base64.RawURLEncoding.DecodeString(m)
	if err1 != nil || err2 != nil || len(b) < 9 || !hmac.Equal(mac, u.flashMAC(sessionValue, b)) {
		return "", "", false
	}
	if now.Unix() >= int64(binary.BigEndian.Uint64(b[:8])) {
		return "", "", false
	}
	target, msg, found = strings.Cut(string(b[8:]), "\x00")
	return target, msg, found
}

// flashMAC signs a flash's bytes b for the session whose cookie value is
// sessionValue (which holds no NUL byte).
func (u *UI) flashMAC(sessionValue string, b []byte) []byte {
	return u.mac("flash", append(append([]byte(sessionValue), 0), b...))
}
