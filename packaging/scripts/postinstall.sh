#!/bin/sh
# After install or upgrade: make systemd see the (new) unit. A fresh install
# is neither enabled nor started: the configuration needs a look first. An
# upgrade restarts a running daemon (try-restart: only if it runs), so that
# the daemon and the plugins it starts are of one version; its events wait
# in the log meanwhile.
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
