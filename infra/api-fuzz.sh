#!/usr/bin/env bash
# schemathesis against the dev server's own OpenAPI document: every operation,
# generated and mutated inputs, for FUZZ_SECONDS (default 120). Fails on any response
# >= 500. The dev server runs on 127.0.0.1:$FUZZ_PORT (default 3077) with the
# embedded backend and is stopped afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
port=${FUZZ_PORT:-3077}
seconds=${FUZZ_SECONDS:-120}
mkdir -p "$here/.run"
cargo build --locked --quiet -p herald-local --bin herald-local
PORT=$port RUST_LOG=error "${CARGO_TARGET_DIR:-$here/target}/debug/herald-local" > "$here/.run/api-fuzz-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/openapi.yaml" && break
  sleep 0.2
done
"$here/.venv/bin/st" run "http://127.0.0.1:$port/openapi.yaml" \
  --checks not_a_server_error --max-time "$seconds" --workers 2
