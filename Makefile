# Herald: the one entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
CL        := $(VENV)/bin/cargo-lambda
SAM       := $(VENV)/bin/sam
CFN_LINT  := $(VENV)/bin/cfn-lint
STAMP     := $(VENV)/.installed
MOTO_PORT ?= 5055
PORT      ?= 3000
EVENT     ?= api-create-webhook.json
ARCH      ?= arm64
LAMBDA_PORT ?= 9061
REHEARSAL_MOTO_PORT ?= 5355
# Where cargo puts what it builds (CARGO_TARGET_DIR, when set, as cargo itself reads it).
TARGET    := $(or $(CARGO_TARGET_DIR),target)

# Nothing here talks to real AWS: no telemetry, no instance metadata, fake
# credentials and a region for the offline tools.
export SAM_CLI_TELEMETRY := 0
export AWS_EC2_METADATA_DISABLED := true
export CARGO_TERM_COLOR ?= never

.PHONY: help setup run run-aws demo activemq-up activemq-down test unit portal-test lint fmt validate watch invoke lambda-smoke build sam-build rehearse deploy redrive-ingest reliability bench fuzz cargo-fuzz api-fuzz moto-up moto-down clean-venv

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): infra/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements.txt
	touch $@

setup: $(STAMP) ## create the project virtualenv (moto, cfn-lint, aws-sam-cli, cargo-lambda, zig)

# The dev server's build: optimised (the `harness` profile, shared with bench and reliability; about 5 min
# from a cold target on 2 cores). RUN_PROFILE=dev builds it unoptimised, quicker to rebuild while editing.
RUN_PROFILE ?= harness

run: ## start the dev server on http://127.0.0.1:3000 (PORT overrides) with the embedded backend, optimised (RUN_PROFILE=dev: a debug build); it prints the portal's URL
	PORT=$(PORT) cargo run --locked --quiet --profile $(RUN_PROFILE) -p herald-local --bin herald-local

run-aws: setup ## the dev server on DynamoDB, SQS and KMS in moto (started on 127.0.0.1:$(MOTO_PORT), resources created)
	MOTO_PORT=$(MOTO_PORT) infra/moto.sh start
	HERALD_BACKEND=aws HERALD_TABLE=herald HERALD_CREATE_LOCAL_RESOURCES=true HERALD_KMS_KEY_ID=alias/herald-secrets \
	  HERALD_QUEUE_URL=http://127.0.0.1:$(MOTO_PORT)/123456789012/herald-jobs \
	  HERALD_DLQ_URL=http://127.0.0.1:$(MOTO_PORT)/123456789012/herald-jobs-dlq \
	  HERALD_EVENT_BUCKET=herald-events HERALD_DATAREF_KEY_ID=alias/herald-dataref \
	  AWS_ENDPOINT_URL=http://127.0.0.1:$(MOTO_PORT) AWS_REGION=us-east-1 \
	  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
	  PORT=$(PORT) cargo run --locked --quiet --profile $(RUN_PROFILE) -p herald-local --bin herald-local

demo: setup ## the product tour: one order.paid event to a webhook, an SQS queue, an EventBridge bus and an SNS topic (moto) and an ActiveMQ queue, and a test delivery to each
	infra/demo.sh

test: setup ## everything CI checks: format, lints, unit/integration/end-to-end tests on moto, template, Lambda smoke
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory portal-test
	$(MAKE) --no-print-directory validate
	$(MAKE) --no-print-directory lambda-smoke

unit: setup ## cargo test for the whole workspace, with moto (127.0.0.1:5055, 5056 serial, 5058 for the signature test) and ActiveMQ (127.0.0.1:61613/61614) started and stopped after
	MOTO_PORT=$(MOTO_PORT) MOTO_AUTH=1 infra/with-peers.sh cargo test --locked --workspace

portal-test: setup ## the store owner's portal in headless Chromium against the dev server, with its store picker and under JWT with an OpenID Provider on loopback (Debian's chromium and chromium-driver, and npm's oidc-provider, installed the first time): screenshots in .run/portal/
	infra/chromium.sh install
	infra/oidc.sh install
	cargo build --locked --quiet -p herald-local --bin herald-local
	$(PY) infra/portal_test.py $(TARGET)/debug/herald-local header
	$(PY) infra/portal_test.py $(TARGET)/debug/herald-local jwt

lint: ## rustfmt check, clippy and rustdoc (every doc link resolves) with warnings as errors, no import cycle between a crate's modules, and the fuzz crate's Cargo.lock current (it builds only in `make cargo-fuzz`)
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet
	python3 infra/check-cycles.py functions/*/src harness/*/src
	cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

fmt: ## format the code
	cargo fmt --all

validate: setup ## cfn-lint on template.yaml and infra/customer/*.yaml, sam validate --lint (offline)
	AWS_DEFAULT_REGION=us-east-1 $(CFN_LINT) template.yaml infra/customer/sqs-queue.yaml infra/customer/eventbridge-bus.yaml infra/customer/sns-topic.yaml
	AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline $(SAM) validate --lint

watch: setup ## serve the Lambda functions locally (cargo lambda watch, embedded backend) on 127.0.0.1:9061
	HERALD_BACKEND=memory HERALD_AUTH=jwt $(CL) lambda watch --invoke-address 127.0.0.1 --invoke-port $(LAMBDA_PORT)

invoke: setup ## send events/EVENT (default api-create-webhook.json) to its function (the name's prefix) served by `make watch`
	$(CL) lambda invoke $(firstword $(subst -, ,$(EVENT))) --invoke-address 127.0.0.1 --invoke-port $(LAMBDA_PORT) --data-file events/$(EVENT)

lambda-smoke: setup ## run every events/api-*.json through cargo lambda watch + invoke
	LAMBDA_PORT=$(LAMBDA_PORT) infra/lambda-smoke.sh

build: setup ## release build of the Lambda bootstraps for ARCH=arm64|x86_64 (cargo lambda + zig)
	rustup target add $(if $(filter arm64,$(ARCH)),aarch64-unknown-linux-gnu,x86_64-unknown-linux-gnu)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CL) lambda build --release --locked --bin api --bin ingest --bin fanout --bin sweeper $(if $(filter arm64,$(ARCH)),--arm64,--x86-64)

sam-build: setup ## sam build (cargo lambda + zig from the virtualenv), ARCH=arm64|x86_64
	rustup target add $(if $(filter arm64,$(ARCH)),aarch64-unknown-linux-gnu,x86_64-unknown-linux-gnu)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM) build --beta-features --parameter-overrides Architecture=$(ARCH)

rehearse: setup ## the deploy rehearsal, offline: x86_64 release bootstraps, template.yaml translated and created in moto (127.0.0.1:REHEARSAL_MOTO_PORT, 5355) with IAM enforced, each function run with its stack environment and role session, the product tour through API Gateway and SQS events
	$(MAKE) --no-print-directory build ARCH=x86_64
	REHEARSAL_MOTO_PORT=$(REHEARSAL_MOTO_PORT) REHEARSAL_LAMBDA_DIR=$(TARGET)/lambda $(PY) infra/rehearse.py

deploy: sam-build ## sam deploy --guided the first time, sam deploy after; ARCH=arm64|x86_64, the architecture just built
	@# --guided writes region and parameters into samconfig.toml; after that, plain deploy.
	@# Architecture is always ARCH, the one sam-build built. A --parameter-overrides on
	@# the command line replaces the saved ones, so they are passed first and ARCH
	@# after them (the last value of a parameter wins).
	@if grep -q '^region' samconfig.toml; then \
	  saved=$$($(PY) -c 'import tomllib; p = tomllib.load(open("samconfig.toml", "rb")).get("default", {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides", ""); print(p if isinstance(p, str) else " ".join(p))'); \
	  PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM) deploy --parameter-overrides $${saved:+"$$saved"} Architecture=$(ARCH); \
	else \
	  PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM) deploy --guided --parameter-overrides Architecture=$(ARCH); \
	fi

redrive-ingest: setup ## invoke the ingest function again with each failed asynchronous invocation's payload (the stack's IngestFailureQueue); STACK overrides the stack name
	$(PY) infra/redrive-ingest.py $(if $(STACK),--stack $(STACK))

reliability: setup ## the fault-injection suite at full size (optimised build; ActiveMQ started for the broker restart): prints the table, writes .run/reliability.md and the captured log beside it
	cargo build --locked --quiet --profile harness -p herald-reliability --bin herald-reliability
	RUST_LOG=$${RUST_LOG:-info} infra/with-peers.sh $(TARGET)/harness/herald-reliability --out .run/reliability.md

bench: setup ## benchmarks as ratios against baselines in the same run (throughput, CPU, latency, cold start, memory, artifact sizes, ingest, pipeline; loopback only): writes .run/bench.md
	infra/bench.sh

fuzz: ## hostile-input properties at 1,000,000 cases each (event and job parsers, SSRF decisions), time-boxed to FUZZ_SECONDS (600) each; not in CI
	cargo test --locked --profile harness -p herald-core --lib --no-run
	for t in job::properties net::guard::properties; do \
	  PROPTEST_CASES=$${PROPTEST_CASES:-1000000} timeout $${FUZZ_SECONDS:-600} \
	    cargo test --locked --profile harness -p herald-core --lib $$t; rc=$$?; \
	  if [ $$rc = 124 ]; then echo "$$t: no failure within the time box"; elif [ $$rc != 0 ]; then exit $$rc; fi; \
	done

# cargo fuzz on the stable toolchain: with `-s none` it passes no -Z flag (no nightly,
# no RUSTC_BOOTSTRAP); AddressSanitizer would need nightly and adds little here, as
# herald-core forbids unsafe code. Its own workspace and lock (fuzz/), its build under
# target/fuzz; the corpus (fuzz/corpus) grows from the committed seeds (fuzz/seeds).
FUZZ_TARGETS := event_parser job_parser url_guard

cargo-fuzz: ## cargo fuzz (libFuzzer) on the event parser, the job parser and the SSRF decisions, FUZZ_SECONDS (60) per target; installs cargo-fuzz if missing; not in CI
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
	for t in $(FUZZ_TARGETS); do \
	  dict=fuzz/json.dict; if [ $$t = url_guard ]; then dict=fuzz/url.dict; fi; \
	  mkdir -p fuzz/corpus/$$t; \
	  cargo fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -s none --fuzz-dir fuzz --target-dir $(CURDIR)/target/fuzz -- \
	    -max_total_time=$${FUZZ_SECONDS:-60} -dict=$$dict -print_final_stats=1 || exit 1; \
	done

$(VENV)/.fuzz-installed: infra/requirements-fuzz.txt $(STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements-fuzz.txt
	touch $@

api-fuzz: $(VENV)/.fuzz-installed ## schemathesis against the dev server's OpenAPI document for FUZZ_SECONDS (120): fails on any 5xx; not in CI
	infra/api-fuzz.sh

moto-up: setup ## start moto on 127.0.0.1 (MOTO_PORT) for HERALD_BACKEND=aws demos
	MOTO_PORT=$(MOTO_PORT) infra/moto.sh start
	@echo "moto on http://127.0.0.1:$(MOTO_PORT)"

moto-down: ## stop moto
	MOTO_PORT=$(MOTO_PORT) infra/moto.sh stop

activemq-up: ## install (Debian package, first time) and start ActiveMQ on 127.0.0.1:61613 (STOMP) and :61614 (STOMP+TLS)
	infra/activemq.sh start

activemq-down: ## stop ActiveMQ
	infra/activemq.sh stop

clean-venv: ## remove the project virtualenv
	rm -rf $(VENV)
