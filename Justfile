# Task runner. Run `./x <recipe>` (installs `just` when missing) or `just <recipe>`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# The full test suite: unit tests, then integration tests on a real API server.
test:
    hack/testenv-install.sh
    hack/python-venv.sh
    hack/prometheus-install.sh
    cargo test --workspace --all-targets --no-fail-fast
    cargo test --workspace --doc

# The end-to-end tests only: the operator binary with least-privilege RBAC, ansible-rulebook, the AWX simulator.
e2e:
    hack/testenv-install.sh
    hack/python-venv.sh
    hack/prometheus-install.sh
    cargo test -p cloudkit-e2e

# A local demo, start to finish: API server, AWX simulator, ansible-rulebook, two operators, sample VMs.
demo:
    hack/demo.sh

# Stop everything `just demo` started.
demo-down:
    hack/demo.sh down

# Regenerate the committed CRD YAML from the Rust types.
crds:
    CLOUDKIT_UPDATE_CRDS=1 cargo test -q -p cloudkit-api --test crd
    cp crds/computeinstance.yaml deploy/crd.yaml
    cp crds/tenant.yaml deploy/crd-tenant.yaml

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Install etcd and kubectl and build kube-apiserver 1.20 (once; cached in ~/.cache/cloudkit).
testenv-install:
    hack/testenv-install.sh

# Start a long-lived API server with the CRDs for manual use; prints `export KUBECONFIG=...`.
testenv: testenv-install
    cargo run -q -p cloudkit-testenv --bin testenv

# Stop the API server started by `just testenv`.
testenv-down:
    cargo run -q -p cloudkit-testenv --bin testenv -- --down

# Soak runs under faults, about 15 minutes; pass/fail per scenario, rewrites docs/reliability.md numbers.
chaos *args:
    hack/chaos.sh {{args}}

# End-to-end benchmarks, about 20 minutes; rewrites docs/performance.md numbers (`--quick`: smoke run).
bench *args:
    hack/bench.sh {{args}}
