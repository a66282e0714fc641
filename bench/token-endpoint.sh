#!/usr/bin/env bash
# Measures client_credentials issuance at the token endpoint: throughput and latency
# percentiles with wrk on loopback, Moat pinned to one core and wrk to the other.
# Not part of the test suite. Usage: bench/token-endpoint.sh [DURATION] [CONNECTIONS]
# Env: MOAT_BENCH_DATABASE (default: a fresh SQLite file), MOAT_SIGNING_ALG (default ES256).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-20s}
connections=${2:-32}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }

cargo build --release --locked -p moat-server --bin moat >/dev/null
moat=target/release/moat
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; wait "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
db=${MOAT_BENCH_DATABASE:-sqlite://$work/moat.db}
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

echo "Moat $(git rev-parse --short HEAD), backend ${db%%:*}, alg ${MOAT_SIGNING_ALG:-ES256}, $(nproc) cores, $(uname -r)"
echo "wrk -t1 -c$connections -d$duration --latency (client_credentials, Basic auth)"
taskset -c 1 wrk -t1 -c"$connections" -d"$duration" --latency -s "$work/cc.lua" "$url"
echo
echo "Moat resident memory after the run: $(ps -o rss= -p $pid | awk '{printf "%.1f MiB", $1/1024}')"
