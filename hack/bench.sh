#!/usr/bin/env bash
# End-to-end benchmarks (docs/performance.md): builds the operator and the benchmark in release
# mode, then runs every section against fresh loopback API servers and the AWX simulator.
#
#   hack/bench.sh                 full run; updates docs/performance.md and docs/bench.svg
#   hack/bench.sh --quick         smoke run (N = 100 only); writes target/bench/ only
#   hack/bench.sh --sections 1,4  some sections; writes target/bench/ only
#
# Only a full run rewrites the generated block of docs/performance.md, so the committed numbers
# always come from one complete run. Results of every run: target/bench/{report.md,results.json,bench.svg}.
set -euo pipefail
cd "$(dirname "$0")/.."

write_docs=(--write-docs)
for arg in "$@"; do
  case "$arg" in
    --quick | --sections* | --sizes* | --write-docs) write_docs=() ;;
  esac
done

hack/testenv-install.sh
cargo build --release -p cloudkit-operator -p cloudkit-bench
echo "bench: load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec target/release/cloudkit-bench "${write_docs[@]}" "$@"
