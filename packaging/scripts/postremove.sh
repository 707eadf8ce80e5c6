#!/bin/sh
# After removal: systemd forgets the units. /var/lib/pipelined is kept.
# On purge (dpkg), a link that still enables one of the package's units
# and now points at nothing (the removal's disable could not run: no
# systemctl then) goes too, so that nothing is left enabled. Links to a
# unit that still exists (an administrator's own in /etc/systemd/system)
# and the administrator's drop-ins (pipelined.service.d/) are kept.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "${1:-}" = purge ]; then
	for unit in pipelined.service pipelined.socket pipelined-admin.socket; do
		for link in /etc/systemd/system/*.wants/"$unit" /etc/systemd/system/*.requires/"$unit"; do
			if [ -L "$link" ] && [ ! -e "$link" ]; then
				rm -f "$link"
			fi
		done
	done
fi
exit 0
