#!/usr/bin/env bash
# A local demo of cloudkit-operator, start to finish, without a cluster:
#
#   hack/demo.sh        (`./x demo`)       start everything, provision sample VMs with both
#                                          providers (each CI in its tenant), delete one,
#                                          restart one, leave the rest running
#   hack/demo.sh down   (`./x demo-down`)  stop everything the demo started
#
# What runs (all on loopback, every process tracked by a PID file in target/demo/pids/):
#   - a real kube-apiserver 1.20 + etcd (the `testenv` binary) with the ComputeInstance CRD, the
#     KubeVirt, CDI and OVN-Kubernetes CRDs and a fake KubeVirt (it runs the playbooks' VMs)
#   - the AWX simulator (`aap-sim`) in playbook mode: AAP jobs act on the CIs like the playbooks
#   - ansible-rulebook with examples/automation/rulebook.yml: EDA runs the real playbooks
#   - two cloudkit-operator processes, one per provider, each watching its own namespace
#     (demo-aap, demo-eda), authenticated as a user that holds only the roles of deploy/rbac.yaml
#   - Debian's Prometheus (hack/prometheus-install.sh) scraping both operators' /metrics
# Every wait is bounded; the script exits non-zero, with the logs to read, when something fails.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/target/demo"
PIDS="$STATE/pids"
LOGS="$STATE/logs"
TESTENV_DIR="$STATE/testenv"
KUBECONFIG_FILE="$TESTENV_DIR/kubeconfig"
LIMITED_KUBECONFIG="$TESTENV_DIR/limited.kubeconfig"
CACHE="${CLOUDKIT_CACHE_DIR:-$HOME/.cache/cloudkit}"
VENV="${CLOUDKIT_PYTHON_VENV:-$CACHE/venv}"
JAVA_HOME_17="${CLOUDKIT_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
KUBECTL="${CLOUDKIT_KUBECTL:-$CACHE/kubectl-1.20.2}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
SIM_TOKEN="demo-aap-token"
WEBHOOK_TOKEN="demo-webhook-token"
WEBHOOK_HMAC="demo-webhook-hmac-secret"
NAMESPACES=(demo-aap demo-eda)

if [ -t 1 ]; then B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B='' D='' G='' R='' N=''; fi
say() { printf '%s==> %s%s\n' "$B" "$*" "$N"; }
die() {
  printf '%sdemo: %s%s\n' "$R" "$*" "$N" >&2
  if [ -d "$LOGS" ]; then
    for f in "$LOGS"/*.log; do
      [ -f "$f" ] || continue
      printf '%s--- last lines of %s ---%s\n' "$D" "$f" "$N" >&2
      tail -n 15 "$f" >&2 || true
    done
  fi
  printf 'demo: logs in %s; stop everything with ./x demo-down\n' "$LOGS" >&2
  exit 1
}
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# ---- process tracking -------------------------------------------------------------------------

# start NAME MARKER COMMAND...: runs COMMAND in its own session (so its children can be stopped
# with it), output to $LOGS/NAME.log, PID in $PIDS/NAME. MARKER is a word of its command line that
# `down` checks before killing, in case the PID was reused.
start() {
  local name=$1 marker=$2
  shift 2
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo "$! $marker" >"$PIDS/$name"
}

alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

ours() { alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"; }

stop_one() {
  local file=$1 pid marker
  read -r pid marker <"$file" || { rm -f "$file"; return; }
  if ours "$pid" "$marker"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
    echo "stopped $(basename "$file") (pid $pid)"
  fi
  rm -f "$file"
}

down() {
  if [ -d "$PIDS" ]; then
    for f in "$PIDS"/*; do [ -f "$f" ] && stop_one "$f"; done
  fi
  if [ -x "$TARGET/testenv" ] && [ -d "$TESTENV_DIR" ]; then
    "$TARGET/testenv" --dir "$TESTENV_DIR" --down 2>&1 | sed 's/^/  /' || true
  fi
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${limit}s waiting for $what"
    sleep 0.2
  done
}

running() { alive "$(awk '{print $1}' "$PIDS/$1")"; }
expect_running() { running "$1" || die "$1 exited"; }

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- the demo ----------------------------------------------------------------------------------

if [ "${1:-}" = down ]; then
  say "stopping the demo"
  down
  exit 0
fi
[ $# -eq 0 ] || { echo "usage: hack/demo.sh [down]" >&2; exit 2; }

started=$SECONDS
say "installing what the demo needs (cached after the first run)"
mkdir -p "$STATE"
# What a step does when its result is not cached yet, with an estimate; empty when it is cached.
first_run_note() {
  case $1 in
    hack/testenv-install.sh)
      if [ ! -x "$CACHE/kube-apiserver-1.20.2" ] || [ ! -x "$CACHE/kube-controller-manager-1.20.2" ]; then
        echo "building kube-apiserver and kube-controller-manager 1.20 from Debian's source package (first run only, about 12 minutes on 2 cores)"
      fi ;;
    hack/python-venv.sh)
      [ -f "$VENV/.cloudkit-requirements" ] \
        || echo "creating the Python venv with ansible and ansible-rulebook in $VENV (first run only, a few minutes)" ;;
    hack/prometheus-install.sh)
      ls "$CACHE"/prometheus-*/usr/bin/promtool >/dev/null 2>&1 \
        || echo "downloading Debian's prometheus package into $CACHE (first run only, under a minute)" ;;
  esac
}
for step in hack/testenv-install.sh hack/python-venv.sh hack/prometheus-install.sh; do
  note="$(first_run_note "$step")"
  step_started=$SECONDS
  [ -z "$note" ] || printf '  %s...\n' "$note"
  "$step" >"$STATE/install.log" 2>&1 || { cat "$STATE/install.log" >&2; die "$step failed"; }
  if [ -n "$note" ]; then
    printf '  %s: done in %ss\n' "$step" "$((SECONDS - step_started))"
  else
    printf '  %s\n' "$(tail -n 1 "$STATE/install.log")"
  fi
done
[ -x "$JAVA_HOME_17/bin/java" ] || die "Java 17 is missing at $JAVA_HOME_17 (apt-get install openjdk-17-jdk-headless)"
[ -x "$KUBECTL" ] || die "kubectl is missing at $KUBECTL (hack/testenv-install.sh installs it)"
PROMETHEUS_HOME="$(ls -d "$CACHE"/prometheus-*/ | sort | tail -n 1)"
PROMETHEUS_HOME="${PROMETHEUS_HOME%/}"
if [ ! -x "$TARGET/cloudkit-operator" ] || [ ! -x "$TARGET/aap-sim" ] || [ ! -x "$TARGET/testenv" ]; then
  echo "  building the operator, the AWX simulator and the test environment (first run: several minutes; later: seconds)..."
fi
cargo build -q -p cloudkit-operator -p cloudkit-aap-sim -p cloudkit-testenv --bins

if [ -d "$PIDS" ] && [ -n "$(ls -A "$PIDS" 2>/dev/null)" ] || [ -f "$TESTENV_DIR/pids" ]; then
  say "stopping the previous demo"
  down
fi
rm -rf "$LOGS" "$PIDS"
mkdir -p "$LOGS" "$PIDS" "$STATE/tmp"

say "starting kube-apiserver and etcd"
"$TARGET/testenv" --dir "$TESTENV_DIR" >/dev/null 2>"$LOGS/testenv-start.log" \
  || die "the API server did not start: $(cat "$LOGS/testenv-start.log")"
for ns in "${NAMESPACES[@]}"; do k create namespace "$ns" >/dev/null; done
# The operators authenticate as the test environment's limited user (group cloudkit:operators),
# bound to the roles of deploy/rbac.yaml and nothing else.
k apply -f deploy/namespace.yaml -f deploy/rbac.yaml >/dev/null
k create clusterrolebinding demo-cloudkit-operator --clusterrole=cloudkit-operator \
  --group=cloudkit:operators >/dev/null

say "starting the AWX simulator (AAP) in playbook mode"
start aap-sim aap-sim "$TARGET/aap-sim" --listen 127.0.0.1:0 --token "$SIM_TOKEN" \
  --template provision_vm --template deprovision_vm --kubeconfig "$KUBECONFIG_FILE" \
  --pending 1s --waiting 1s --running 2s
wait_until 20 "the simulator" grep -q '^listening on ' "$LOGS/aap-sim.log"
expect_running aap-sim
SIM_URL="$(sed -n 's/^listening on //p' "$LOGS/aap-sim.log" | head -n 1)"

say "starting ansible-rulebook (EDA) with examples/automation/rulebook.yml"
EDA_PORT="$(free_port)"
cat >"$STATE/rulebook-vars.yml" <<EOF
webhook_host: 127.0.0.1
webhook_port: $EDA_PORT
webhook_token: $WEBHOOK_TOKEN
webhook_hmac_secret: $WEBHOOK_HMAC
automation_dir: $ROOT/examples/automation
python_interpreter: $VENV/bin/python
EOF
(
  cd "$STATE/tmp"
  export PATH="$VENV/bin:$JAVA_HOME_17/bin:$PATH" JAVA_HOME="$JAVA_HOME_17" \
    K8S_AUTH_KUBECONFIG="$KUBECONFIG_FILE" ANSIBLE_NOCOLOR=1 ANSIBLE_LOCAL_TEMP="$STATE/tmp" \
    ANSIBLE_HOME="$STATE/tmp"
  unset KUBECONFIG
  start ansible-rulebook ansible-rulebook "$VENV/bin/ansible-rulebook" \
    --rulebook "$ROOT/examples/automation/rulebook.yml" \
    --inventory "$ROOT/examples/automation/inventory.yml" --vars "$STATE/rulebook-vars.yml"
)
webhook_up() {
  expect_running ansible-rulebook
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "http://127.0.0.1:$EDA_PORT/ready")" = 401 ]
}
wait_until 60 "ansible-rulebook's webhook" webhook_up

say "starting two operators: AAP on namespace demo-aap, EDA on namespace demo-eda"
operator() {
  local name=$1 ns=$2
  shift 2
  start "$name" cloudkit-operator env -i PATH="$PATH" HOME="$HOME" NO_COLOR=1 \
    KUBECONFIG="$LIMITED_KUBECONFIG" CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE="$ns" \
    CLOUDKIT_HTTP_ADDRESS=127.0.0.1:0 CLOUDKIT_TENANT_NETWORK=none "$@" "$TARGET/cloudkit-operator"
}
operator operator-aap demo-aap CLOUDKIT_PROVISIONING_PROVIDER=aap CLOUDKIT_AAP_URL="$SIM_URL/api" \
  CLOUDKIT_AAP_TOKEN="$SIM_TOKEN" CLOUDKIT_AAP_PROVISION_TEMPLATE=provision_vm \
  CLOUDKIT_AAP_DEPROVISION_TEMPLATE=deprovision_vm CLOUDKIT_AAP_STATUS_POLL_INTERVAL=1s
operator operator-eda demo-eda CLOUDKIT_PROVISIONING_PROVIDER=eda \
  CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK="http://127.0.0.1:$EDA_PORT/provision" \
  CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK="http://127.0.0.1:$EDA_PORT/deprovision" \
  CLOUDKIT_EDA_TOKEN="$WEBHOOK_TOKEN" CLOUDKIT_EDA_HMAC_SECRET="$WEBHOOK_HMAC"
operator_up() { expect_running "$1" && grep -q 'starting controller' "$LOGS/$1.log"; }
for op in operator-aap operator-eda; do
  wait_until 30 "$op" operator_up "$op"
done
metrics_address() { sed -n 's/.*serving \/healthz.*address=\([0-9.:]*\).*/\1/p' "$LOGS/$1.log" | head -n 1; }

say "starting Prometheus (Debian's), scraping both operators every second"
PROMETHEUS_PORT="$(free_port)"
rm -rf "$STATE/prometheus"
mkdir -p "$STATE/prometheus"
cat >"$STATE/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: cloudkit-operator
    static_configs:
      - targets: ["$(metrics_address operator-aap)"]
        labels: {operator: operator-aap}
      - targets: ["$(metrics_address operator-eda)"]
        labels: {operator: operator-eda}
EOF
start prometheus prometheus "$PROMETHEUS_HOME/usr/bin/prometheus" \
  --config.file="$STATE/prometheus/prometheus.yml" --storage.tsdb.path="$STATE/prometheus/data" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
  --web.local-assets="$PROMETHEUS_HOME/usr/share/prometheus/web/"
PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT"
# Both targets scraped before the first job ends, so every duration is in the graph.
targets_up() {
  expect_running prometheus
  [ "$(curl -s "$PROMETHEUS_URL/api/v1/query?query=sum(up)" | sed -n 's/.*"value":\[[0-9.]*,"\([0-9]*\)"\].*/\1/p')" = 2 ]
}
wait_until 30 "Prometheus to scrape both operators" targets_up
# The median provision duration per provider since the operators started (cumulative buckets:
# a handful of demo jobs is too few for a rate).
GRAPH_EXPR='histogram_quantile(0.5, sum by (le, provider) (cloudkit_job_duration_seconds_bucket{type="provision"}))'
GRAPH_URL="$PROMETHEUS_URL/graph?g0.expr=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$GRAPH_EXPR")&g0.tab=0&g0.range_input=15m"

say "creating the sample ComputeInstances (examples/computeinstances.yaml) in both namespaces"
for ns in "${NAMESPACES[@]}"; do
  k apply -n "$ns" -f examples/computeinstances.yaml | sed 's/^/  /'
done

COLUMNS='NAMESPACE:.metadata.namespace,NAME:.metadata.name,PROVIDER:.status.jobs[-1:].provider,PHASE:.status.phase,JOB:.status.jobs[-1:].jobID,TYPE:.status.jobs[-1:].type,STATE:.status.jobs[-1:].state,VM:.status.virtualMachineReference.kubeVirtVirtualMachineName,AVAILABLE:.status.conditions[?(@.type=="Available")].status,RESTARTED:.status.lastRestartedAt'
table() { k get ci -A -o "custom-columns=$COLUMNS" 2>/dev/null; }
# show_until SECONDS WHAT CHECK: redraws the table (on a terminal) or prints it when it changes,
# until CHECK holds.
show_until() {
  local limit=$1 what=$2 check=$3 deadline=$((SECONDS + $1)) last='' now
  while :; do
    for p in aap-sim ansible-rulebook operator-aap operator-eda prometheus; do expect_running "$p"; done
    now="$(table)"
    if [ "$now" != "$last" ]; then
      if [ -t 1 ]; then printf '\e[H\e[2J%s%s (t+%ss)%s\n\n' "$B" "$what" "$((SECONDS - started))" "$N"; else echo; fi
      echo "$now"
      last=$now
    fi
    if "$check"; then break; fi
    [ $SECONDS -lt $deadline ] || die "timed out after ${limit}s: $what"
    sleep 1
  done
}
all_running() {
  local out
  out="$(k get ci -A -o 'jsonpath={range .items[*]}{.status.phase}/{.status.jobs[-1:].state}{"\n"}{end}')"
  [ "$(grep -c . <<<"$out")" -eq 6 ] && ! grep -qv '^Running/Succeeded$' <<<"$out"
}
show_until 120 "provisioning 3 VMs through AAP and 3 through EDA" all_running
say "all six ComputeInstances are Running"

say "deleting demo-eda/vm-scratch: the operator runs a deprovision job, then releases it"
k delete ci -n demo-eda vm-scratch --wait=false | sed 's/^/  /'
gone() { ! k get ci -n demo-eda vm-scratch >/dev/null 2>&1; }
show_until 90 "deprovisioning demo-eda/vm-scratch" gone
say "demo-eda/vm-scratch is gone"

# The EDA CIs ran the sample playbooks, which made a VirtualMachine in the tenant's namespace
# (the AAP ones ran the simulator's stand-in, which makes none).
say "tenants (one per namespace here) and their namespaces:"
k get tenants -A | sed 's/^/  /'
vm_available() {
  [ "$(k get ci -n demo-eda vm-fedora -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}')" = True ]
}
show_until 60 "demo-eda/vm-fedora: its VirtualMachine is Ready" vm_available
requested=$(date -u +%Y-%m-%dT%H:%M:%SZ)
say "restarting demo-eda/vm-fedora (spec.restartRequestedAt=$requested): the operator deletes its VMI once, no job"
k patch ci -n demo-eda vm-fedora --type merge -p "{\"spec\":{\"restartRequestedAt\":\"$requested\"}}" | sed 's/^/  /'
restarted() { [ "$(k get ci -n demo-eda vm-fedora -o 'jsonpath={.status.lastRestartedAt}')" = "$requested" ]; }
show_until 60 "restarting demo-eda/vm-fedora" restarted
say "demo-eda/vm-fedora restarted (status.lastRestartedAt=$requested)"

echo
printf '%sDemo ready in %ss.%s Everything keeps running; poke at it:\n\n' "$G" "$((SECONDS - started))" "$N"
cat <<EOF
  export KUBECONFIG=$KUBECONFIG_FILE
  alias kubectl=$KUBECTL           # kubectl 1.20, matching the API server
  kubectl get ci -A
  kubectl get tenants -A
  kubectl describe ci -n demo-aap vm-fedora
  kubectl get ci -n demo-eda vm-fedora -o yaml
  kubectl get events.events.k8s.io -n demo-aap
  kubectl delete ci -n demo-aap vm-centos     # watch it go with: kubectl get ci -A -w
  kubectl apply -n demo-aap -f examples/computeinstances.yaml

  metrics: curl -s http://$(metrics_address operator-aap)/metrics   (AAP operator)
           curl -s http://$(metrics_address operator-eda)/metrics   (EDA operator)
  provision durations (Prometheus graph): $GRAPH_URL
  simulator: $SIM_URL/_sim/stats
  logs: $LOGS/

Stop everything with: ./x demo-down
EOF
