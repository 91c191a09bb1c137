#!/usr/bin/env bash
# Runs every events/*.json through the real Lambda runtime emulator: `cargo lambda
# watch` serves the functions on loopback (embedded backend), `cargo lambda invoke`
# sends each file to the function its name starts with (api-, ingest-, fanout-, sweeper-), and
# each answer must be a function result, not an error, and, for HTTP events, an API
# Gateway response below 500.
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
for event in events/*.json; do
  function=$(basename "$event" | cut -d- -f1)
  out=$(timeout 300 "$cl" lambda invoke "$function" --invoke-address 127.0.0.1 --invoke-port "$port" --data-file "$event" 2>&1) || true
  status=$(printf '%s' "$out" | python3 -c 'import json,sys
try:
    r = json.load(sys.stdin)
    if "errorType" in r or "errorMessage" in r:
        print("error")
    elif "statusCode" in r:
        print(r["statusCode"] if int(r["statusCode"]) < 500 else "error")
    else:
        print("result")
except Exception:
    print("error")')
  if [ "$status" != error ]; then
    echo "ok   $function $event -> $status"
    passed=$((passed + 1))
  else
    echo "FAIL $event -> $out"
    failed=$((failed + 1))
  fi
done
echo "lambda-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
