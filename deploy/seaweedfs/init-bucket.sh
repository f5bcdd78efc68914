#!/bin/sh
# One-shot `s3-init` of docker-compose.yml (chrislusf/seaweedfs image): creates the bucket
# S3_BUCKET unless it exists, through `weed shell` on the master (the filer, not the S3 API, so no
# admin key is needed). The services' key itself comes from s3.json (compose config
# `seaweedfs_s3`), allowed on this bucket only. Idempotent; exits non-zero if the bucket is not
# listed at the end, or the master does not answer within WAIT_SECS.
set -eu
: "${S3_BUCKET:?}"
master=${WEED_MASTER:-seaweedfs:9333}
deadline=$(($(date +%s) + ${WAIT_SECS:-120}))

# `weed shell` waits for ever for an absent master: bound every call.
shell() { timeout 30 weed shell -master="$master"; }
buckets() { echo "s3.bucket.list" | shell 2>/dev/null; }
has_bucket() { buckets | awk -v b="$S3_BUCKET" '$1 == b { found = 1 } END { exit !found }'; }

until echo "cluster.check" | shell >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "s3-init: master $master does not answer" >&2; exit 1; }
  sleep 1
done
if has_bucket; then
  echo "s3-init: bucket $S3_BUCKET exists"
else
  echo "s3.bucket.create -name $S3_BUCKET" | shell
fi
has_bucket || { echo "s3-init: bucket $S3_BUCKET missing after create" >&2; exit 1; }
echo "s3-init: bucket $S3_BUCKET ready"
