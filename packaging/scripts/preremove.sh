#!/bin/sh
# Before removal (not before an upgrade): stop and disable the service.
# /var/lib/pipelined (the event log, the archive) is never touched.
set -e
case "$1" in
	remove|0) # dpkg: remove; rpm: 0 packages left after this one
		if [ -d /run/systemd/system ]; then
			systemctl stop pipelined.service >/dev/null 2>&1 || true
			systemctl disable pipelined.service >/dev/null 2>&1 || true
		fi
		;;
esac
exit 0
