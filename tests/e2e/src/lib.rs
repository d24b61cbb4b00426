//! End-to-end tests of cloudkit-operator; the tests are in `tests/`, this library is empty.
//!
//! They run what a cluster runs, as separate processes, on a real API server
//! ([`cloudkit-testenv`](../cloudkit_testenv/index.html): kube-apiserver 1.20 with RBAC):
//!
//! - the `cloudkit-operator` binary, built by the tests with `cargo build -p cloudkit-operator`
//!   (a package cannot name another package's binary through `CARGO_BIN_EXE_*`, and building
//!   from the test keeps the binary current when only this package is tested), authenticated as
//!   an RBAC-limited user bound to nothing but the roles of `deploy/rbac.yaml`;
//! - for EDA, real `ansible-rulebook` running `examples/automation/rulebook.yml`, whose rules run
//!   the real `provision.yml` and `deprovision.yml` playbooks (`kubernetes.core`) against the API
//!   server;
//! - for AAP, the AWX simulator (`cloudkit-aap-sim`) in this process, in playbook mode.
//!
//! They need the Python venv with ansible-rulebook and Java 17 (`hack/python-venv.sh`, which
//! `./x test` runs) and fail with a message saying so when either is missing.
//!
//! Processes, waits and fixtures come from the workspace's one harness, `cloudkit-test-support`
//! ([`Scene`](../cloudkit_test_support/struct.Scene.html) is the world of one test); logs of a run
//! stay in `target/test-runs/<pid>/` until a later run finds that process gone.
