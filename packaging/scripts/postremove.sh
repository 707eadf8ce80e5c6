#!/bin/sh
# After removal: systemd forgets the unit. /var/lib/pipelined is kept.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
