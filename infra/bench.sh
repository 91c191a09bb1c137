#!/usr/bin/env bash
# `make bench`: builds what the benchmarks measure and runs them, on loopback only.
#   - herald-bench and herald-local (the dev server) with the optimised `harness` profile;
#   - the release bootstraps (api, ingest, fanout and the hello-world they are compared
#     with) with cargo lambda for each of BENCH_ARCHES (default "arm64 x86_64"), and their
#     zips; cold starts run the ones of this machine's architecture;
#   - moto on 127.0.0.1:$BENCH_MOTO_PORT (default 5057), started and stopped here.
# BENCH_RUNS (default 5) runs per measurement; BENCH_ONLY picks sections (see herald-bench).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
arches=${BENCH_ARCHES:-arm64 x86_64}
port=${BENCH_MOTO_PORT:-5057}
case "$(uname -m)" in
  x86_64) host=x86_64 ;;
  aarch64 | arm64) host=arm64 ;;
  *) echo "bench: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
case " $arches " in *" $host "*) ;; *) arches="$arches $host" ;; esac

cargo build --locked --quiet --profile harness -p herald-bench -p herald-local
# Where cargo put them (CARGO_TARGET_DIR, when set, as cargo itself reads it).
harness="${CARGO_TARGET_DIR:-target}/harness"
export PATH="$here/.venv/bin:$PATH"
# Only the sections `init`, `batch` and `artifacts` run the release bootstraps: a
# BENCH_ONLY without them (e.g. `e2e`) builds none.
lambdas=yes
if [ -n "${BENCH_ONLY:-}" ]; then
  lambdas=no
  for wanted in ${BENCH_ONLY//,/ }; do
    case "$wanted" in init | batch | artifacts) lambdas=yes ;; esac
  done
fi
[ "$lambdas" = yes ] || arches=""
artifacts=""
for arch in $arches; do
  if [ "$arch" = arm64 ]; then triple=aarch64-unknown-linux-gnu; flag=--arm64; else triple=x86_64-unknown-linux-gnu; flag=--x86-64; fi
  rustup target add "$triple" >/dev/null
  for format in binary zip; do
    cargo-lambda lambda build --release --locked --quiet $flag --output-format "$format" \
      --lambda-dir "target/bench/$format-$arch" --bin api --bin ingest --bin fanout --bin bench-hello
  done
  artifacts="$artifacts${artifacts:+,}$arch=target/bench/binary-$arch:target/bench/zip-$arch"
done

MOTO_PORT=$port infra/moto.sh start
trap 'MOTO_PORT=$port infra/moto.sh stop' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
lambda_args=()
if [ "$lambdas" = yes ]; then
  lambda_args=(--lambda-dir "target/bench/binary-$host" --artifacts "$artifacts")
fi
"$harness/herald-bench" --out "${BENCH_OUT:-.run/bench.md}" --runs "${BENCH_RUNS:-5}" \
  ${BENCH_ONLY:+--only "$BENCH_ONLY"} \
  "${lambda_args[@]}" --local "$harness/herald-local"
