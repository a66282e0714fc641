#!/usr/bin/env bash
# Measures client_credentials issuance at the token endpoint: throughput and latency
# percentiles with wrk on loopback, Moat pinned to one core and wrk to the other.
# Not part of the test suite. Usage: bench/token-endpoint.sh [DURATION] [CONNECTIONS]
# Env: MOAT_BENCH_DATABASE  default: a fresh SQLite file. A postgres://… URL names a server
#                           (and database); the run works in a fresh schema
#                           moat_bench_<unix time>_<random> there, created and dropped with psql.
#      MOAT_MASTER_KEY      for PostgreSQL; default: a throw-away key for this run.
#      MOAT_SIGNING_ALG     default ES256.  MOAT_DB_MAX_CONNECTIONS  default 8 (Moat's default).
#      CARGO_TARGET_DIR     where the release build goes (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-20s}
connections=${2:-32}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }

cargo build --release --locked -p moat-server --bin moat >/dev/null
moat=${CARGO_TARGET_DIR:-target}/release/moat
work=$(mktemp -d)
schema=
cleanup() {
  kill "${pid:-}" 2>/dev/null || true
  wait "${pid:-}" 2>/dev/null || true
  if [ -n "$schema" ]; then PGOPTIONS=--client-min-messages=warning psql -q "$server" -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE" >/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

db=${MOAT_BENCH_DATABASE:-sqlite://$work/moat.db}
case "$db" in
  postgres://* | postgresql://*)
    command -v psql >/dev/null || { echo "psql (postgresql-client) is required to create the scratch schema" >&2; exit 1; }
    server=$db
    schema="moat_bench_$(date +%s)_$(openssl rand -hex 4)"
    psql -q -v ON_ERROR_STOP=1 "$server" -c "CREATE SCHEMA \"$schema\"" >/dev/null
    case "$server" in *\?*) sep='&' ;; *) sep='?' ;; esac
    db="$server${sep}options=-c%20search_path%3D$schema"
    # Several instances would share one key; this single one just needs an explicit key.
    export MOAT_MASTER_KEY=${MOAT_MASTER_KEY:-$(openssl rand -base64 32)}
    ;;
esac
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
export MOAT_LOG=warn

res=$("$moat" --database "$db" --public-url "$base" resource create --name Bench \
  --server-url "http://127.0.0.1:1/mcp-$port" --scope bench:read --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
creds=$("$moat" --database "$db" --public-url "$base" client create --resource "$res" --name bench-agent \
  --grant client-credentials --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["client_id"]+":"+d["client_secret"])')

taskset -c 0 "$moat" --database "$db" --public-url "$base" serve --listen "127.0.0.1:$port" &
pid=$!
for _ in $(seq 100); do curl -fs "$base/healthz" >/dev/null && break; sleep 0.1; done

cat > "$work/cc.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=bench%3Aread"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf '%s' "$creds" | base64 -w0)"
LUA
url="$base/resources/$res/oauth/token"
curl -fs -u "$creds" -d grant_type=client_credentials "$url" >/dev/null || { echo "token request failed" >&2; exit 1; }

backend=${db%%:*}
[ -n "$schema" ] && backend="postgres $(psql -tA "$server" -c 'SHOW server_version' 2>/dev/null || true) (same machine, not pinned), pool ${MOAT_DB_MAX_CONNECTIONS:-8}"
echo "Moat $(git rev-parse --short HEAD), backend $backend, alg ${MOAT_SIGNING_ALG:-ES256}, $(nproc) cores, $(uname -r)"
echo "wrk -t1 -c$connections -d$duration --latency (client_credentials, Basic auth)"
taskset -c 1 wrk -t1 -c"$connections" -d"$duration" --latency -s "$work/cc.lua" "$url"
echo
echo "Moat resident memory after the run: $(ps -o rss= -p $pid | awk '{printf "%.1f MiB", $1/1024}')"
