#!/usr/bin/env bash
# Installs what the integration tests need to run a real Kubernetes API server on loopback:
# etcd and kubectl from Debian, and a kube-apiserver 1.20.2 built from Debian's kubernetes source
# package (nothing can be downloaded from anywhere but package registries, so there is no kind,
# k3d or envtest here). Idempotent: when everything is in place it does nothing and exits quickly.
#
# Results:
#   ~/.cache/cloudkit/kube-apiserver-1.20.2   (built once, about 6 minutes on 2 cores)
#   ~/.cache/cloudkit/kube-controller-manager-1.20.2 (built with it, about 6 minutes more)
#   ~/.cache/cloudkit/kubectl-1.20.2          (Debian's kubectl, matching the server)
#   /usr/bin/etcd                             (Debian's etcd-server 3.4)
#
# Environment: CLOUDKIT_CACHE_DIR overrides ~/.cache/cloudkit.
set -euo pipefail

readonly K8S_VERSION=1.20.2
readonly CACHE_DIR="${CLOUDKIT_CACHE_DIR:-${HOME}/.cache/cloudkit}"
readonly APISERVER_BIN="${CACHE_DIR}/kube-apiserver-${K8S_VERSION}"
# Garbage collection by owner references and namespace deletion (Tenants) need it.
readonly CONTROLLER_MANAGER_BIN="${CACHE_DIR}/kube-controller-manager-${K8S_VERSION}"
readonly KUBECTL_BIN="${CACHE_DIR}/kubectl-${K8S_VERSION}"
readonly SOURCES_FILE=/etc/apt/sources.list.d/debian.sources
readonly SRC_SOURCES_FILE=/etc/apt/sources.list.d/cloudkit-debian-src.sources
readonly POLICY_RC=/usr/sbin/policy-rc.d

# Packages needed at run time and for the build. kubernetes-client is handled separately because
# another package may already own /usr/bin/kubectl (for example the Google Cloud SDK's kubectl).
readonly PACKAGES=(
  golang-go etcd-server rsync jq dpkg-dev
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
  openssl
)

log() { printf 'testenv-install: %s\n' "$*" >&2; }
die() { printf 'testenv-install: error: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "installing packages needs root or sudo"
  SUDO=(sudo)
fi

is_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
}

# The etcd-server package wants to start a system etcd. We run our own on random loopback ports,
# so deny service starts during the install with a temporary policy-rc.d (honoured by both
# invoke-rc.d and deb-systemd-invoke), unless the machine already has one.
POLICY_RC_OURS=0
deny_service_starts() {
  if [ ! -e "$POLICY_RC" ]; then
    printf '#!/bin/sh\n# Temporary, from cloudkit hack/testenv-install.sh\nexit 101\n' |
      "${SUDO[@]}" tee "$POLICY_RC" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY_RC"
    POLICY_RC_OURS=1
  fi
}
allow_service_starts() {
  if [ "$POLICY_RC_OURS" -eq 1 ]; then
    "${SUDO[@]}" rm -f "$POLICY_RC"
    POLICY_RC_OURS=0
  fi
}

etcd_pids() { pgrep -x etcd 2>/dev/null | sort || true; }

install_packages() {
  local missing=()
  local p
  for p in "${PACKAGES[@]}"; do
    is_installed "$p" || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  apt_update_once
  log "apt-get install ${missing[*]}"
  local before after started
  before="$(etcd_pids)"
  deny_service_starts
  trap allow_service_starts EXIT
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" || die "apt-get install failed"
  allow_service_starts
  trap - EXIT
  # Belt and braces: if a system etcd was started anyway, stop the one this install started.
  after="$(etcd_pids)"
  started="$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep -v '^$' || true)"
  if [ -n "$started" ]; then
    log "stopping the system etcd the package started (pid ${started//$'\n'/ })"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
      "${SUDO[@]}" systemctl disable --now etcd.service >/dev/null 2>&1 || true
    else
      "${SUDO[@]}" service etcd stop >/dev/null 2>&1 || true
    fi
    local pid
    for pid in $started; do
      "${SUDO[@]}" kill "$pid" 2>/dev/null || true
    done
  fi
}

# Debian's kubectl 1.20, matching the server. When /usr/bin/kubectl is already there from
# another package (installing kubernetes-client would fail on the file conflict) or from no
# package (it would be overwritten), extract the binary from the .deb into the cache instead.
install_kubectl() {
  if [ -x "$KUBECTL_BIN" ] && "$KUBECTL_BIN" version --client >/dev/null 2>&1; then
    return 0
  fi
  mkdir -p "$CACHE_DIR"
  local owner=""
  if [ -e /usr/bin/kubectl ] || [ -L /usr/bin/kubectl ]; then
    owner="$(dpkg-query -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)"
    owner="${owner:-no package}"
  fi
  if [ -z "$owner" ] || [ "$owner" = "kubernetes-client" ]; then
    if ! is_installed kubernetes-client; then
      apt_update_once
      log "apt-get install kubernetes-client"
      DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        kubernetes-client || die "apt-get install kubernetes-client failed"
    fi
    ln -sfn /usr/bin/kubectl "$KUBECTL_BIN"
  else
    log "/usr/bin/kubectl belongs to package '$owner'; extracting Debian's kubectl into $CACHE_DIR"
    apt_update_once
    local tmp
    tmp="$(mktemp -d "${CACHE_DIR}/kubectl.XXXXXX")"
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User="$(id -un)" kubernetes-client) ||
      { rm -rf "$tmp"; die "apt-get download kubernetes-client failed"; }
    dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$tmp/root" ||
      { rm -rf "$tmp"; die "could not unpack kubernetes-client"; }
    install -m 0755 "$tmp/root/usr/bin/kubectl" "$KUBECTL_BIN.tmp"
    mv -f "$KUBECTL_BIN.tmp" "$KUBECTL_BIN"
    rm -rf "$tmp"
  fi
  "$KUBECTL_BIN" version --client >/dev/null 2>&1 || die "$KUBECTL_BIN does not run"
  log "kubectl: $KUBECTL_BIN"
}

# `apt-get source` needs a deb-src entry. Mirror the first `deb` stanza of debian.sources that
# carries bookworm (same URIs and Signed-By), for the main component only.
ensure_deb_src() {
  if [ -n "$(apt-cache showsrc kubernetes 2>/dev/null || true)" ]; then
    return 0
  fi
  [ -r "$SOURCES_FILE" ] || die "$SOURCES_FILE not found: cannot add a deb-src entry for bookworm"
  local uris signed_by
  read -r uris signed_by < <(awk '
    BEGIN { RS = ""; FS = "\n" }
    {
      types = ""; suites = ""; uris = ""; sb = ""
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^Types:/)     { types = $i;  sub(/^Types:[ \t]*/, "", types) }
        if ($i ~ /^Suites:/)    { suites = $i; sub(/^Suites:[ \t]*/, "", suites) }
        if ($i ~ /^URIs:/)      { uris = $i;   sub(/^URIs:[ \t]*/, "", uris) }
        if ($i ~ /^Signed-By:/) { sb = $i;     sub(/^Signed-By:[ \t]*/, "", sb) }
      }
      if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/) { print uris, sb; exit }
    }' "$SOURCES_FILE")
  [ -n "${uris:-}" ] || die "no 'deb' entry for bookworm in $SOURCES_FILE"
  log "adding deb-src for bookworm main ($uris) in $SRC_SOURCES_FILE"
  {
    echo "# Added by cloudkit hack/testenv-install.sh: source packages to build kube-apiserver."
    echo "Types: deb-src"
    echo "URIs: $uris"
    echo "Suites: bookworm"
    echo "Components: main"
    if [ -n "${signed_by:-}" ]; then echo "Signed-By: $signed_by"; fi
  } | "${SUDO[@]}" tee "$SRC_SOURCES_FILE" >/dev/null
  APT_UPDATED=0
  apt_update_once
}

# Builds each of kube-apiserver and kube-controller-manager that is not cached yet, from one
# download of the source package.
build_kube_binaries() {
  local wanted=()
  [ -x "$APISERVER_BIN" ] && "$APISERVER_BIN" --version >/dev/null 2>&1 || wanted+=(kube-apiserver)
  [ -x "$CONTROLLER_MANAGER_BIN" ] && "$CONTROLLER_MANAGER_BIN" --version >/dev/null 2>&1 ||
    wanted+=(kube-controller-manager)
  if [ "${#wanted[@]}" -eq 0 ]; then
    return 0
  fi
  ensure_deb_src
  mkdir -p "$CACHE_DIR"
  local scratch
  scratch="$(mktemp -d "${CACHE_DIR}/build.XXXXXX")"
  # shellcheck disable=SC2064 # expand now: the path is fixed for this build
  trap "rm -rf '$scratch'" EXIT
  log "downloading the kubernetes source package into $scratch"
  (cd "$scratch" && apt-get source -qq -o APT::Sandbox::User="$(id -un)" kubernetes >"$scratch/apt-source.log" 2>&1) ||
    { tail -n 20 "$scratch/apt-source.log" >&2; die "apt-get source kubernetes failed"; }
  local src
  src="$(find "$scratch" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)"
  [ -n "$src" ] && [ -f "$src/Makefile" ] || die "unexpected layout of the kubernetes source package"

  # Go 1.19+ crashes the vendored reflect2 1.0.1 at run time (SIGSEGV in map iteration); Debian's
  # packaged reflect2 and json-iterator work.
  log "replacing vendored reflect2 and json-iterator with Debian's copies"
  local mod
  for mod in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    [ -d "/usr/share/gocode/src/$mod" ] || die "/usr/share/gocode/src/$mod missing (package not installed?)"
    rm -rf "${src:?}/vendor/$mod"
    mkdir -p "$src/vendor/$mod"
    rsync -a --exclude '.git' "/usr/share/gocode/src/$mod/" "$src/vendor/$mod/"
    rm -f "$src/vendor/$mod/go.mod" "$src/vendor/$mod/go.sum"
  done

  local targets=() bin
  for bin in "${wanted[@]}"; do targets+=("cmd/$bin"); done
  log "building ${wanted[*]} ${K8S_VERSION} (about 6 minutes each on 2 cores; log: $scratch/build.log)"
  local started=$SECONDS
  (
    cd "$src"
    mkdir -p .go/src/k8s.io
    ln -sfn ../../.. .go/src/k8s.io/kubernetes
    # Without .git the version would be empty; the apiserver reports it on /version.
    export KUBE_GIT_VERSION="v${K8S_VERSION}" KUBE_GIT_TREE_STATE=archive KUBE_GIT_MAJOR=1 \
      KUBE_GIT_MINOR=20
    GOPATH="$src/.go" GO111MODULE=off CGO_ENABLED=0 make WHAT="${targets[*]}"
  ) >"$scratch/build.log" 2>&1 || { tail -n 40 "$scratch/build.log" >&2; die "build of ${wanted[*]} failed"; }
  for bin in "${wanted[@]}"; do
    local out="$src/_output/local/bin/linux/amd64/$bin"
    [ -x "$out" ] || out="$(find "$src/_output" -type f -name "$bin" -perm -u+x | head -n 1)"
    [ -n "$out" ] && [ -x "$out" ] || die "build finished but no $bin binary was found"
    install -m 0755 "$out" "${CACHE_DIR}/${bin}-${K8S_VERSION}.tmp"
    mv -f "${CACHE_DIR}/${bin}-${K8S_VERSION}.tmp" "${CACHE_DIR}/${bin}-${K8S_VERSION}"
  done
  rm -rf "$scratch"
  trap - EXIT
  log "built ${wanted[*]} in $((SECONDS - started)) s"
}

main() {
  install_packages
  install_kubectl
  build_kube_binaries
  command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || die "etcd not found after installing etcd-server"
  log "ready: $APISERVER_BIN $("$APISERVER_BIN" --version 2>/dev/null | tr -d '\n'), etcd $(etcd --version 2>/dev/null | head -n 1 | awk '{print $3}')"
}

main "$@"
