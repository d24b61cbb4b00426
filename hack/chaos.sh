#!/usr/bin/env bash
# Soak runs under faults (docs/reliability.md): builds the operator and the chaos runner in release
# mode, then runs every scenario against fresh loopback API servers, the AWX simulator and EDA
# webhook stand-ins. Ends with a pass/fail summary; exits non-zero when a scenario failed.
#
#   hack/chaos.sh                      all scenarios, seed 1; updates docs/reliability.md
#   hack/chaos.sh --seed 7             another seed (writes target/chaos/ only)
#   hack/chaos.sh --quick              smaller runs (writes target/chaos/ only)
#   hack/chaos.sh --scenarios crash    some scenarios: crash, faults, outage, leader, eda, feedback
#
# Only a full run with the default seed rewrites the generated block of docs/reliability.md.
# Every run writes target/chaos/{report.md,results.json} and the operator logs per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."

write_docs=(--write-docs)
for arg in "$@"; do
  case "$arg" in
    --quick | --seed* | --scenarios* | --crash-lifecycles* | --write-docs) write_docs=() ;;
  esac
done

hack/testenv-install.sh
cargo build --release -p cloudkit-operator -p cloudkit-chaos
echo "chaos: load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec target/release/cloudkit-chaos "${write_docs[@]}" "$@"
