#!/bin/sh
# Health checks of the mediabus image (installed as /usr/local/bin/mediabus-healthcheck), used by
# docker-compose.yml. Exit 0: healthy; 1: not.
#
#   mediabus-healthcheck http URL   URL answers 2xx within 3 s. The bridge's /readyz proves the
#                                   bridge serves HTTP, holds its NATS connection and that the
#                                   media and auth services answer $SRV.PING through it.
#   mediabus-healthcheck nats       this container holds an ESTABLISHED TCP connection to the NATS
#                                   port of MEDIABUS__NATS__URL (default 4222). For the workers,
#                                   which serve no HTTP: it proves the process is up and connected
#                                   to a NATS node (the client pings the server and drops a dead
#                                   connection within its ping interval), not that a handler
#                                   answers; a stuck worker still passes. The bridges' /readyz
#                                   covers that, per service rather than per container.
set -eu

case "${1:-}" in
http)
  # Docker reads exit 1 as unhealthy (2 is reserved): fold curl's own codes into 1.
  curl --fail --silent --show-error --output /dev/null --max-time 3 "${2:?usage: mediabus-healthcheck http URL}" || exit 1
  ;;
nats)
  url=${MEDIABUS__NATS__URL:-nats://127.0.0.1:4222}
  port=${url##*:}
  case $port in '' | *[!0-9]*) port=4222 ;; esac
  # /proc/net/tcp{,6}: rem_address is HEXIP:HEXPORT, st 01 is ESTABLISHED. Containers have their
  # own network namespace, so these are this container's sockets only.
  hex=$(printf '%04X' "$port")
  if awk -v p=":$hex" 'FNR > 1 && substr($3, length($3) - 4) == p && $4 == "01" { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
    exit 0
  fi
  echo "no established connection to NATS port $port" >&2
  exit 1
  ;;
*)
  echo "usage: mediabus-healthcheck http URL | nats" >&2
  exit 2
  ;;
esac
