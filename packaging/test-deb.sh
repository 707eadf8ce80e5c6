#!/usr/bin/env bash
# packaging/test-deb.sh: the release packages on this machine (Debian, as
# root; `make test-packages`, CI). Builds `make dist` twice and compares the
# checksums; installs the amd64 .deb; checks the configuration; runs the
# daemon as the unit's ExecStart says, as an unprivileged user in the unit's
# directories, and sends it the CallKaro sample, which must land in the
# archive and the SQLite table under /var/lib/pipelined; reloads it as the
# unit's ExecReload does, with a good file and one the daemon refuses (which
# must fail the reload, with the reason); runs it again on sockets passed
# as the packaged socket units say (socket activation, by
# systemd-socket-activate); verifies the units; turns socket activation on
# as the docs' package steps do, as far as that goes without a running
# systemd (enable links, the drop-in); removes the package (the data stays,
# no unit stays enabled); reinstalls over an edited configuration (the edit
# stays); runs the maintainer scripts as if systemd ran, with a systemctl
# that records its calls; runs lintian; checks the .rpm with rpm. Purges the
# package at the end (no unit left enabled). Prints "N passed, M failed";
# exits 1 on any failure. Uses 127.0.0.1:8080 and :8081 (the packaged
# configuration).
#
# Without systemd as PID 1 (a container) nothing is started or stopped by
# systemd: the scripts' stop and try-restart are checked only with the
# recording systemctl; what is real is the units (systemd-analyze verify),
# the enable links (systemctl edits them itself then) and the daemon on
# inherited sockets.
#
# Refuses to run where pipelined is installed (unless
# PIPELINED_TEST_PACKAGES_PURGE=1): it would purge it and its event log,
# and remove the socket activation drop-in it installs.
set -uo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test-deb.sh: run as root" >&2; exit 2; }
# It purges the package and removes /var/lib/pipelined, before and after:
# never on a machine where pipelined is installed for real.
dropin=/etc/systemd/system/pipelined.service.d/socket-activation.conf
if { dpkg -s pipelined >/dev/null 2>&1 || [ -e /var/lib/pipelined ] || [ -e /etc/pipelined ] || [ -e $dropin ]; } &&
	[ "${PIPELINED_TEST_PACKAGES_PURGE:-}" != 1 ]; then
	echo "test-deb.sh: pipelined is installed here (or /var/lib/pipelined, /etc/pipelined or $dropin exists), and this test purges it and deletes its event log; run it on a throwaway machine, or set PIPELINED_TEST_PACKAGES_PURGE=1 to let it" >&2
	exit 2
fi

VERSION=${VERSION:-0.0.0}
work=$(mktemp -d)
pass=0 fail=0 daemon='' sapid=''
ok() { pass=$((pass + 1)); echo "PASS: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@" >"$work/out" 2>&1; then ok "$what"; else bad "$what"; sed 's/^/    /' "$work/out" | tail -20; fi; }
cleanup() {
	[ -n "$sapid" ] && kill "$sapid" 2>/dev/null
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	dpkg --purge pipelined >/dev/null 2>&1
	rm -f $dropin; rmdir "$(dirname $dropin)" 2>/dev/null
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
check "tarball holds binaries, config, schema, units, README, LICENSE" sh -c "
	tar -tzf dist/pipelined_${VERSION}_linux_amd64.tar.gz | sort >$work/tar.txt
	for f in pipelined pipelined-sink-archive pipelined-sink-sql pipelined-sink-slack pipelined-sink-http \
		pipeline.toml pipelined.service pipelined.socket pipelined-admin.socket socket-activation.conf \
		README.md LICENSE examples/callkaro/schemas/call_ended.schema.json; do
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

# Socket activation is shipped, opt-in: both socket units beside the service,
# the drop-in as an example; nothing enabled; the service names no socket, so
# it runs alone (binds its listeners) while the sockets are not enabled.
sock=/usr/lib/systemd/system/pipelined.socket
asock=/usr/lib/systemd/system/pipelined-admin.socket
example=/usr/share/doc/pipelined/examples/socket-activation.conf
check ".deb holds the socket units and the drop-in example" sh -c "dpkg-deb -c $deb | awk '{print \$6}' >$work/debfiles &&
	for f in .$sock .$asock .$example; do grep -qx \$f $work/debfiles || { echo missing \$f; exit 1; }; done"
# The links that enable one of the package's units (what systemctl enable
# makes), printed; and whether none is enabled, by them and by systemctl
# (which reads the unit files itself when systemd does not run).
enabled() {
	find /etc/systemd/system \( -path '*.wants/*' -o -path '*.requires/*' \) \
		\( -name pipelined.service -o -name pipelined.socket -o -name pipelined-admin.socket \) | grep .
}
none_enabled() {
	! enabled || return 1
	! { command -v systemctl >/dev/null && systemctl is-enabled pipelined.socket pipelined-admin.socket pipelined.service; }
}
check "after install no unit is enabled (socket activation is opt-in)" none_enabled
check "the service names no socket and requires nothing; both socket units activate it" sh -c "
	! grep -nE '^[^#]*[.]socket|^(Requires|Requisite|BindsTo)=' /usr/lib/systemd/system/pipelined.service &&
	grep -qx Service=pipelined.service $sock && grep -qx Service=pipelined.service $asock"
listen_of() { sed -n "/^\[$1\]/,/^\[/s/^listen = \"\(.*\)\"$/\1/p" /etc/pipelined/pipeline.toml; }
stream_of() { sed -n 's/^ListenStream=//p' "$1"; }
same_listen() { # the admin's must match (the commands find the daemon there); the ingest's for clarity
	local s1 l1 s2 l2
	s1=$(stream_of $sock) l1=$(listen_of server) s2=$(stream_of $asock) l2=$(listen_of admin)
	echo "pipelined.socket $s1, [server] listen $l1; pipelined-admin.socket $s2, [admin] listen $l2"
	[ -n "$s1" ] && [ "$s1" = "$l1" ] && [ -n "$s2" ] && [ "$s2" = "$l2" ]
}
check "the socket units listen at the packaged [server] listen and [admin] listen" same_listen

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

# Socket activation, as systemd would do it with the packaged socket units:
# their ListenStream= and FileDescriptorName=, in that order, passed by
# systemd-socket-activate (which binds them and starts the command at the
# first connection, here the readiness probe, which waits in the backlog).
# The daemon must take both sockets by name, say so, and serve; no warning.
if command -v systemd-socket-activate >/dev/null; then
	names=$(sed -n 's/^FileDescriptorName=//p' $sock):$(sed -n 's/^FileDescriptorName=//p' $asock)
	( cd "$wd" && exec systemd-socket-activate -l "$(stream_of $sock)" -l "$(stream_of $asock)" --fdname="$names" \
		sh -c 'echo $$ >"$0"; exec setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs \
			env -i PATH=/usr/bin:/bin GOMEMLIMIT=400MiB LISTEN_PID=$$ LISTEN_FDS=$LISTEN_FDS LISTEN_FDNAMES=$LISTEN_FDNAMES "$@"' \
		"$work/sa.pid" $execstart ) >"$work/daemon-sa.log" 2>&1 &
	daemon=$!
	up=0
	for _ in $(seq 100); do curl -fs "http://$(stream_of $asock)/readyz" >/dev/null 2>&1 && { up=1; break; }; sleep 0.2; done
	sapid=$(cat "$work/sa.pid" 2>/dev/null)
	if [ $up = 1 ]; then ok "socket-activated daemon ready (sockets $names)"; else bad "socket-activated daemon ready (sockets $names)"; tail -20 "$work/daemon-sa.log"; fi
	check "it says it serves the sockets systemd passed, and warns of nothing" sh -c "
		grep 'listening on the sockets systemd passed' $work/daemon-sa.log && ! grep -E 'level=(WARN|ERROR)' $work/daemon-sa.log"
	check "POST the CallKaro sample to the ingest socket: 2xx" curl -fsS -H 'Content-Type: application/json' \
		--data-binary @examples/callkaro/call_ended.json "http://$(stream_of $sock)/hooks/callkaro"
	[ -n "$sapid" ] && kill -TERM "$sapid"; wait "$daemon"; rc=$?; daemon='' sapid=''
	check "socket-activated daemon stops on SIGTERM with status 0" test $rc = 0
else
	echo "SKIP: the daemon on the socket units' sockets (no systemd-socket-activate)"
fi

if command -v systemd-analyze >/dev/null; then
	check "systemd-analyze verify" systemd-analyze verify $unit
else
	echo "SKIP: systemd-analyze verify (no systemd-analyze)"
fi

# Socket activation turned on as the docs' package steps do, as far as that
# goes here: the drop-in copied from the example, and the enable links
# (systemctl makes them itself when systemd does not run; --now would need
# a running systemd). Then the units as systemd would load them: the
# service with the drop-in, whose Requires= must find both sockets. verify
# exits 0 on unknown keys: any output fails.
check "the shipped docs give this drop-in step and the enable --now" sh -c "
	for d in /usr/share/doc/pipelined/systemd.md /usr/share/doc/pipelined/README.md; do
		grep -qF 'sudo install -D -m 0644 $example $dropin' \$d &&
		grep -qF 'sudo systemctl enable --now pipelined.socket pipelined-admin.socket' \$d || { echo \$d; exit 1; }; done"
check "install the drop-in from the example" install -D -m 0644 $example $dropin
if [ -d /run/systemd/system ]; then
	echo "NOTE: systemd runs here: the units are enabled, not started"
else
	echo "NOTE: systemd is not PID 1 here: nothing is started or stopped; enable/disable edit the links"
fi
if command -v systemctl >/dev/null; then
	check "systemctl enable pipelined.socket pipelined-admin.socket pipelined.service" \
		systemctl enable pipelined.socket pipelined-admin.socket pipelined.service
	check "all three enabled (the premise of the removal's checks)" sh -c "
		test \"\$(systemctl is-enabled pipelined.socket pipelined-admin.socket pipelined.service | tr '\n' ' ')\" = 'enabled enabled enabled '"
else
	echo "SKIP: systemctl enable (no systemctl)"
fi
if command -v systemd-analyze >/dev/null; then
	check "systemd-analyze verify the socket units and the service with the drop-in, quietly" sh -c "
		out=\$(systemd-analyze verify $sock $asock $unit 2>&1); echo \"\$out\"; test -z \"\$out\""
fi

# Removal keeps the data; an edited configuration survives a reinstall.
check "dpkg -r" dpkg -r pipelined
check "binaries gone" sh -c '! test -e /usr/bin/pipelined && ! ls /usr/libexec/pipelined/pipelined-sink-* 2>/dev/null'
check "/var/lib/pipelined kept" test -d /var/lib/pipelined/data/archive
check "config kept after dpkg -r" test -f /etc/pipelined/pipeline.toml
check "dpkg -r leaves no unit enabled (sockets and service disabled)" none_enabled
check "the administrator's drop-in kept" test -f $dropin
echo '# edited by test-deb.sh' >>/etc/pipelined/pipeline.toml
check "reinstall" dpkg -i --force-confold "$deb"
check "edited config kept" grep -qx '# edited by test-deb.sh' /etc/pipelined/pipeline.toml
check "after reinstall no unit is enabled" none_enabled

# The maintainer scripts as if systemd ran (/run/systemd/system in a mount
# namespace of their own), with a systemctl that records its calls: what
# they start, stop and restart cannot be seen otherwise here. The .rpm
# carries the same scripts; rpm passes counts instead of words.
dpkg-deb -e "$deb" "$work/control"
mkdir -p "$work/stub"
printf '#!/bin/sh\necho "$*" >>"$SYSTEMCTL_LOG"\n' >"$work/stub/systemctl"
chmod +x "$work/stub/systemctl"
export SYSTEMCTL_LOG=$work/calls
calls() { # SCRIPT ARG...: its systemctl calls, one line joined by "; "
	: >"$work/calls"
	unshare -m sh -c '{ mount -t tmpfs tmpfs /run/systemd 2>/dev/null || mount -t tmpfs tmpfs /run; } &&
		mkdir -p /run/systemd/system && PATH=$0:$PATH exec sh "$@"' "$work/stub" "$@" >/dev/null 2>&1 || echo "exit $?"
	paste -s -d ';' "$work/calls" | sed 's/;/; /g'
}
script_calls() { # WANT SCRIPT ARG...
	local want=$1 got; shift
	got=$(calls "$@")
	echo "$* -> $got"; [ "$got" = "$want" ]
}
if unshare -m true 2>/dev/null; then
	removal="stop pipelined.socket pipelined-admin.socket; stop pipelined.service; disable pipelined.socket; disable pipelined-admin.socket; disable pipelined.service"
	check "prerm remove: stops the sockets, then the service; disables all three" script_calls "$removal" "$work/control/prerm" remove
	check "prerm upgrade: nothing" script_calls "" "$work/control/prerm" upgrade 0.0.1
	check "postinst configure (install): daemon-reload only, nothing enabled or started" script_calls "daemon-reload" "$work/control/postinst" configure
	check "postinst configure OLD (upgrade): try-restart the service, never a socket" \
		script_calls "daemon-reload; try-restart pipelined.service" "$work/control/postinst" configure 0.0.1
	check "postrm remove: daemon-reload" script_calls "daemon-reload" "$work/control/postrm" remove
	rpm_preun() { script_calls "$removal" "$work/control/prerm" 0 && script_calls "" "$work/control/prerm" 1; }
	rpm_post() {
		script_calls "daemon-reload" "$work/control/postinst" 1 &&
			script_calls "daemon-reload; try-restart pipelined.service" "$work/control/postinst" 2
	}
	check "rpm: %preun 0 removes as prerm remove does; %preun 1 (upgrade) nothing" rpm_preun
	check "rpm: %post 1 (install) daemon-reload only; %post 2 (upgrade) try-restart the service only" rpm_post
else
	echo "SKIP: the maintainer scripts as if systemd ran (unshare -m not permitted)"
fi

# lintian: no errors (accepted warnings: packaging/README.md).
lintian --tag-display-limit 0 "$deb" >"$work/lintian" 2>&1
sed 's/^/    lintian: /' "$work/lintian"
check "lintian has no errors" sh -c "! grep -q '^E:' $work/lintian"

# The .rpm: file list and scripts.
rpm -qlp "$rpmf" >"$work/rpmfiles" 2>/dev/null
check "rpm -qlp lists the files" sh -c "for f in /usr/bin/pipelined /usr/libexec/pipelined/pipelined-sink-archive \
	/usr/libexec/pipelined/pipelined-sink-sql /usr/libexec/pipelined/pipelined-sink-slack /usr/libexec/pipelined/pipelined-sink-http \
	/etc/pipelined/pipeline.toml /etc/pipelined/schemas/call_ended.schema.json /usr/lib/systemd/system/pipelined.service \
	/usr/share/doc/pipelined/README.md $sock $asock $example; do grep -qx \$f $work/rpmfiles || { echo missing \$f; exit 1; }; done"
check "rpm config files are noreplace" sh -c "rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' $rpmf 2>/dev/null |
	grep -E '^c.*n.* /etc/pipelined/(pipeline.toml|schemas/call_ended.schema.json)$' | wc -l | grep -qx 2"
rpm -qp --scripts "$rpmf" >"$work/rpmscripts" 2>/dev/null
check "rpm scripts reload systemd, stop the sockets and the service on removal, never touch /var/lib" sh -c "
	grep -q 'systemctl daemon-reload' $work/rpmscripts && grep -q 'systemctl stop pipelined.service' $work/rpmscripts &&
	grep -q 'systemctl stop pipelined.socket pipelined-admin.socket' $work/rpmscripts &&
	grep -q 'systemctl disable' $work/rpmscripts && ! grep -q 'rm .*/var/lib' $work/rpmscripts"
# nFPM puts the same files in both packages: the .rpm's scriptlets are the .deb's scripts.
same_scripts() {
	local deb rpm
	for pair in postinst:postinstall prerm:preuninstall postrm:postuninstall; do
		deb=${pair%%:*} rpm=${pair#*:}
		awk -v h="$rpm scriptlet" 'index($0, h) == 1 { on = 1; next } / scriptlet \(using / { on = 0 } on' \
			"$work/rpmscripts" | sed '${/^$/d}' | diff - "$work/control/$deb" || { echo "rpm $rpm differs from deb $deb"; return 1; }
	done
}
check "the .rpm's scriptlets are the .deb's maintainer scripts" same_scripts

# Purge: no unit left enabled. The removal disables them (above); a link it
# could not take away (no systemctl then) is made here as it would have been
# left, and purge must remove it. The drop-in is the administrator's and stays.
if command -v systemctl >/dev/null; then
	check "systemctl enable (again)" systemctl enable pipelined.socket pipelined-admin.socket pipelined.service
fi
check "dpkg -r (again)" dpkg -r pipelined
mkdir -p /etc/systemd/system/sockets.target.wants
ln -sfn $asock /etc/systemd/system/sockets.target.wants/pipelined-admin.socket
check "a dangling enable link left as a removal without systemctl would" sh -c "
	test -L /etc/systemd/system/sockets.target.wants/pipelined-admin.socket && ! test -e $asock"
check "dpkg --purge" dpkg --purge pipelined
check "purge leaves no unit enabled (the dangling link removed)" none_enabled
check "the administrator's drop-in kept after purge" test -f $dropin
echo "$pass passed, $fail failed"
[ $fail = 0 ]
