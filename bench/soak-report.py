#!/usr/bin/env python3
"""soak-report.py DIR [THRESHOLD_MS ...]: lines up the records of
bench/soak.sh by second (UTC) and says what each slow second coincided with.

For every second of the load generator's -interval lines it takes the
machine's state in the same second (vmstat: run queue, idle, iowait; the
CPU and I/O pressure stall time from /proc/pressure, as a share of the
second), the daemon's CPU, and whether Badger flushed a memtable or
compacted within WINDOW seconds before it (daemon.log). It prints:

  * how many seconds had a max latency over each threshold, in all and
    split by what the machine was doing (busy = run queue > 2 and idle 0);
  * every second over the highest threshold, with the machine beside it;
  * the daemon's group-commit durations from /metrics (10 s deltas);
  * per 10 minutes: p99 of the seconds' p99, worst max.

With CONTROL=FILE in the environment (the -interval lines of a second
generator that loaded a bare handler, `pipelined-load bare`, at the same
rate in the same minutes), it also sets each slow second beside the bare
handler's latency in that second: what the machine alone did to an HTTP
server that does nothing.
"""
import re, sys, os, datetime as dt, collections

d = sys.argv[1]
ths = [float(x) for x in sys.argv[2:]] or [50, 100, 250, 500, 1000]
WINDOW = 5

BASE_HOUR = None  # the hour of the first record: a soak may run past midnight


def sec(hms):
    global BASE_HOUR
    h, m, s = hms.split(':')
    h = int(h)
    if BASE_HOUR is None:
        BASE_HOUR = h
    if h < BASE_HOUR - 12:
        h += 24  # after midnight
    return h * 3600 + int(m) * 60 + int(float(s))

def fmt(t):
    return '%02d:%02d:%02d' % (t // 3600 % 24, t // 60 % 60, t % 60)

def parse_load(path):
    out = {}
    for line in open(path):
        if not line.startswith('interval '):
            continue
        f = line.split()
        t = sec(f[1][11:19])
        kv = dict(x.split('=', 1) for x in f[3:])
        # the line at hh:mm:ss.xxx covers the second before it
        out[t] = {k: float(v) for k, v in kv.items()}
    return out

load = parse_load(os.path.join(d, 'load.txt'))
ctl = parse_load(os.environ['CONTROL']) if os.environ.get('CONTROL') else {}

vm = {}
for line in open(os.path.join(d, 'vmstat.txt')):
    f = line.split()
    if len(f) < 19 or not f[0].isdigit():
        continue
    t = sec(f[-1])
    vm[t] = dict(r=int(f[0]), b=int(f[1]), us=int(f[12]), sy=int(f[13]), id=int(f[14]), wa=int(f[15]))

proc = {}
prev = None
for line in open(os.path.join(d, 'proc.txt')):
    f = line.split()
    if len(f) < 3:
        continue
    t = sec(f[0])
    kv = dict(x.split('=', 1) for x in f[1:])
    cur = (t, {k: float(v) for k, v in kv.items()})
    if prev and t > prev[0]:
        dtv = t - prev[0]
        p = {}
        for k in ('cpu_some_us', 'io_some_us'):
            p[k] = (cur[1][k] - prev[1][k]) / dtv / 1e4  # % of the second
        for k in ('pipelined', 'load'):
            if k in cur[1] and k in prev[1]:
                p[k] = (cur[1][k] - prev[1][k]) / dtv  # ticks/s = % of a core
        p['gap'] = dtv
        proc[t] = p
    prev = cur

events = []  # (second, kind, text)
pat = [
    ('flush', re.compile(r'badger: Flushing memtable, mt.size')),
    ('compact', re.compile(r'badger: \[Compactor: \d+\] Compaction for level: (\d+) DONE')),
    ('compact-iter', re.compile(r'LOG Compact\. Added (\d+) keys\. Skipped (\d+) keys\. Iteration took: (\S+)')),
    ('l0stall', re.compile(r'L0 was stalled')),
    ('retention', re.compile(r'retention removed')),
    ('vlog-gc', re.compile(r'(?i)value log|vlog gc|Rewrite')),
]
for line in open(os.path.join(d, 'daemon.log'), errors='replace'):
    if 'webhook accepted' in line:
        continue
    m = re.match(r'time=\S+T(\d\d:\d\d:\d\d)', line)
    if not m:
        continue
    for kind, p in pat:
        mm = p.search(line)
        if mm:
            events.append((sec(m.group(1)), kind, mm.group(0)[:100]))
            break

# new files of Badger and the write-ahead log, from files.txt when present
newfile = []
fp = os.path.join(d, 'files.txt')
if os.path.exists(fp):
    seen = set()
    t = None
    samples = 0
    for line in open(fp):
        if line.startswith('# '):
            t = sec(line[2:].strip())
            samples += 1
            continue
        name = line.split()[0]
        if name not in seen and samples == 1:
            seen.add(name)  # there before the first sample
        elif name not in seen:
            seen.add(name)
            if name.endswith(('.sst', '.wal', '.mem')):
                newfile.append((t, name))

ev_by_sec = collections.defaultdict(list)
for t, k, txt in events:
    ev_by_sec[t].append(k)
for t, name in newfile:
    ev_by_sec[t].append('new ' + name.rsplit('.', 1)[1])

def near(t):
    ks = set()
    for u in range(t - WINDOW, t + 1):
        ks.update(k for k in ev_by_sec.get(u, []) if k not in ('compact-iter',))
    return ks

def busy(t):
    v = vm.get(t)
    return v is not None and v['r'] > 2 and v['id'] == 0

secs = sorted(load)
first, last = secs[0], secs[-1]
print('records: %s, %s to %s UTC, %d one-second lines' % (d, fmt(first), fmt(last), len(secs)))
tot = sum(load[t]['answered'] for t in secs)
print('answered %d, errors %d' % (tot, sum(load[t]['errors'] for t in secs)))
print('badger events in the log: %s' % dict(collections.Counter(k for _, k, _ in events)))
print('new files: %s' % dict(collections.Counter(n.rsplit('.', 1)[1] for _, n in newfile)))
print()
nb = sum(1 for t in secs if busy(t))
ne = sum(1 for t in secs if near(t) & {'flush', 'compact', 'new sst'})
print('seconds: %d; busy machine (run queue > 2, idle 0): %d; within %d s after a flush/compaction/new table: %d'
      % (len(secs), nb, WINDOW, ne))
print('%-10s %8s %18s %18s %22s %22s' % ('max over', 'seconds', 'busy', 'not busy', 'after badger work', 'not after'))
for th in ths:
    over = [t for t in secs if load[t]['max_ms'] > th or load[t]['oldest_inflight_ms'] > th]
    b = sum(1 for t in over if busy(t))
    e = sum(1 for t in over if near(t) & {'flush', 'compact', 'new sst'})
    print('%-10s %8d %9d (%5.1f%%) %9d (%5.1f%%) %12d (%5.1f%%) %12d (%5.1f%%)' % (
        '%g ms' % th, len(over),
        b, 100.0 * b / max(nb, 1), len(over) - b, 100.0 * (len(over) - b) / max(len(secs) - nb, 1),
        e, 100.0 * e / max(ne, 1), len(over) - e, 100.0 * (len(over) - e) / max(len(secs) - ne, 1)))
print('(percent: of the seconds in that class)')
print()
print('by kind of background work in the %d s before the line (flush: a memtable handed to the flusher;' % WINDOW)
print('compact: a compaction ended; new wal: a write-ahead log segment began, which starts a checkpoint):')
for kind in ('flush', 'compact', 'new sst', 'new wal'):
    cls = [t for t in secs if kind in near(t)]
    rest = [t for t in secs if kind not in near(t)]
    row = []
    for th in (100, 250, 500):
        a = sum(1 for t in cls if load[t]['max_ms'] > th)
        b = sum(1 for t in rest if load[t]['max_ms'] > th)
        row.append('>%d ms %d/%d (%.1f%%) vs %.1f%%' % (th, a, len(cls), 100.0 * a / max(len(cls), 1), 100.0 * b / max(len(rest), 1)))
    print('  %-8s %s' % (kind, '; '.join(row)))
print()
top = ths[-2] if len(ths) > 1 else ths[-1]
print('seconds with max or in-flight age over %g ms:' % top)
print('%-8s %7s %7s %8s %8s | %3s %3s %3s %3s | %6s %6s %5s %5s | %s' % (
    'UTC', 'p50', 'p99', 'max', 'inflt', 'r', 'b', 'id', 'wa', 'cpu%', 'io%', 'pl%', 'ld%', 'bare max; badger/files within %ds' % WINDOW))
for t in secs:
    l = load[t]
    if not (l['max_ms'] > top or l['oldest_inflight_ms'] > top):
        continue
    v = vm.get(t, {})
    p = proc.get(t, {})
    print('%-8s %7.1f %7.1f %8.1f %8.1f | %3s %3s %3s %3s | %6.0f %6.0f %5.0f %5.0f | %s' % (
        fmt(t - 1), l['p50_ms'], l['p99_ms'], l['max_ms'], l['oldest_inflight_ms'],
        v.get('r', '-'), v.get('b', '-'), v.get('id', '-'), v.get('wa', '-'),
        p.get('cpu_some_us', -1), p.get('io_some_us', -1), p.get('pipelined', -1), p.get('load', -1),
        ('%.0f; ' % max(ctl[u]['max_ms'] for u in (t - 1, t, t + 1) if u in ctl)
         if any(u in ctl for u in (t - 1, t, t + 1)) else '') + (' '.join(sorted(near(t))) or '-')))
print()

# group commits from /metrics
mt = []
ing = []
cur = icur = None
for line in open(os.path.join(d, 'metrics.txt')):
    if line.startswith('# '):
        cur = {'t': sec(line[2:].strip())}
        icur = {'t': cur['t']}
        mt.append(cur)
        ing.append(icur)
        continue
    m = re.match(r'pipelined_ingest_duration_seconds_bucket\{source="[^"]*",le="([^"]+)"\} (\S+)', line)
    if m:
        icur[m.group(1)] = float(m.group(2))
    m = re.match(r'pipelined_ingest_duration_seconds_count\{source="[^"]*"\} (\S+)', line)
    if m:
        icur['count'] = float(m.group(1))
    m = re.match(r'pipelined_writer_commit_duration_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
    if m and cur is not None:
        cur[m.group(1)] = float(m.group(2))
    m = re.match(r'pipelined_writer_commit_duration_seconds_count (\S+)', line)
    if m and cur is not None:
        cur['count'] = float(m.group(1))
mt = [x for x in mt if 'count' in x]
if len(mt) > 1:
    a, b = mt[0], mt[-1]
    les = [k for k in b if k not in ('t', 'count')]
    print('group commits %s to %s: %d' % (fmt(a['t']), fmt(b['t']), b['count'] - a['count']))
    for le in ('0.01', '0.05', '0.1', '0.25', '0.5', '1', '2.5'):
        if le in b:
            print('  over %5s s: %d' % (le, (b['count'] - b[le]) - (a['count'] - a[le])))
    print('10 s windows with a commit over 0.1 s:')
    for x, y in zip(mt, mt[1:]):
        n = (y['count'] - y['0.1']) - (x['count'] - x['0.1'])
        if n > 0:
            ks = set()
            for u in range(x['t'], y['t'] + 1):
                ks.update(k for k in ev_by_sec.get(u, []) if k != 'compact-iter')
            mx = max((load[u]['max_ms'] for u in range(x['t'], y['t'] + 1) if u in load), default=0)
            rq = [vm[u]['r'] for u in range(x['t'], y['t'] + 1) if u in vm]
            idl = [vm[u]['id'] for u in range(x['t'], y['t'] + 1) if u in vm]
            print('  %s-%s: %d over 0.1 s (%d over 0.25 s, %d over 1 s); latency max %.0f ms; run queue max %s, idle min %s; %s' % (
                fmt(x['t']), fmt(y['t']), n, (y['count'] - y['0.25']) - (x['count'] - x['0.25']),
                (y['count'] - y['1']) - (x['count'] - x['1']), mx, max(rq, default='-'), min(idl, default='-'),
                ' '.join(sorted(ks)) or '-'))
ing = [x for x in ing if 'count' in x and '0.5' in x]
if len(ing) > 1:
    a, b = ing[0], ing[-1]
    print()
    print('the daemon\'s own time per request (pipelined_ingest_duration_seconds, start of the request to its answer), %s to %s: %d requests' % (
        fmt(a['t']), fmt(b['t']), b['count'] - a['count']))
    print('  ' + ', '.join('over %s s: %d' % (le, (b['count'] - b[le]) - (a['count'] - a[le])) for le in ('0.1', '0.25', '0.5', '1', '2.5', '5') if le in b))
    print('  10 s windows with one over 0.25 s:')
    for x, y in zip(ing, ing[1:]):
        n = (y['count'] - y['0.25']) - (x['count'] - x['0.25'])
        if n > 0:
            print('    %s-%s: %d over 0.25 s, %d over 0.5 s, %d over 1 s; generator max in the window %.0f ms' % (
                fmt(x['t']), fmt(y['t']), n, (y['count'] - y['0.5']) - (x['count'] - x['0.5']),
                (y['count'] - y['1']) - (x['count'] - x['1']),
                max((load[u]['max_ms'] for u in range(x['t'] + 1, y['t'] + 1) if u in load), default=0)))
    print('  seconds over 500 ms at the generator whose 10 s window has none over 0.5 s in the daemon:', end=' ')
    lst = []
    for t in secs:
        if load[t]['max_ms'] > 500:
            for x, y in zip(ing, ing[1:]):
                if x['t'] < t <= y['t'] and (y['count'] - y['0.5']) - (x['count'] - x['0.5']) == 0:
                    lst.append(fmt(t - 1))
    print(' '.join(lst) or 'none')
if any('send_lag_max_ms' in load[t] for t in secs):
    hi = [t for t in secs if load[t]['max_ms'] > 250]
    gen = [t for t in hi if load[t].get('send_lag_max_ms', 0) > load[t]['max_ms'] / 2]
    print('seconds over 250 ms: %d, of which %d with a send lag over half of it (the generator late)' % (len(hi), len(gen)))
print()
print('per 10 minutes: answered, seconds over 100 ms, worst second max, median run queue, median idle')
for s0 in range(first, last + 1, 600):
    ts = [t for t in secs if s0 <= t < s0 + 600]
    if not ts:
        continue
    rq = sorted(vm[t]['r'] for t in ts if t in vm)
    idl = sorted(vm[t]['id'] for t in ts if t in vm)
    print('  %s: %d, %d, %.0f ms, r %s, id %s' % (fmt(s0), sum(load[t]['answered'] for t in ts),
          sum(1 for t in ts if load[t]['max_ms'] > 100), max(load[t]['max_ms'] for t in ts),
          rq[len(rq) // 2] if rq else '-', idl[len(idl) // 2] if idl else '-'))

if ctl:
    both = [t for t in secs if t in ctl]
    print()
    print('against the bare handler in the same %d seconds (its max in the same second or either neighbour):' % len(both))
    for th in ths:
        over = [t for t in both if load[t]['max_ms'] > th]
        cover = [t for t in both if ctl[t]['max_ms'] > th]
        co = [t for t in over if any(u in ctl and ctl[u]['max_ms'] > th / 2 for u in (t - 1, t, t + 1))]
        print('  over %g ms: daemon %d seconds, bare %d; of the daemon\'s, %d with the bare handler over %g ms around them' % (
            th, len(over), len(cover), len(co), th / 2))
    xs = [load[t]['max_ms'] for t in both]
    ys = [ctl[t]['max_ms'] for t in both]
    n = len(xs)
    if n > 2:
        mx, my = sum(xs) / n, sum(ys) / n
        cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
        sx = sum((x - mx) ** 2 for x in xs) ** 0.5
        sy = sum((y - my) ** 2 for y in ys) ** 0.5
        print('  correlation of the seconds\' max latencies: %.2f' % (cov / (sx * sy) if sx and sy else 0))
        qs = lambda v, q: sorted(v)[min(len(v) - 1, int(q * len(v)))]
        print('  seconds\' max, median / p99 / worst: daemon %.1f / %.1f / %.1f ms, bare %.1f / %.1f / %.1f ms' % (
            qs(xs, .5), qs(xs, .99), max(xs), qs(ys, .5), qs(ys, .99), max(ys)))

# retention: the minute's run from its tick to the line that says it ended
ret = []
for line in open(os.path.join(d, 'daemon.log'), errors='replace'):
    m = re.match(r'time=\S+T(\d\d):(\d\d):(\d\d\.\d+)Z .*retention removed old events', line)
    if m:
        end = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        ret.append(end)
if ret:
    # the maintenance ticker fires at the same fraction of every minute: the
    # earliest end of a run is at most its tick plus its shortest duration
    tick = min(e % 60 for e in ret)
    inside = set()
    durs = []
    for e in ret:
        start = e - ((e - tick) % 60)
        durs.append(e - start)
        for u in range(int(start), int(e) + 2):  # the line at u covers u-1..u
            inside.add(u)
    ins = [t for t in secs if t in inside]
    out = [t for t in secs if t not in inside]
    print()
    print('retention: %d runs, each from the tick (~%.1f s past the minute) to its line: %.2f-%.2f s (median %.2f)' % (
        len(ret), tick, min(durs), max(durs), sorted(durs)[len(durs) // 2]))
    for th in ths:
        a = sum(1 for t in ins if load[t]['max_ms'] > th)
        b = sum(1 for t in out if load[t]['max_ms'] > th)
        print('  max over %g ms: %d of %d seconds during retention (%.1f%%), %d of %d outside (%.1f%%)' % (
            th, a, len(ins), 100.0 * a / max(len(ins), 1), b, len(out), 100.0 * b / max(len(out), 1)))
