package torture

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipelined/pipelined/tests/harness"
)

// TestHostileClients: slow headers, slow bodies, bodies that never end,
// many idle connections, odd JSON and a gzip bomb. Each gets its answer (or
// is cut off), memory stays bounded, and ordinary clients keep being served.
func TestHostileClients(t *testing.T) {
	idle := scale(1000, 10000)
	w := newWorld(t)
	cfg := harness.WriteConfig(t, w.dir, w.config(configOpts{server: `read_header_timeout = "1s"
read_timeout = "3s"
idle_timeout = "5s"
max_concurrent = 20000
max_conns_per_ip = 0`})) // every client here is 127.0.0.1: no per-address bound
	mem := newMemWatch(t)
	d := harness.Start(t, cfg)
	mem.watch(d.PID())
	addr := strings.TrimPrefix(d.URL, "http://")
	hook := d.URL + "/hooks/callkaro"

	var mu sync.Mutex
	var events []harness.Acked
	seq := 0
	// normal posts an ordinary event and wants it answered 200 within 1s.
	normal := func(when string) {
		mu.Lock()
		seq++
		sid := fmt.Sprintf("hostile-normal-%d", seq)
		mu.Unlock()
		start := time.Now()
		code, ans, err := harness.Post(hook, harness.CallEvent(sid, "interested"))
		took := time.Since(start)
		if err != nil || code != 200 || took > time.Second {
			t.Errorf("%s: an ordinary POST = %d %v %v in %v, want 200 within 1s", when, code, ans, err, took)
			return
		}
		mu.Lock()
		events = append(events, harness.Acked{ID: ans["id"].(string), Sid: sid, Sinks: standardSinks("interested")})
		mu.Unlock()
	}
	raw := func(method, ctype string, hdr map[string]string, body []byte) (int, string) {
		req, _ := http.NewRequest(method, hook, bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := harness.Client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	var report []string
	note := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		t.Log(s)
		report = append(report, s)
	}

	// cutOff sends what write sends on a raw connection and returns how
	// long the daemon took to answer or close it.
	cutOff := func(name string, write func(c net.Conn) error, limit time.Duration) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		done := make(chan string, 1)
		go func() {
			c.SetReadDeadline(time.Now().Add(limit + 5*time.Second))
			b, _ := io.ReadAll(c)
			line, _, _ := strings.Cut(string(b), "\r\n")
			done <- line
		}()
		stop := make(chan struct{})
		go func() {
			defer close(stop)
			write(c)
		}()
		var first string
		select {
		case first = <-done:
		case <-time.After(limit + 6*time.Second):
		}
		took := time.Since(start)
		if took > limit+time.Second {
			t.Errorf("%s: held its connection for %v, want cut off within %v", name, took, limit)
		}
		if first == "" {
			first = "connection closed without an answer"
		}
		note("%s: %q after %v", name, first, took.Round(10*time.Millisecond))
		normal("after " + name)
	}
	trickle := func(s string, every time.Duration) func(c net.Conn) error {
		return func(c net.Conn) error {
			for i := 0; i < len(s); i++ {
				if _, err := c.Write([]byte{s[i]}); err != nil {
					return err
				}
				time.Sleep(every)
			}
			return nil
		}
	}
	body := harness.CallEvent("hostile-slow", "interested")
	head := fmt.Sprintf("POST /hooks/callkaro HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))

	t.Run("slow headers", func(t *testing.T) {
		cutOff("slow headers (4 B/s)", trickle(head, 250*time.Millisecond), 1*time.Second)
	})
	t.Run("slow body", func(t *testing.T) {
		cutOff("slow body (20 B/s)", func(c net.Conn) error {
			c.Write([]byte(head))
			return trickle(string(body), 50*time.Millisecond)(c)
		}, 3*time.Second)
	})
	t.Run("body that never ends", func(t *testing.T) {
		cutOff("chunked body that never ends", func(c net.Conn) error {
			c.Write([]byte("POST /hooks/callkaro HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"))
			for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
				if _, err := c.Write([]byte("400\r\n" + strings.Repeat(" ", 0x400) + "\r\n")); err != nil {
					return err
				}
			}
			return nil
		}, 3*time.Second)
	})
	t.Run("idle connections", func(t *testing.T) {
		var lim syscall.Rlimit
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		want := uint64(idle + 1000)
		if lim.Cur < want {
			lim.Cur = min(want, lim.Max)
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
		n := min(idle, int(lim.Cur)-500)
		conns := make([]net.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		start := time.Now()
		for range n {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				note("idle connections: dial %d failed: %v", len(conns), err)
				break
			}
			conns = append(conns, c)
		}
		opened := time.Since(start)
		normal(fmt.Sprintf("with %d idle connections open", len(conns)))
		note("idle connections: %d opened in %v (test process nofile %d; the daemon's is its own), an ordinary POST still served within 1s", len(conns), opened.Round(time.Millisecond), lim.Cur)
		if len(conns) < n/2 {
			t.Errorf("only %d of %d idle connections could be opened", len(conns), n)
		}
	})

	valid := func(extra string) []byte {
		b := harness.CallEvent(fmt.Sprintf("hostile-odd-%d", len(extra)), "not_interested")
		return bytes.Replace(b, []byte(`{"data":`), []byte(`{"odd":`+extra+`,"data":`), 1)
	}
	odd := []struct {
		name    string
		ctype   string
		hdr     map[string]string
		body    []byte
		want    []int // any of these
		deliver bool  // a 200 must reach the sinks
	}{
		{"invalid UTF-8 in a string", "application/json", nil, valid("\"\xff\xfe\xc3\x28\""), []int{200, 400}, true},
		{"deeply nested JSON (100k levels)", "application/json", nil, []byte(strings.Repeat("[", 100000) + strings.Repeat("]", 100000)), []int{400}, false},
		{"deeply nested objects (100k levels)", "application/json", nil, []byte(strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)), []int{400}, false},
		{"huge number 1e400", "application/json", nil, valid("1e400"), []int{200, 400}, true},
		{"number with 500k digits", "application/json", nil, valid(strings.Repeat("9", 500000)), []int{200, 400}, true},
		{"dedup key of 500 KB (callSid)", "application/json", nil, harness.CallEvent(strings.Repeat("k", 500000), "not_interested"), []int{200, 400}, true},
		{"duplicate keys", "application/json", nil, append(valid(`"x"`)[:len(valid(`"x"`))-1], []byte(`,"event":"call_ended"}`)...), []int{200, 400}, true},
		{"gzip bomb (Content-Encoding: gzip, 1 GiB of zeros)", "application/json", map[string]string{"Content-Encoding": "gzip"}, gzipBomb(t), []int{400, 413, 415}, false},
		{"not JSON at all", "application/json", nil, []byte("\x00\x01\x02 binary"), []int{400}, false},
	}
	for _, tt := range odd {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			code, ans := raw("POST", tt.ctype, tt.hdr, tt.body)
			took := time.Since(start)
			ok := false
			for _, w := range tt.want {
				ok = ok || code == w
			}
			if !ok {
				t.Errorf("%s: answered %d %q, want one of %v", tt.name, code, ans, tt.want)
			}
			if len(ans) > 160 {
				ans = ans[:160] + "…"
			}
			note("%s (%d bytes): %d %s in %v", tt.name, len(tt.body), code, ans, took.Round(time.Millisecond))
			if code == 200 && tt.deliver {
				var a struct{ ID string }
				if err := json.Unmarshal([]byte(ans), &a); err == nil && a.ID != "" {
					mu.Lock()
					events = append(events, harness.Acked{ID: a.ID, Sinks: standardSinks("not_interested")})
					mu.Unlock()
				}
			}
			normal("after " + tt.name)
		})
	}
	if !d.Alive() {
		t.Fatalf("the daemon died")
	}
	p := w.prove(t, events, 60*time.Second)
	hwm := mem.hwm.Load() >> 10
	if hwm > 512 {
		t.Errorf("daemon memory peak %d MiB, want bounded (< 512 MiB)", hwm)
	}
	t.Logf("hostile clients:\n  %s", strings.Join(report, "\n  "))
	addRow(t, row{Scenario: fmt.Sprintf("6. hostile clients (%d idle conns, slow/endless bodies, odd JSON, gzip bomb)", idle), Acked: p.acked, Delivered: p.delivered, Duplicates: p.duplicates, Lost: p.lost,
		Recover: "ordinary POST < 1s throughout", MemPeak: mem.String(),
		Note: "slow clients cut off by read_header_timeout/read_timeout; nested JSON 400; gzip not decoded (400); invalid UTF-8, 1e400, duplicate keys accepted (200)"})
}

// gzipBomb is 1 GiB of zeros, gzipped (about 1 MiB).
func gzipBomb(t *testing.T) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 1024 {
		zw.Write(zero)
	}
	zw.Close()
	return buf.Bytes()
}

// TestDiskFull puts the log directory on a small tmpfs, fills it, and
// checks that ingest answers 503 with Retry-After, that nothing
// acknowledged is lost, and that the daemon carries on once space is freed.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("TestDiskFull mounts a size-limited tmpfs and must run as root; skipped (run `sudo make torture`)")
	}
	w := newWorld(t)
	mnt := filepath.Join(w.dir, "small")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("TestDiskFull: mount -t tmpfs failed (%v: %s); skipped", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s", mnt, err, out)
		}
	})
	cfg := harness.WriteConfig(t, w.dir, w.config(configOpts{logDir: filepath.Join(mnt, "log")}))
	mem := newMemWatch(t)
	d := harness.Start(t, cfg)
	mem.watch(d.PID())
	l := harness.StartLoad(t, harness.LoadOptions{Clients: 8, Prefix: "full", Sinks: standardSinks}, d.URL)
	l.WaitCount(t, 50, 30*time.Second) // under load when the disk fills

	// Fill the filesystem, leaving nothing.
	filler := filepath.Join(mnt, "filler")
	out, _ := exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=1M").CombinedOutput()
	t.Logf("filler: %s", strings.TrimSpace(string(out)))
	fullAt := time.Now()
	n503, nRetryAfter := 0, 0
	crashed := ""
	var first503 string
	for end := time.Now().Add(scale(5*time.Second, 20*time.Second)); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if !d.Alive() {
			crashed = firstLine(tail(d.Log(), 4000))
			t.Errorf("BUG: the daemon died when the disk filled up (%s); P7 wants 503 + Retry-After:\n%s", crashed, tail(d.Log(), 3000))
			break
		}
		resp, err := harness.Client.Post(d.URL+"/hooks/callkaro", "application/json", bytes.NewReader(harness.CallEvent(fmt.Sprint("full-probe-", time.Now().UnixNano()), "not_interested")))
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 503 {
			n503++
			if resp.Header.Get("Retry-After") != "" {
				nRetryAfter++
			}
			if first503 == "" {
				first503 = strings.TrimSpace(string(b))
			}
		}
	}
	ackedWhileFull := l.Count()
	t.Logf("disk full: %d probes answered 503 (%d with Retry-After), first: %s; load %s", n503, nRetryAfter, first503, l.Summary())
	if n503 == 0 && crashed == "" {
		t.Errorf("no 503 while the log's filesystem was full")
	}
	if n503 != nRetryAfter {
		t.Errorf("%d of %d 503 answers lack Retry-After", n503-nRetryAfter, n503)
	}
	// Free the space: the daemon carries on without a restart.
	os.Remove(filler)
	freed := time.Now()
	if crashed != "" {
		// P1 must still hold: restart on the freed filesystem.
		d = harness.Start(t, cfg)
		mem.watch(d.PID())
		l.SetTargets(d.URL)
	}
	before := l.Count()
	var recovered time.Duration
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if l.Count() > before+10 {
			recovered = time.Since(freed)
			break
		}
		if time.Now().After(end) || !d.Alive() {
			t.Fatalf("ingest did not resume within 60s of freeing space (alive %v); load %s\n%s", d.Alive(), l.Summary(), tail(d.Log(), 4000))
		}
	}
	l.WaitCount(t, l.Count()+50, 30*time.Second)
	events := l.Finish()
	p := w.prove(t, events, 120*time.Second)
	// No corruption: a clean restart reopens the log and still knows the events.
	mem.forget(d.PID())
	d.Kill(syscall.SIGTERM)
	d2 := harness.Start(t, cfg)
	missing := 0
	for _, e := range events {
		if ok, err := eventExists(t, d2, e.ID); err != nil || !ok {
			missing++
		}
	}
	if missing != 0 {
		t.Errorf("after a restart, %d acknowledged events are not in the log", missing)
	}
	_ = fullAt
	r := (row{Scenario: "4. disk full (256 MiB tmpfs, filled, then freed)", Acked: p.acked, Delivered: p.delivered, Duplicates: p.duplicates, Lost: p.lost + missing,
		Recover: fmt.Sprintf("ingest resumed %v after freeing space, no restart", recovered.Round(time.Millisecond)), MemPeak: mem.String(),
		Note: fmt.Sprintf("%d probes 503 while full (all with Retry-After: %v); %d acked before/while full", n503, n503 == nRetryAfter, ackedWhileFull)})
	if crashed != "" {
		r.Recover = fmt.Sprintf("restart needed: ingest resumed %v after freeing space + restart", recovered.Round(time.Millisecond))
		r.Note = "BUG: daemon crashed when the disk filled (SIGBUS in Badger's mmapped value-log write); nothing acknowledged lost"
	}
	addRow(t, r)
}

func tail(s string, n int) string {
	for _, crash := range []string{"unexpected fault", "fatal error", "panic:", "SIGBUS"} {
		if i := strings.Index(s, crash); i >= 0 {
			s = s[max(0, i-1500):]
			break
		}
	}
	if len(s) > n {
		return s[:n] + "…"
	}
	if false {
		return "…" + s[len(s)-n:]
	}
	return s
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "signal SIGBUS") || strings.Contains(l, "fatal error") || strings.HasPrefix(strings.TrimSpace(l), "panic:") {
			return strings.TrimSpace(l)
		}
	}
	return "exited"
}
