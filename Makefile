# The two commands a newcomer needs: `make run` (the local platform) and
# `make test` (everything CI runs). Everything else is a building block of those.
.PHONY: run scenario test check bench bench-density bench-n8n crds toolchain binaries testenv-build testenv-up

CARGO ?= cargo

## Run all checks and tests against a real PostgreSQL, Redis and kube-apiserver.
## The end-to-end test runs the operator and runtime binaries, so they are built first.
test: check binaries
	scripts/testenv.sh run -- $(CARGO) test --workspace --locked

## truffles-operator, truffles-bot and truffles-dev (the local platform).
binaries: toolchain
	$(CARGO) build --workspace --bins --locked

## Formatting, lints (warnings are errors), the code's shape (no import cycle
## between the files of bot-runtime or the operator, no source file over 700
## lines, no comment citing a document outside the repository), and the supply
## chain (cargo-deny: advisories from the dated RustSec snapshot, licences,
## banned crates, sources; deny.toml).
check: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) test --locked -p truffles-tests --test structure
	scripts/deny.sh

toolchain:
	scripts/ensure-toolchain.sh

## Benchmarks (print figures): operator scale (TRUFFLES_BENCH_TENANTS=100,1000) and
## runtime throughput (TRUFFLES_BENCH_MESSAGES, TRUFFLES_BENCH_CONCURRENCY) and the
## knowledge store (TRUFFLES_BENCH_CHUNKS, TRUFFLES_BENCH_DOCS).
bench: toolchain
	$(CARGO) build --release --workspace --bins --locked
	scripts/testenv.sh run -- sh -c '$(CARGO) bench -p truffles-tests --bench runtime_pipeline && $(CARGO) bench -p truffles-tests --bench knowledge_store && $(CARGO) bench -p truffles-tests --bench knowledge_eval && $(CARGO) bench -p truffles-tests --bench operator_scale && $(CARGO) bench -p truffles-tests --bench density'

## Density: N idle tenants provisioned by the real operator, run by the
## development supervisor (TRUFFLES_BENCH_DENSITY=100,500): RSS, PostgreSQL
## transactions/s, connections, idle CPU, first reply of an idle tenant.
bench-density: toolchain
	$(CARGO) build --release --workspace --bins --locked
	scripts/testenv.sh run -- $(CARGO) bench -p truffles-tests --bench density

## Truffles against n8n on this machine, one load generator (wrk) for both;
## installs wrk and n8n (npm, into ~/.cache/truffles) the first time.
bench-n8n: toolchain
	scripts/bench-n8n.sh

## Regenerate the CRD YAML from the Rust types (crds/ and the Helm chart).
crds:
	$(CARGO) run -q -p truffles-crds --bin crdgen > crds/truffles.kz_crds.yaml
	cp crds/truffles.kz_crds.yaml charts/truffles/crds/truffles.kz_crds.yaml

## Build (or reuse from ~/.cache/truffles) etcd, kube-apiserver, kube-controller-manager.
testenv-build:
	scripts/testenv.sh build

## Start the test environment and print its variables; Ctrl-C stops it.
testenv-up:
	scripts/testenv.sh up

## The local platform: PostgreSQL, Redis, kube-apiserver with the CRDs, the
## embedding model, the operator, and the example tenants (namespace demo), each
## Active tenant's runtime run by the development supervisor. Ctrl-C stops it all.
run: binaries
	scripts/testenv.sh run -- $(CARGO) run -q --locked -p truffles-tests --bin truffles-dev -- up

## The end-to-end scenario on a fresh local platform, with its transcript.
scenario: binaries
	scripts/testenv.sh run -- $(CARGO) run -q --locked -p truffles-tests --bin truffles-dev -- scenario
