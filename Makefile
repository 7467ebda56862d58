# The two commands a newcomer needs: `make run` (the local platform) and
# `make test` (everything CI runs). Everything else is a building block of those.
.PHONY: run test check bench crds toolchain testenv-build testenv-up

CARGO ?= cargo

## Run all checks and tests against a real PostgreSQL, Redis and kube-apiserver.
test: check
	scripts/testenv.sh run -- $(CARGO) test --workspace --locked

## Formatting and lints (warnings are errors).
check: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

toolchain:
	scripts/ensure-toolchain.sh

## Benchmarks (print figures): operator scale (TRUFFLES_BENCH_TENANTS=100,1000) and
## runtime throughput (TRUFFLES_BENCH_MESSAGES, TRUFFLES_BENCH_CONCURRENCY) and the
## knowledge store (TRUFFLES_BENCH_CHUNKS, TRUFFLES_BENCH_DOCS).
bench: toolchain
	scripts/testenv.sh run -- sh -c '$(CARGO) bench -p truffles-tests --bench runtime_pipeline && $(CARGO) bench -p truffles-tests --bench knowledge_store && $(CARGO) bench -p truffles-tests --bench knowledge_eval && $(CARGO) bench -p truffles-tests --bench operator_scale'

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
## operator, and the example tenants (namespace demo) reconciled to Ready.
## Ctrl-C stops everything.
run: toolchain
	$(CARGO) build -p truffles-operator
	scripts/testenv.sh up --with-examples --with-operator
