#!/usr/bin/env bash
# Creates, once, the Python virtualenv with the real Ansible clients that the fidelity tests of
# the AAP simulator (tests/aap-sim) and the EDA tests drive: ansible-playbook with the
# awx.awx and kubernetes.core collections, and ansible-rulebook (which needs Java 17).
#
# The venv lives outside the repository, in $CLOUDKIT_PYTHON_VENV (default
# ~/.cache/cloudkit/venv). Idempotent: when the venv already holds exactly the pinned versions it
# only says so (well under a second). Change a pin below and the next run rebuilds the venv.
set -euo pipefail

VENV="${CLOUDKIT_PYTHON_VENV:-$HOME/.cache/cloudkit/venv}"
PYTHON="${PYTHON:-python3}"
JAVA_HOME_17=/usr/lib/jvm/java-17-openjdk-amd64
# Versions verified to install and work together on Debian 12 with Python 3.11.
REQUIREMENTS=(
  "ansible-core==2.19.14"
  "ansible==12.3.0"
  "ansible-rulebook==1.3.2"
  "kubernetes==37.0.2"
)
STAMP="$VENV/.cloudkit-requirements"

say() { echo "python-venv: $*"; }

ensure_java() {
  if [ -x "$JAVA_HOME_17/bin/java" ]; then
    say "Java 17 present at $JAVA_HOME_17 (ansible-rulebook: export JAVA_HOME=$JAVA_HOME_17)"
    return
  fi
  if [ "$(id -u)" -ne 0 ]; then
    say "Java 17 missing: run as root 'apt-get install -y openjdk-17-jdk-headless' (ansible-rulebook needs it)"
    return
  fi
  say "installing openjdk-17-jdk-headless for ansible-rulebook (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jdk-headless >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jdk-headless >/dev/null; }
}

want="$(printf '%s\n' "${REQUIREMENTS[@]}")"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
  && [ -x "$VENV/bin/ansible-playbook" ] && [ -x "$VENV/bin/ansible-rulebook" ] \
  && "$VENV/bin/python" -c 'import kubernetes' 2>/dev/null; then
  say "$VENV is up to date (${REQUIREMENTS[*]})"
  ensure_java
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || { say "$PYTHON not found (set PYTHON=/path/to/python3)"; exit 1; }
if [ -d "$VENV" ]; then
  say "rebuilding $VENV (missing or different pinned versions)"
  rm -rf "$VENV"
else
  say "creating $VENV"
fi
mkdir -p "$(dirname "$VENV")"
if ! "$PYTHON" -m venv "$VENV"; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "'$PYTHON -m venv' failed; installing python3-venv (apt-get) and retrying"
    rm -rf "$VENV"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; }
    "$PYTHON" -m venv "$VENV"
  else
    say "'$PYTHON -m venv' failed; on Debian install python3-venv (apt-get install -y python3-venv)"
    exit 1
  fi
fi
say "installing ${REQUIREMENTS[*]} (about a minute when not cached)"
"$VENV/bin/pip" install --disable-pip-version-check -q --upgrade pip
"$VENV/bin/pip" install --disable-pip-version-check -q "${REQUIREMENTS[@]}"
echo "$want" >"$STAMP"
say "done: $("$VENV/bin/ansible-playbook" --version | head -n1), $("$VENV/bin/ansible-rulebook" --version 2>/dev/null | head -n1 || echo 'ansible-rulebook (version check needs Java)')"
ensure_java
