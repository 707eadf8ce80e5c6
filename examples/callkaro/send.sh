#!/bin/sh
# Sends a CallKaro call_ended event to a running pipelined.
# usage: examples/callkaro/send.sh [payload.json] [url]
set -eu
here=$(dirname "$0")
payload=${1:-$here/call_ended.json}
url=${2:-http://localhost:8080/hooks/callkaro}
curl -sS -H 'Content-Type: application/json' --data @"$payload" "$url"
