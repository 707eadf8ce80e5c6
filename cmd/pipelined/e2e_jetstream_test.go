package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pipelined/pipelined/pipeline"
	"github.com/pipelined/pipelined/pipeline/eventlog/jetstreamlog"
	"github.com/pipelined/pipelined/pipeline/eventlog/logtest"
)

// The JetStream cluster tests run a 3-node nats-server cluster on loopback
// (real server processes, built from the nats-server module) with two
// pipelined daemons in front of it. They take about a minute and run only
// with -jetstream.cluster or PIPELINED_TEST_JETSTREAM_CLUSTER=1.

var jsClusterFlag = flag.Bool("jetstream.cluster", false, "run the JetStream cluster tests (slow)")

func needCluster(t *testing.T) {
	t.Helper()
	if !*jsClusterFlag && os.Getenv("PIPELINED_TEST_JETSTREAM_CLUSTER") != "1" {
		t.Skip("JetStream cluster test: run with -jetstream.cluster or PIPELINED_TEST_JETSTREAM_CLUSTER=1")
	}
}

var (
	natsOnce sync.Once
	natsBin  string
	natsErr  error
)

func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsOnce.Do(func() {
		natsBin = filepath.Join(binDir, "nats-server")
		cmd := exec.Command("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2")
		cmd.Stderr = os.Stderr
		natsErr = cmd.Run()
	})
	if natsErr != nil {
		t.Fatalf("build nats-server: %v", natsErr)
	}
	return natsBin
}

func natsPort(t *testing.T) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(freePort(t))
	n, _ := strconv.Atoi(port)
	return n
}

// natsNode is one nats-server process of the test cluster.
type natsNode struct {
	name string
	port int
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func (n *natsNode) start(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command(natsServerBinary(t), "-c", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = nil, nil
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
}

func (n *natsNode) kill() {
	select {
	case <-n.done:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// startCluster starts three nats-server processes routed to each other and
// waits until JetStream answers on each.
func startCluster(t *testing.T) []*natsNode {
	t.Helper()
	dir := t.TempDir()
	nodes := make([]*natsNode, 3)
	cports := make([]int, 3)
	for i := range nodes {
		nodes[i] = &natsNode{name: fmt.Sprintf("n%d", i+1), port: natsPort(t)}
		cports[i] = natsPort(t)
	}
	var routes []string
	for _, p := range cports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i, n := range nodes {
		n.conf = filepath.Join(dir, n.name+".conf")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster { name: pipelined-test, listen: 127.0.0.1:%d, routes: [%s] }
`, n.name, n.port, filepath.Join(dir, n.name), cports[i], strings.Join(routes, ", "))
		if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		n.start(t)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	for _, n := range nodes {
		waitJetStream(t, n.url(), 30*time.Second)
	}
	return nodes
}

// waitJetStream waits until the server at url answers JetStream API calls
// (the cluster has a meta leader).
func waitJetStream(t *testing.T, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err == nil {
			msg, err := nc.Request("$JS.API.INFO", nil, time.Second)
			nc.Close()
			if err == nil && !strings.Contains(string(msg.Data), `"error"`) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server at %s has no JetStream after %v", url, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// streamLeader returns the name of the node that leads stream.
func streamLeader(t *testing.T, nodes []*natsNode, stream string) string {
	t.Helper()
	for _, n := range nodes {
		nc, err := nats.Connect(n.url(), nats.Timeout(time.Second))
		if err != nil {
			continue
		}
		msg, err := nc.Request("$JS.API.STREAM.INFO."+stream, nil, 2*time.Second)
		nc.Close()
		if err != nil {
			continue
		}
		var info struct {
			Cluster struct{ Leader string } `json:"cluster"`
		}
		if json.Unmarshal(msg.Data, &info) == nil && info.Cluster.Leader != "" {
			return info.Cluster.Leader
		}
	}
	t.Fatalf("no leader for stream %s", stream)
	return ""
}

// jetstreamConfig is the one config every daemon of a test runs: paths are
// relative to the daemon's own directory.
func jetstreamConfig(nodes []*natsNode, stream string, replicas int) string {
	var urls []string
	for _, n := range nodes {
		urls = append(urls, fmt.Sprintf("%q", n.url()))
	}
	return fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
max_body = "64KiB"

[admin]
listen = "127.0.0.1:0"

[log]
backend = "jetstream"
urls = [%s]
stream = %q
replicas = %d

[[source]]
name = "callkaro"
path = "/hooks/callkaro"
dedup_key = "body.data.callSid"
dedup_window = "24h"
auth = { type = "none" }

[[sink]]
name = "archive"
plugin = "archive"
config = { dir = "archive" }
delivery = { batch_max = 200, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "500ms" }

[[sink]]
name = "db"
plugin = "sql"
config = { driver = "sqlite", path = "events.db", columns = { call_sid = "data.callSid" } }
delivery = { batch_max = 200, batch_wait = "5ms", backoff_min = "50ms", backoff_max = "500ms" }

[[route]]
name = "all-calls"
when = 'body.event == "call_ended"'
to = ["archive", "db"]
`, strings.Join(urls, ", "), stream, replicas)
}

// startDaemons starts n daemons on the same config, each in its own directory.
func startDaemons(t *testing.T, n int, conf string) ([]*proc, []string) {
	t.Helper()
	var ds []*proc
	var dirs []string
	for range n {
		dir := t.TempDir()
		ds = append(ds, startDaemon(t, writeConfig(t, dir, conf)))
		dirs = append(dirs, dir)
	}
	return ds, dirs
}

// delivered counts, per event id, the deliveries to the archive and to the
// SQL table of every daemon directory.
func delivered(t *testing.T, dirs []string) (archive, db map[string]int) {
	t.Helper()
	archive, db = map[string]int{}, map[string]int{}
	for _, dir := range dirs {
		for id, recs := range archived(t, filepath.Join(dir, "archive")) {
			archive[id] += len(recs)
		}
		path := filepath.Join(dir, "events.db")
		if _, err := os.Stat(path); err != nil {
			continue
		}
		sdb, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		rows, err := sdb.Query(`SELECT id FROM events`)
		if err == nil {
			for rows.Next() {
				var id string
				if rows.Scan(&id) == nil {
					db[id]++
				}
			}
			rows.Close()
		}
		sdb.Close()
	}
	return archive, db
}

// waitDelivered waits until every id reached both sinks, and returns how
// many deliveries were duplicates (at least once).
func waitDelivered(t *testing.T, dirs []string, ids []string, within time.Duration) (archiveDups, dbDups int, took time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		archive, db := delivered(t, dirs)
		var missA, missD []string
		for _, id := range ids {
			if archive[id] == 0 {
				missA = append(missA, id)
			}
			if db[id] == 0 {
				missD = append(missD, id)
			}
		}
		if len(missA)+len(missD) == 0 {
			for _, id := range ids {
				archiveDups += archive[id] - 1
				dbDups += db[id] - 1
			}
			return archiveDups, dbDups, time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("after %v: %d of %d acknowledged events missing from the archive (e.g. %v), %d from the SQL table (e.g. %v)",
				within, len(missA), len(ids), missA[:min(3, len(missA))], len(missD), missD[:min(3, len(missD))])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestJetStreamClusterConformance runs the log conformance suite against an
// R3 stream on the cluster, each client connected to all three servers.
func TestJetStreamClusterConformance(t *testing.T) {
	needCluster(t)
	nodes := startCluster(t)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url())
	}
	var streams atomic.Int64
	openR3 := func(t *testing.T, stream string) pipeline.Log {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l, err := jetstreamlog.Open(ctx, jetstreamlog.Options{URLs: urls, Stream: stream, Replicas: 3})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return l
	}
	logtest.Run(t, func(t *testing.T) pipeline.Log { return openR3(t, fmt.Sprintf("C%d", streams.Add(1))) })
	var mu sync.Mutex
	names := map[string]string{}
	logtest.RunDurable(t, func(t *testing.T, dir string) pipeline.Log {
		mu.Lock()
		name, ok := names[dir]
		if !ok {
			name = fmt.Sprintf("CD%d", streams.Add(1))
			names[dir] = name
		}
		mu.Unlock()
		return openR3(t, name)
	})
}

func TestJetStreamClusterTwoDaemons(t *testing.T) {
	needCluster(t)
	nodes := startCluster(t)
	ds, dirs := startDaemons(t, 2, jetstreamConfig(nodes, "PL", 3))

	// CallKaro sends each call_ended twice; here one copy goes to each
	// daemon, at the same time.
	const calls = 300
	var (
		mu       sync.Mutex
		ids      []string
		firstOf  = map[string]string{}
		dupsSeen int
	)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	start := time.Now()
	for i := range calls {
		sid := fmt.Sprintf("two-%d", i)
		body := callEvent(t, sid, "interested")
		for _, d := range ds {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				code, ans, err := post(t, d.url+"/hooks/callkaro", "application/json", body)
				if err != nil || code != http.StatusOK {
					t.Errorf("POST %s = %d %v %v, want 200", sid, code, ans, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				id := ans["id"].(string)
				if ans["duplicate"] == true {
					dupsSeen++
				} else {
					ids = append(ids, id)
				}
				if prev, ok := firstOf[sid]; ok && prev != id {
					t.Errorf("the two copies of %s got ids %s and %s, want one id", sid, prev, id)
				}
				firstOf[sid] = id
			}()
		}
	}
	wg.Wait()
	ingest := time.Since(start)
	if len(ids) != calls || dupsSeen != calls {
		t.Fatalf("%d calls sent twice: %d stored, %d answered duplicate; want %d and %d", calls, len(ids), dupsSeen, calls, calls)
	}
	aDups, dDups, took := waitDelivered(t, dirs, ids, 60*time.Second)
	perDaemon := make([]int, len(dirs))
	for i, dir := range dirs {
		perDaemon[i] = len(archived(t, filepath.Join(dir, "archive")))
	}
	t.Logf("%d calls x 2 copies in %v (%.0f requests/s), delivered to archive and SQL %v later; duplicates: archive %d, sql %d; archive deliveries per daemon %v",
		calls, ingest.Round(time.Millisecond), float64(2*calls)/ingest.Seconds(), took.Round(time.Millisecond), aDups, dDups, perDaemon)
	for i, n := range perDaemon {
		if n == 0 {
			t.Errorf("daemon %d delivered nothing to its archive: the work was not shared", i)
		}
	}
	// `pipelined sinks` (the admin API) reads the shared queues: empty now.
	for _, d := range ds {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := client.Get(d.admin + "/v1/sinks")
			if err != nil {
				t.Fatal(err)
			}
			var st struct {
				Sinks []struct {
					Name                  string
					Ready, Retrying, Dead int
				}
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			busy := err != nil || len(st.Sinks) != 2
			for _, s := range st.Sinks {
				busy = busy || s.Ready+s.Retrying+s.Dead != 0
			}
			if !busy {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/v1/sinks after every delivery = %+v, %v; want archive and db, all queues empty", st, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// load posts distinct calls to the daemons until stop is closed and
// records what was acknowledged and every answer that was not a 2xx.
type load struct {
	mu        sync.Mutex
	acked     []string
	codes     map[int]int
	noRetry   int       // 503s without Retry-After
	lastOK    time.Time // of any daemon
	longestNo time.Duration
}

func runLoad(t *testing.T, urls func() []string, prefix string, clients int, stop <-chan struct{}) (*load, func()) {
	l := &load{codes: map[int]int{}, lastOK: time.Now()}
	var wg sync.WaitGroup
	var n atomic.Int64
	for c := range clients {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				us := urls()
				u := us[(c+i)%len(us)]
				resp, err := client.Post(u+"/hooks/callkaro", "application/json", strings.NewReader(string(callEvent(t, fmt.Sprintf("%s-%d-%d", prefix, c, n.Add(1)), "interested"))))
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				var ans map[string]any
				json.NewDecoder(resp.Body).Decode(&ans)
				resp.Body.Close()
				now := time.Now()
				l.mu.Lock()
				l.codes[resp.StatusCode]++
				if resp.StatusCode == http.StatusOK {
					l.acked = append(l.acked, ans["id"].(string))
					if gap := now.Sub(l.lastOK); gap > l.longestNo {
						l.longestNo = gap
					}
					l.lastOK = now
				} else if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
					l.noRetry++
				}
				l.mu.Unlock()
				if resp.StatusCode != http.StatusOK {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	return l, wg.Wait
}

func TestJetStreamClusterKillDaemon(t *testing.T) {
	needCluster(t)
	nodes := startCluster(t)
	ds, dirs := startDaemons(t, 2, jetstreamConfig(nodes, "PL", 3))
	var alive atomic.Value
	alive.Store([]string{ds[0].url, ds[1].url})
	stop := make(chan struct{})
	l, wait := runLoad(t, func() []string { return alive.Load().([]string) }, "kd", 16, stop)
	time.Sleep(1500 * time.Millisecond)
	alive.Store([]string{ds[1].url})
	ds[0].kill(syscall.SIGKILL)
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wait()
	if len(l.acked) < 100 {
		t.Fatalf("only %d events acknowledged; the test needs a real load", len(l.acked))
	}
	// The killed daemon's leases return after AckWait (30s); the other
	// daemon delivers them.
	aDups, dDups, took := waitDelivered(t, dirs, l.acked, 90*time.Second)
	t.Logf("%d events acknowledged with a daemon killed -9 mid-load (answers %v); all delivered %v after the load; duplicates: archive %d, sql %d",
		len(l.acked), l.codes, took.Round(time.Millisecond), aDups, dDups)
}

func TestJetStreamClusterKillNode(t *testing.T) {
	needCluster(t)
	nodes := startCluster(t)
	ds, dirs := startDaemons(t, 2, jetstreamConfig(nodes, "PL", 3))
	stop := make(chan struct{})
	l, wait := runLoad(t, func() []string { return []string{ds[0].url, ds[1].url} }, "kn", 16, stop)
	time.Sleep(1500 * time.Millisecond)
	leader := streamLeader(t, nodes, "PL")
	for _, n := range nodes {
		if n.name == leader {
			n.kill()
		}
	}
	killedAt := time.Now()
	time.Sleep(8 * time.Second)
	close(stop)
	wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.acked) < 100 {
		t.Fatalf("only %d events acknowledged; the test needs a real load", len(l.acked))
	}
	for code, n := range l.codes {
		if code != http.StatusOK && code != http.StatusServiceUnavailable {
			t.Errorf("%d answers %d during the node failure, want only 200 and 503", n, code)
		}
	}
	if l.noRetry > 0 {
		t.Errorf("%d answers 503 without Retry-After", l.noRetry)
	}
	if time.Since(l.lastOK) > 2*time.Second+time.Since(killedAt)-8*time.Second {
		t.Errorf("ingest did not resume after the stream leader %s was killed: last 2xx %v ago", leader, time.Since(l.lastOK))
	}
	// nats-server elects a new leader 4-9s after it misses the old one;
	// a request caught in flight waits up to the log's 5s timeout.
	if l.longestNo > 15*time.Second {
		t.Errorf("longest time without a 2xx = %v, want ingest back within the election time (4-9s) and the 5s request timeout", l.longestNo)
	}
	aDups, dDups, took := waitDelivered(t, dirs, l.acked, 90*time.Second)
	t.Logf("stream leader %s killed -9 under load: %d events acknowledged (answers %v), longest time without a 2xx %v; all delivered %v after; duplicates: archive %d, sql %d",
		leader, len(l.acked), l.codes, l.longestNo.Round(time.Millisecond), took.Round(time.Millisecond), aDups, dDups)
}

// TestJetStreamThroughput measures ingest and end-to-end rates with one and
// two daemons against R1 and R3 streams; it only logs figures.
func TestJetStreamThroughput(t *testing.T) {
	needCluster(t)
	nodes := startCluster(t)
	for _, replicas := range []int{0, 1, 3} { // 0: Badger, the baseline on the same machine
		for _, daemons := range []int{1, 2} {
			if replicas == 0 && daemons > 1 {
				continue
			}
			t.Run(fmt.Sprintf("R%d/daemons=%d", replicas, daemons), func(t *testing.T) {
				stream := fmt.Sprintf("TP%d%d", replicas, daemons)
				conf := jetstreamConfig(nodes, stream, max(replicas, 1))
				if replicas == 0 {
					i := strings.Index(conf, "[log]")
					j := strings.Index(conf, "[[source]]")
					conf = conf[:i] + "[log]\ndir = \"log\"\n\n" + conf[j:]
				}
				ds, dirs := startDaemons(t, daemons, conf)
				urls := make([]string, len(ds))
				for i, d := range ds {
					urls[i] = d.url
				}
				stop := make(chan struct{})
				l, wait := runLoad(t, func() []string { return urls }, stream, 64, stop)
				start := time.Now()
				time.Sleep(5 * time.Second)
				close(stop)
				wait()
				dur := time.Since(start)
				_, _, took := waitDelivered(t, dirs, l.acked, 120*time.Second)
				t.Logf("R%d (R0 = Badger), %d daemon(s), 64 clients: ingest %.0f events/s (%d in %v, answers %v); end to end %.0f events/s (all in both sinks %v after the load)",
					replicas, daemons, float64(len(l.acked))/dur.Seconds(), len(l.acked), dur.Round(time.Millisecond), l.codes,
					float64(len(l.acked))/(dur+took).Seconds(), took.Round(time.Millisecond))
				for _, d := range ds {
					d.kill(syscall.SIGTERM)
				}
			})
		}
	}
}
