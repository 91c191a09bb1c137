#!/usr/bin/env bash
# Runs every events/api-*.json through the real Lambda runtime emulator:
# `cargo lambda watch` serves the api function on loopback, `cargo lambda invoke`
# sends each event, and each answer must be an API Gateway response below 500.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
port=${LAMBDA_PORT:-9061}
cl="$here/.venv/bin/cargo-lambda"
log="$here/.run/lambda-watch.log"
mkdir -p "$here/.run"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
if answers; then
  echo "lambda-smoke: port $port is taken; set LAMBDA_PORT" >&2
  exit 1
fi

HERALD_BACKEND=memory HERALD_AUTH=jwt setsid "$cl" lambda watch \
  --invoke-address 127.0.0.1 --invoke-port "$port" >"$log" 2>&1 &
watch_pid=$!
trap 'kill -- -"$watch_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 150); do
  answers && break
  kill -0 "$watch_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.2
done
answers || { echo "lambda-smoke: cargo lambda watch did not listen within 30 s" >&2; cat "$log" >&2; exit 1; }

passed=0
failed=0
for event in events/api-*.json; do
  out=$(timeout 300 "$cl" lambda invoke api --invoke-address 127.0.0.1 --invoke-port "$port" --data-file "$event" 2>&1) || true
  status=$(printf '%s' "$out" | python3 -c 'import json,sys
try:
    print(json.load(sys.stdin)["statusCode"])
except Exception:
    print("none")')
  if [ "$status" != none ] && [ "$status" -lt 500 ]; then
    echo "ok   $event -> $status"
    passed=$((passed + 1))
  else
    echo "FAIL $event -> $out"
    failed=$((failed + 1))
  fi
done
echo "lambda-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
