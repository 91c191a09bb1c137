#!/usr/bin/env bash
# The product tour (`make demo`): starts moto and ActiveMQ on loopback, a dev server
# like `make run`'s (embedded backend) whose customer-SQS calls go to moto and which
# trusts the test broker's certificate, then runs herald-demo against it. Stops
# everything it started on the way out.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --locked --quiet -p herald-local --bins
# Where cargo put them (CARGO_TARGET_DIR, when set).
export HERALD_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
exec infra/with-peers.sh bash -c '
  set -euo pipefail
  log=.run/demo-server.log
  AWS_ENDPOINT_URL="$MOTO_ENDPOINT" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    HERALD_STOMP_EXTRA_CA="$HERALD_STOMP_TEST_CA" PORT=0 RUST_LOG=warn \
    "$HERALD_TARGET_DIR/debug/herald-local" >.run/demo-server.out 2>"$log" &
  server=$!
  trap "kill $server 2>/dev/null || true" EXIT
  for _ in $(seq 1 100); do
    url=$(grep -o "http://127.0.0.1:[0-9]*" .run/demo-server.out 2>/dev/null | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "the dev server did not start; see $log" >&2; exit 1; }
  echo "dev server on $url (embedded backend), moto on $MOTO_ENDPOINT, ActiveMQ on 127.0.0.1:61613/61614"
  HERALD_URL="$url" "$HERALD_TARGET_DIR/debug/herald-demo"
'
