#!/usr/bin/env bash
# Runs a command with the local peers up — moto on 127.0.0.1:$MOTO_PORT (default 5055)
# and ActiveMQ on 127.0.0.1:61613/61614 — and stops what it started afterwards,
# whatever the command's outcome. The command sees MOTO_ENDPOINT and
# HERALD_STOMP_TEST_CA (the broker's self-signed certificate).
#   infra/with-peers.sh cargo test --workspace
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export MOTO_PORT=${MOTO_PORT:-5055}
started_moto=0
started_activemq=0
cleanup() {
  [ "$started_activemq" = 1 ] && "$here/infra/activemq.sh" stop || true
  [ "$started_moto" = 1 ] && "$here/infra/moto.sh" stop || true
}
trap cleanup EXIT
"$here/infra/moto.sh" start && started_moto=1
if [ "$("$here/infra/activemq.sh" status)" != running ]; then
  "$here/infra/activemq.sh" start && started_activemq=1
fi
export MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export HERALD_STOMP_TEST_CA="$here/.run/activemq/broker-ca.pem"
"$@"
