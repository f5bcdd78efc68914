#!/bin/sh
# One-shot `nats-streams` of docker-compose.yml (natsio/nats-box image; the `nats` CLI reads
# NATS_URL, NATS_USER, NATS_PASSWORD). The services create their JetStream streams at start-up
# with the default of one replica; this raises each to STREAM_REPLICAS (3) once it exists, so
# the stream survives the loss of a NATS node (RAFT over three nodes). Editing the replicas of a
# live stream is supported by JetStream; the stream keeps its messages and its consumers.
# Idempotent: a stream already at STREAM_REPLICAS is left alone.
#   STREAMS           required streams: waited for (WAIT_SECS), the job fails without them
#   OPTIONAL_STREAMS  raised if they exist now, skipped otherwise (none by default)
set -eu
want=${STREAM_REPLICAS:-3}
deadline=$(($(date +%s) + ${WAIT_SECS:-180}))

raise() {
  info=$(nats stream info "$1" --json) || return 1
  if printf '%s' "$info" | grep -Eq "\"num_replicas\": *$want[,}[:space:]]"; then
    echo "nats-streams: $1 has $want replicas"
  else
    nats stream edit "$1" --replicas "$want" --force >/dev/null
    echo "nats-streams: $1 raised to $want replicas"
  fi
}

for stream in ${STREAMS:-MEDIA_EVENTS MEDIA_JOBS MEDIA_JOBS_DLQ MEDIA_JOBS_EXHAUSTED}; do
  until nats stream info "$stream" --json >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "nats-streams: stream $stream does not exist" >&2; exit 1; }
    sleep 2
  done
  raise "$stream"
done
for stream in ${OPTIONAL_STREAMS-}; do
  if nats stream info "$stream" --json >/dev/null 2>&1; then
    raise "$stream"
  else
    echo "nats-streams: $stream does not exist yet (rerun: docker compose up nats-streams)"
  fi
done
