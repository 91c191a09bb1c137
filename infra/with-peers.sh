#!/usr/bin/env bash
# Runs a command with the local peers up — moto on 127.0.0.1:$MOTO_PORT (default 5055),
# a one-request-at-a-time moto on $MOTO_SERIAL_PORT (default 5056) for the tests that
# race writers, with MOTO_AUTH=1 a moto on $MOTO_AUTH_PORT (default 5058) for the test
# that turns on its request-signature checks (`make unit`; the reliability and demo runs
# do not start it), and ActiveMQ on 127.0.0.1:61613/61614 — and stops what it started
# afterwards, whatever the command's outcome. The command sees MOTO_ENDPOINT,
# MOTO_SERIAL_ENDPOINT, MOTO_AUTH_ENDPOINT (with MOTO_AUTH=1), HERALD_STOMP_TEST_CA
# (the broker's self-signed certificate) and HERALD_CHECKOUT (this checkout, whose
# .run/ and .venv/ hold the peers' state: a test binary built by another checkout
# sharing the target dir still reads this one's broker password).
#   infra/with-peers.sh cargo test --workspace
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export MOTO_PORT=${MOTO_PORT:-5055}
serial_port=${MOTO_SERIAL_PORT:-5056}
auth_port=${MOTO_AUTH_PORT:-5058}
started_moto=0
started_serial=0
started_auth=0
started_activemq=0
cleanup() {
  [ "$started_activemq" = 1 ] && "$here/infra/activemq.sh" stop || true
  [ "$started_moto" = 1 ] && "$here/infra/moto.sh" stop || true
  [ "$started_serial" = 1 ] && MOTO_PORT=$serial_port "$here/infra/moto.sh" stop || true
  [ "$started_auth" = 1 ] && MOTO_PORT=$auth_port "$here/infra/moto.sh" stop || true
}
trap cleanup EXIT
"$here/infra/moto.sh" start && started_moto=1
MOTO_PORT=$serial_port MOTO_SERIAL=1 "$here/infra/moto.sh" start && started_serial=1
if [ "${MOTO_AUTH:-0}" = 1 ]; then
  MOTO_PORT=$auth_port "$here/infra/moto.sh" start && started_auth=1
  export MOTO_AUTH_ENDPOINT="http://127.0.0.1:$auth_port"
fi
if [ "$("$here/infra/activemq.sh" status)" != running ]; then
  "$here/infra/activemq.sh" start && started_activemq=1
fi
export MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export MOTO_SERIAL_ENDPOINT="http://127.0.0.1:$serial_port"
export HERALD_STOMP_TEST_CA="$here/.run/activemq/broker-ca.pem"
export HERALD_CHECKOUT="$here"
"$@"
