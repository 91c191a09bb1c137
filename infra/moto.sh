#!/usr/bin/env bash
# Starts or stops a moto server (DynamoDB + SQS) on loopback for tests and demos.
#   infra/moto.sh start   # prints nothing on success; waits until moto answers
#   infra/moto.sh stop
# MOTO_PORT (default 5000) picks the port; MOTO_SERIAL=1 serves one request at a time
# (infra/moto_serial.py, for the concurrency tests). State lives under .run/.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
port=${MOTO_PORT:-5000}
run="$here/.run"
pidfile="$run/moto-$port.pid"
mkdir -p "$run"

# Whether something accepts connections on the port (bash's /dev/tcp: no curl needed).
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

case "${1:-}" in
  start)
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      exit 0
    fi
    if answers; then
      echo "moto: port $port already answers (another moto?); using it" >&2
      exit 0
    fi
    if [ "${MOTO_SERIAL:-0}" = 1 ]; then
      "$here/.venv/bin/python" "$here/infra/moto_serial.py" 127.0.0.1 "$port" >"$run/moto-$port.log" 2>&1 &
    else
      "$here/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$run/moto-$port.log" 2>&1 &
    fi
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      if answers; then
        exit 0
      fi
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "moto: the server exited; see $run/moto-$port.log" >&2
        exit 1
      fi
      sleep 0.2
    done
    echo "moto: no answer on 127.0.0.1:$port after 20 s; see $run/moto-$port.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
