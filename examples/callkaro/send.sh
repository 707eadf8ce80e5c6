#!/bin/sh
# Sends a CallKaro call_ended event to a running pipelined.
# usage: examples/callkaro/send.sh [payload.json] [url]
# With CALLKARO_WEBHOOK_TOKEN set (a source with auth type url-token), the
# token goes in the URL as CallKaro sends it: ?token=$CALLKARO_WEBHOOK_TOKEN
# (hex or base64url tokens need no escaping).
set -eu
here=$(dirname "$0")
payload=${1:-$here/call_ended.json}
url=${2:-http://localhost:8080/hooks/callkaro}
if [ -n "${CALLKARO_WEBHOOK_TOKEN:-}" ]; then
	case $url in
	*\?*) url="$url&token=$CALLKARO_WEBHOOK_TOKEN" ;;
	*) url="$url?token=$CALLKARO_WEBHOOK_TOKEN" ;;
	esac
fi
curl -sS -H 'Content-Type: application/json' --data @"$payload" "$url"
