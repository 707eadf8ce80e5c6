#!/bin/sh
# Before removal (not before an upgrade): stop and disable the service and
# its socket units (socket activation, opt-in: pipelined.socket,
# pipelined-admin.socket). The sockets stop first: while one listens, a
# connection would start the service again. Disabling needs no running
# systemd (systemctl then edits the symlinks itself: a container, an image
# being built), so that no .wants link is left to a removed unit.
# /var/lib/pipelined (the event log, the archive) is never touched.
set -e
case "$1" in
	remove|0) # dpkg: remove; rpm: 0 packages left after this one
		if [ -d /run/systemd/system ]; then
			systemctl stop pipelined.socket pipelined-admin.socket >/dev/null 2>&1 || true
			systemctl stop pipelined.service >/dev/null 2>&1 || true
		fi
		if command -v systemctl >/dev/null 2>&1; then
			for unit in pipelined.socket pipelined-admin.socket pipelined.service; do
				systemctl disable "$unit" >/dev/null 2>&1 || true
			done
		fi
		;;
esac
exit 0
