#!/bin/sh
# After install or upgrade: make systemd see the (new) units. A fresh
# install is neither enabled nor started, nor are the socket units
# (pipelined.socket, pipelined-admin.socket: socket activation is opt-in):
# the configuration needs a look first. An upgrade restarts a running daemon
# (try-restart: only if it runs), so that the daemon and the plugins it
# starts are of one version; its events wait in the log meanwhile. Only the
# service restarts, never its sockets: with socket activation systemd keeps
# listening while the old process drains and the new one starts, and a
# webhook sent meanwhile waits in the backlog instead of being refused
# (restarting a socket would close it, and with the drop-in's Requires=
# restart the service anyway). A socket that is active while the service
# is not starts the new binary at its next connection.
set -e
upgrade=false
case "${1:-}" in
configure) [ -n "${2:-}" ] && upgrade=true ;; # deb: configure <old version>
[2-9] | [1-9][0-9]*) upgrade=true ;;          # rpm: how many versions are installed
esac
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	if $upgrade; then
		systemctl try-restart pipelined.service >/dev/null 2>&1 || true
	fi
fi
exit 0
