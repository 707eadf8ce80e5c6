package e2e

import (
	"context"
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
	"github.com/pipelined/pipelined/tests/harness"
)

// The JetStream cluster tests run a 3-node nats-server cluster on loopback
// (real server processes, built from the nats-server module) with two
// pipelined daemons in front of it. They take about a minute and run only
// with -jetstream.cluster or PIPELINED_TEST_JETSTREAM_CLUSTER=1 (make
// test-jetstream). BenchmarkJetStreamIngest measures ingest and end-to-end
// rates on the same cluster.

var jsClusterFlag = flag.Bool("jetstream.cluster", false, "run the JetStream cluster tests (slow)")

func needCluster(t testing.TB) {
	t.Helper()
	if !*jsClusterFlag && os.Getenv("PIPELINED_TEST_JETSTREAM_CLUSTER") != "1" {
		t.Skip("JetStream cluster test: run with -jetstream.cluster or PIPELINED_TEST_JETSTREAM_CLUSTER=1")
	}
	harness.SkipIfShort(t)
}

var (
	natsOnce sync.Once
	natsBin  string
	natsErr  error
)

func natsServerBinary(t testing.TB) string {
	t.Helper()
	dir := harness.Build(t)
	natsOnce.Do(func() {
		natsBin = filepath.Join(dir, "nats-server")
		cmd := exec.Command("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2")
		cmd.Stderr = os.Stderr
		natsErr = cmd.Run()
	})
	if natsErr != nil {
		t.Fatalf("build nats-server: %v", natsErr)
	}
	return natsBin
}

func natsPort(t testing.TB) int {
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

func (n *natsNode) start(t testing.TB) {
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
func startCluster(t testing.TB) []*natsNode {
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
func waitJetStream(t testing.TB, url string, within time.Duration) {
	t.Helper()
	harness.Eventually(t, within, func() error {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err != nil {
			return fmt.Errorf("nats-server at %s: %w", url, err)
		}
		defer nc.Close()
		msg, err := nc.Request("$JS.API.INFO", nil, time.Second)
		if err != nil || strings.Contains(string(msg.Data), `"error"`) {
			return fmt.Errorf("nats-server at %s has no JetStream: %v", url, err)
		}
		return nil
	})
}

// streamLeader returns the name of the node that leads stream.
func streamLeader(t testing.TB, nodes []*natsNode, stream string) string {
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
	return harness.Listeners(`max_body = "64KiB"`) + fmt.Sprintf(`
[log]
backend = "jetstream"
urls = [%s]
stream = %q
replicas = %d
`, strings.Join(urls, ", "), stream, replicas) + harness.CallKaroSource + `
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
` + harness.AllCallsRoute("archive", "db")
}

// startDaemons starts n daemons on the same config, each in its own directory.
func startDaemons(t testing.TB, n int, conf string) ([]*harness.Daemon, []string) {
	t.Helper()
	var ds []*harness.Daemon
	var dirs []string
	for range n {
		dir := t.TempDir()
		ds = append(ds, harness.Start(t, harness.WriteConfig(t, dir, conf)))
		dirs = append(dirs, dir)
	}
	return ds, dirs
}

// delivered counts, per event id, the deliveries to the archive and to the
// SQL table of every daemon directory.
func delivered(dirs []string) (archive, db map[string]int, err error) {
	archive, db = map[string]int{}, map[string]int{}
	for _, dir := range dirs {
		for id, n := range harness.ArchivedCount(filepath.Join(dir, "archive")) {
			archive[id] += n
		}
		rows, err := harness.SQLRows(filepath.Join(dir, "events.db"))
		if err != nil {
			return archive, db, err
		}
		for id, n := range rows {
			db[id] += n
		}
	}
	return archive, db, nil
}

// waitDelivered waits until every id reached both sinks, and returns how
// many deliveries were duplicates (at least once).
func waitDelivered(t testing.TB, dirs []string, ids []string, within time.Duration) (archiveDups, dbDups int, took time.Duration) {
	t.Helper()
	start := time.Now()
	var archive, db map[string]int
	harness.Eventually(t, within, func() error {
		var err error
		if archive, db, err = delivered(dirs); err != nil {
			return err
		}
		var missA, missD []string
		for _, id := range ids {
			if archive[id] == 0 {
				missA = append(missA, id)
			}
			if db[id] == 0 {
				missD = append(missD, id)
			}
		}
		if len(missA)+len(missD) > 0 {
			return fmt.Errorf("%d of %d acknowledged events missing from the archive (e.g. %v), %d from the SQL table (e.g. %v)",
				len(missA), len(ids), missA[:min(3, len(missA))], len(missD), missD[:min(3, len(missD))])
		}
		return nil
	})
	for _, id := range ids {
		archiveDups += archive[id] - 1
		dbDups += db[id] - 1
	}
	return archiveDups, dbDups, time.Since(start)
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
	// A replayed entry joins the end of the queue (docs/jetstream.md), and a
	// consumer's replica may see it a moment after its publish was answered.
	logtest.RunWith(t, func(t *testing.T) pipeline.Log { return openR3(t, fmt.Sprintf("C%d", streams.Add(1))) },
		logtest.Options{RequeueMayFollow: true, DropAllUnmarked: true})
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
		body := harness.CallEvent(sid, "interested")
		for _, d := range ds {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				code, ans, err := harness.Post(d.URL+"/hooks/callkaro", body)
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
		perDaemon[i] = len(harness.ArchivedCount(filepath.Join(dir, "archive")))
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
		harness.Eventually(t, 10*time.Second, func() error {
			st := d.Sinks(t)
			if len(st) != 2 {
				return fmt.Errorf("/v1/sinks = %+v, want archive and db", st)
			}
			for name, s := range st {
				if s.Ready+s.Retrying+s.Dead != 0 {
					return fmt.Errorf("/v1/sinks after every delivery: %s has %d ready, %d retrying, %d dead; want all queues empty", name, s.Ready, s.Retrying, s.Dead)
				}
			}
			return nil
		})
	}
}

func TestJetStreamClusterKillDaemon(t *testing.T) {
	needCluster(t)
	nodes := startCluster(t)
	ds, dirs := startDaemons(t, 2, jetstreamConfig(nodes, "PL", 3))
	l := harness.StartLoad(t, harness.LoadOptions{Clients: 16, Prefix: "kd", Lead: interested}, ds[0].URL, ds[1].URL)
	l.WaitCount(t, 100, 30*time.Second)
	l.SetTargets(ds[1].URL)
	ds[0].Kill(syscall.SIGKILL)
	l.WaitCount(t, l.Count()+100, 30*time.Second) // the other daemon goes on
	acked := harness.IDs(l.Finish())
	// The killed daemon's leases return after AckWait (30s); the other
	// daemon delivers them.
	aDups, dDups, took := waitDelivered(t, dirs, acked, 90*time.Second)
	t.Logf("%d events acknowledged with a daemon killed -9 mid-load (%s); all delivered %v after the load; duplicates: archive %d, sql %d",
		len(acked), l.Summary(), took.Round(time.Millisecond), aDups, dDups)
}

func TestJetStreamClusterKillNode(t *testing.T) {
	needCluster(t)
	nodes := startCluster(t)
	ds, dirs := startDaemons(t, 2, jetstreamConfig(nodes, "PL", 3))
	l := harness.StartLoad(t, harness.LoadOptions{Clients: 16, Prefix: "kn", Lead: interested}, ds[0].URL, ds[1].URL)
	l.WaitCount(t, 100, 30*time.Second)
	leader := streamLeader(t, nodes, "PL")
	for _, n := range nodes {
		if n.name == leader {
			n.kill()
		}
	}
	// nats-server elects a new leader 4-9s after it misses the old one;
	// ingest must resume on both daemons.
	l.WaitCount(t, l.Count()+200, 30*time.Second)
	acked := harness.IDs(l.Finish())
	st := l.Stats()
	for code, n := range st.Statuses {
		if code != http.StatusOK && code != http.StatusServiceUnavailable {
			t.Errorf("%d answers %d during the node failure, want only 200 and 503", n, code)
		}
	}
	if st.NoRetryAfter > 0 {
		t.Errorf("%d answers 503 without Retry-After", st.NoRetryAfter)
	}
	// A request caught in flight waits up to the log's 5s timeout.
	if st.LongestGap > 15*time.Second {
		t.Errorf("longest time without a 2xx = %v, want ingest back within the election time (4-9s) and the 5s request timeout", st.LongestGap)
	}
	aDups, dDups, took := waitDelivered(t, dirs, acked, 90*time.Second)
	t.Logf("stream leader %s killed -9 under load: %d events acknowledged (%s), longest time without a 2xx %v; all delivered %v after; duplicates: archive %d, sql %d",
		leader, len(acked), l.Summary(), st.LongestGap.Round(time.Millisecond), took.Round(time.Millisecond), aDups, dDups)
}

// benchRuns numbers the runs of BenchmarkJetStreamIngest: each one has its
// own stream and callSids.
var benchRuns atomic.Int64

// BenchmarkJetStreamIngest measures ingest and end-to-end rates with one
// and two daemons against R1 and R3 streams, and Badger (R0) as the
// baseline on the same machine: b.N events from 64 clients, reported as
// events/s (acknowledged) and e2e-events/s (in both sinks). Each run
// starts its own daemons; give a count, not a time:
//
//	PIPELINED_TEST_JETSTREAM_CLUSTER=1 go test -run '^$' -bench JetStreamIngest -benchtime 5000x ./tests/e2e
func BenchmarkJetStreamIngest(b *testing.B) {
	needCluster(b)
	nodes := startCluster(b)
	for _, replicas := range []int{0, 1, 3} { // 0: Badger, the baseline on the same machine
		for _, daemons := range []int{1, 2} {
			if replicas == 0 && daemons > 1 {
				continue
			}
			b.Run(fmt.Sprintf("R%d/daemons=%d", replicas, daemons), func(b *testing.B) {
				stream := fmt.Sprintf("TP%d%dN%d", replicas, daemons, benchRuns.Add(1))
				conf := jetstreamConfig(nodes, stream, max(replicas, 1))
				if replicas == 0 {
					i := strings.Index(conf, "[log]")
					j := strings.Index(conf, "[[source]]")
					conf = conf[:i] + "[log]\ndir = \"log\"\n\n" + conf[j:]
				}
				ds, dirs := startDaemons(b, daemons, conf)
				urls := make([]string, len(ds))
				for i, d := range ds {
					urls[i] = d.URL
				}
				b.ResetTimer()
				start := time.Now()
				l := harness.StartLoad(b, harness.LoadOptions{Clients: 64, Prefix: stream, Lead: interested}, urls...)
				l.WaitCount(b, b.N, 5*time.Minute)
				acked := harness.IDs(l.Finish())
				dur := time.Since(start)
				b.StopTimer()
				_, _, took := waitDelivered(b, dirs, acked, 2*time.Minute)
				b.ReportMetric(float64(len(acked))/dur.Seconds(), "events/s")
				b.ReportMetric(float64(len(acked))/(dur+took).Seconds(), "e2e-events/s")
				b.Logf("R%d (R0 = Badger), %d daemon(s), 64 clients: %d events in %v (%s); all in both sinks %v after the load",
					replicas, daemons, len(acked), dur.Round(time.Millisecond), l.Summary(), took.Round(time.Millisecond))
				for _, d := range ds {
					d.Kill(syscall.SIGTERM)
				}
			})
		}
	}
}
