#!/bin/sh
# Writes the env file compose/compose.yaml needs, with fresh random secrets.
#   sh compose/gen-env.sh [FILE]      (FILE defaults to compose/.env, which compose reads)
# An existing file is never overwritten: Milvus and Grafana keep the first password they
# were started with, so new secrets would lock the services out of existing volumes.
set -eu

out=${1:-$(dirname "$0")/.env}
if [ -e "$out" ]; then
  echo "$out already exists; keeping it. Remove it (and the volumes) to start afresh." >&2
  exit 1
fi

# 24 random bytes as hex: safe in a URL, a Milvus token and a shell word alike.
secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

umask 077
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" <<END
# Secrets for compose/compose.yaml, made by compose/gen-env.sh. Never commit this file.
QUARRY_REDIS_PASSWORD=$(secret)
QUARRY_MILVUS_ROOT_PASSWORD=$(secret)
QUARRY_MINIO_USER=quarry
QUARRY_MINIO_PASSWORD=$(secret)
QUARRY_GRAFANA_USER=quarry
QUARRY_GRAFANA_PASSWORD=$(secret)
END
mv "$tmp" "$out"
echo "wrote $out"
