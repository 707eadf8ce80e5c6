#!/usr/bin/env bash
# packaging/test-deb.sh: the release packages on this machine (Debian, as
# root; `make test-packages`, CI). Builds `make dist` twice and compares the
# checksums; installs the amd64 .deb; checks the configuration; runs the
# daemon as the unit's ExecStart says, as an unprivileged user in the unit's
# directories, and sends it the CallKaro sample, which must land in the
# archive and the SQLite table under /var/lib/pipelined; reloads it as the
# unit's ExecReload does, with a good file and one the daemon refuses (which
# must fail the reload, with the reason); verifies the unit;
# removes the package (the data stays); reinstalls over an edited
# configuration (the edit stays); runs lintian; checks the .rpm with rpm.
# Purges the package at the end. Prints "N passed, M failed"; exits 1 on any
# failure. Uses 127.0.0.1:8080 and :8081 (the packaged configuration).
# Refuses to run where pipelined is installed (unless
# PIPELINED_TEST_PACKAGES_PURGE=1): it would purge it and its event log.
set -uo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test-deb.sh: run as root" >&2; exit 2; }
# It purges the package and removes /var/lib/pipelined, before and after:
# never on a machine where pipelined is installed for real.
if { dpkg -s pipelined >/dev/null 2>&1 || [ -e /var/lib/pipelined ] || [ -e /etc/pipelined ]; } &&
	[ "${PIPELINED_TEST_PACKAGES_PURGE:-}" != 1 ]; then
	echo "test-deb.sh: pipelined is installed here (or /var/lib/pipelined or /etc/pipelined exists), and this test purges it and deletes its event log; run it on a throwaway machine, or set PIPELINED_TEST_PACKAGES_PURGE=1 to let it" >&2
	exit 2
fi

VERSION=${VERSION:-0.0.0}
work=$(mktemp -d)
pass=0 fail=0 daemon=
ok() { pass=$((pass + 1)); echo "PASS: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@" >"$work/out" 2>&1; then ok "$what"; else bad "$what"; sed 's/^/    /' "$work/out" | tail -20; fi; }
cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	dpkg --purge pipelined >/dev/null 2>&1
	rm -rf /var/lib/pipelined "$work"
}
trap cleanup EXIT

need=""
command -v lintian >/dev/null || need="$need lintian"
command -v rpm >/dev/null || need="$need rpm"
command -v sqlite3 >/dev/null || need="$need sqlite3"
command -v curl >/dev/null || need="$need curl"
if [ -n "$need" ]; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

# Reproducible: two builds, the same checksums.
check "make dist (1)" make -s dist VERSION=$VERSION
mv dist "$work/dist1"
check "make dist (2)" make -s dist VERSION=$VERSION
cp -a dist "$work/dist2"
check "two builds give identical SHA256SUMS" cmp "$work/dist1/SHA256SUMS" "$work/dist2/SHA256SUMS"
check "SHA256SUMS verifies" sh -c "cd dist && sha256sum -c --quiet SHA256SUMS"
check "SHA256SUMS covers 16 artifacts" test "$(wc -l <dist/SHA256SUMS)" = 16
deb=dist/pipelined_${VERSION}-1_amd64.deb
rpmf=dist/pipelined-${VERSION}-1.x86_64.rpm
check "tarball holds binaries, config, schema, unit, README, LICENSE" sh -c "
	tar -tzf dist/pipelined_${VERSION}_linux_amd64.tar.gz | sort >$work/tar.txt
	for f in pipelined pipelined-sink-archive pipelined-sink-sql pipelined-sink-slack pipelined-sink-http \
		pipeline.toml pipelined.service README.md LICENSE examples/callkaro/schemas/call_ended.schema.json; do
		grep -qx pipelined_${VERSION}_linux_amd64/\$f $work/tar.txt || { echo missing \$f; exit 1; }; done"

# Install.
dpkg --purge pipelined >/dev/null 2>&1; rm -rf /var/lib/pipelined
check "dpkg -i" dpkg -i "$deb"
check "files in place" bash -c 'test -x /usr/bin/pipelined && ls /usr/libexec/pipelined/pipelined-sink-{archive,sql,slack,http} &&
	test -f /etc/pipelined/pipeline.toml && test -f /etc/pipelined/schemas/call_ended.schema.json &&
	test -f /usr/lib/systemd/system/pipelined.service && test -f /usr/share/doc/pipelined/copyright'
check "conffiles" sh -c 'grep -qx /etc/pipelined/pipeline.toml /var/lib/dpkg/info/pipelined.conffiles &&
	grep -qx /etc/pipelined/schemas/call_ended.schema.json /var/lib/dpkg/info/pipelined.conffiles'
check "pipelined version says $VERSION" sh -c "/usr/bin/pipelined version | grep -F $VERSION"
check "unit names /usr/bin only" sh -c '! grep -n /usr/local /usr/lib/systemd/system/pipelined.service'
check "pipelined check --no-plugins" /usr/bin/pipelined check --no-plugins -c /etc/pipelined/pipeline.toml
check "pipelined check (plugins from /usr/libexec/pipelined)" /usr/bin/pipelined check -c /etc/pipelined/pipeline.toml

# Run it as the unit does: its ExecStart line, its WorkingDirectory and
# StateDirectory (mode 0700), an unprivileged user.
unit=/usr/lib/systemd/system/pipelined.service
execstart=$(sed -n 's/^ExecStart=//p' $unit)
wd=$(sed -n 's/^WorkingDirectory=//p' $unit)
check "ExecStart is /usr/bin/pipelined serve -c /etc/pipelined/pipeline.toml" \
	test "$execstart" = "/usr/bin/pipelined serve -c /etc/pipelined/pipeline.toml"
install -d -m 0700 -o nobody -g nogroup /var/lib/pipelined
if ss -ltn | grep -qE '127.0.0.1:808[01] '; then bad "ports 8080/8081 are taken"; fi
( cd "$wd" && exec setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs \
	env -i PATH=/usr/bin:/bin GOMEMLIMIT=400MiB $execstart ) >"$work/daemon.log" 2>&1 &
daemon=$!
up=0
for _ in $(seq 100); do curl -fs http://127.0.0.1:8081/readyz >/dev/null 2>&1 && { up=1; break; }; sleep 0.2; done
if [ $up = 1 ]; then ok "daemon ready as nobody"; else bad "daemon ready as nobody"; tail -20 "$work/daemon.log"; fi
check "POST the CallKaro sample: 2xx" curl -fsS -H 'Content-Type: application/json' \
	--data-binary @examples/callkaro/call_ended.json http://127.0.0.1:8080/hooks/callkaro
sid=$(sed -n 's/.*"callSid": *"\([^"]*\)".*/\1/p' examples/callkaro/call_ended.json | head -1)
landed() {
	for _ in $(seq 100); do
		"$@" >/dev/null 2>&1 && return 0; sleep 0.2
	done; return 1
}
check "event in the archive under /var/lib/pipelined" landed sh -c \
	"find /var/lib/pipelined/data/archive -type f -exec zcat -f {} + 2>/dev/null | grep -q $sid"
check "event in the SQLite table" landed sh -c \
	"sqlite3 -readonly /var/lib/pipelined/data/events.db \"select call_sid from events\" | grep -qx $sid"
check "state files belong to nobody" sh -c '! find /var/lib/pipelined ! -user nobody | grep .'

# Reload as the unit does: its ExecReload lines in order, as the same user,
# until one fails (as systemd runs them).
reload() {
	local line
	while read -r line; do
		( cd "$wd" && exec setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs \
			env -i PATH=/usr/bin:/bin $line ) || return 1
	done < <(sed -n 's/^ExecReload=//p' $unit)
}
check "ExecReload applies the installed configuration" reload
cp /etc/pipelined/pipeline.toml "$work/pipeline.toml.good"
sed -i 's/compress = "gzip"/compress = "gzp"/' /etc/pipelined/pipeline.toml # loads, but the archive plugin refuses it
if reload >"$work/out" 2>&1; then
	bad "ExecReload fails when the daemon refuses the file"; sed 's/^/    /' "$work/out" | tail -20
elif grep -q 'reload refused' "$work/out" && grep -q 'gzp' "$work/out"; then
	ok "ExecReload fails when the daemon refuses the file, and says why"
else
	bad "ExecReload fails when the daemon refuses the file, and says why"; sed 's/^/    /' "$work/out" | tail -20
fi
cp "$work/pipeline.toml.good" /etc/pipelined/pipeline.toml
check "POST after the refused reload: 2xx (the old configuration runs)" curl -fsS -H 'Content-Type: application/json' \
	--data-binary @examples/callkaro/call_ended.json http://127.0.0.1:8080/hooks/callkaro

kill -TERM "$daemon"; wait "$daemon"; rc=$?; daemon=
check "daemon stops on SIGTERM with status 0" test $rc = 0

if command -v systemd-analyze >/dev/null; then
	check "systemd-analyze verify" systemd-analyze verify $unit
else
	echo "SKIP: systemd-analyze verify (no systemd-analyze)"
fi

# Removal keeps the data; an edited configuration survives a reinstall.
check "dpkg -r" dpkg -r pipelined
check "binaries gone" sh -c '! test -e /usr/bin/pipelined && ! ls /usr/libexec/pipelined/pipelined-sink-* 2>/dev/null'
check "/var/lib/pipelined kept" test -d /var/lib/pipelined/data/archive
check "config kept after dpkg -r" test -f /etc/pipelined/pipeline.toml
echo '# edited by test-deb.sh' >>/etc/pipelined/pipeline.toml
check "reinstall" dpkg -i --force-confold "$deb"
check "edited config kept" grep -qx '# edited by test-deb.sh' /etc/pipelined/pipeline.toml

# lintian: no errors (accepted warnings: packaging/README.md).
lintian --tag-display-limit 0 "$deb" >"$work/lintian" 2>&1
sed 's/^/    lintian: /' "$work/lintian"
check "lintian has no errors" sh -c "! grep -q '^E:' $work/lintian"

# The .rpm: file list and scripts.
rpm -qlp "$rpmf" >"$work/rpmfiles" 2>/dev/null
check "rpm -qlp lists the files" sh -c "for f in /usr/bin/pipelined /usr/libexec/pipelined/pipelined-sink-archive \
	/usr/libexec/pipelined/pipelined-sink-sql /usr/libexec/pipelined/pipelined-sink-slack /usr/libexec/pipelined/pipelined-sink-http \
	/etc/pipelined/pipeline.toml /etc/pipelined/schemas/call_ended.schema.json /usr/lib/systemd/system/pipelined.service \
	/usr/share/doc/pipelined/README.md; do grep -qx \$f $work/rpmfiles || { echo missing \$f; exit 1; }; done"
check "rpm config files are noreplace" sh -c "rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' $rpmf 2>/dev/null |
	grep -E '^c.*n.* /etc/pipelined/(pipeline.toml|schemas/call_ended.schema.json)$' | wc -l | grep -qx 2"
rpm -qp --scripts "$rpmf" >"$work/rpmscripts" 2>/dev/null
check "rpm scripts reload systemd and stop on removal, never touch /var/lib" sh -c "
	grep -q 'systemctl daemon-reload' $work/rpmscripts && grep -q 'systemctl stop pipelined' $work/rpmscripts &&
	! grep -q 'rm .*/var/lib' $work/rpmscripts"

check "dpkg --purge" dpkg --purge pipelined
echo "$pass passed, $fail failed"
[ $fail = 0 ]
