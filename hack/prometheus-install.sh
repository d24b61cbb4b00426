#!/usr/bin/env bash
# Puts Debian's Prometheus server and promtool into the cache, for the monitoring tests (alert
# rule unit tests, a real server scraping the operator) and for `./x demo`. The package is only
# downloaded and unpacked (`apt-get download` + `dpkg -x`), never installed, so no system service
# is set up and nothing outside the cache changes. Idempotent: when the binaries are in place it
# only says so.
#
# Result: ~/.cache/cloudkit/prometheus-<version>/usr/bin/{prometheus,promtool} and the web UI's
# files in ~/.cache/cloudkit/prometheus-<version>/usr/share/prometheus/web/ (pass that directory as
# `--web.local-assets`; Debian's binary looks in /usr/share/prometheus/web/ by default). The UI's
# JavaScript libraries are links into ../javascript/, so the libjs-* packages the prometheus
# package depends on are unpacked next to it.
#
# Environment: CLOUDKIT_CACHE_DIR overrides ~/.cache/cloudkit.
set -euo pipefail

readonly CACHE_DIR="${CLOUDKIT_CACHE_DIR:-${HOME}/.cache/cloudkit}"

log() { printf 'prometheus-install: %s\n' "$*" >&2; }
die() { printf 'prometheus-install: error: %s\n' "$*" >&2; exit 1; }

for dir in "$CACHE_DIR"/prometheus-*/; do
  if [ -x "${dir}usr/bin/prometheus" ] && [ -x "${dir}usr/bin/promtool" ] \
    && [ -d "${dir}usr/share/javascript/rickshaw" ]; then
    log "present in ${dir%/}"
    exit 0
  fi
done

command -v apt-get >/dev/null 2>&1 || die "apt-get is required (Debian's prometheus package)"
command -v dpkg >/dev/null 2>&1 || die "dpkg is required (Debian's prometheus package)"

candidate() { apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
version="$(candidate)"
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  # A fresh machine may not have its package lists yet.
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "no package list names prometheus; run 'apt-get update' as root"
    SUDO=(sudo)
  fi
  log "apt-get update"
  "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
  version="$(candidate)"
  [ -n "$version" ] && [ "$version" != "(none)" ] || die "no Debian package 'prometheus' in the configured sources"
fi

# 2.42.0+ds-5+deb12u1 -> 2.42.0
upstream="${version#*:}"
upstream="${upstream%%[+~-]*}"
target="$CACHE_DIR/prometheus-$upstream"
log "downloading Debian's prometheus $version and its web UI's libjs-* packages (about 30 MB, first run only)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# As root, apt hands downloads to its sandbox user, which cannot write into a private temp dir.
sandbox=()
[ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
# The libjs-* packages of the web UI, and theirs (rickshaw needs d3).
libjs() { apt-cache depends --no-recommends --no-suggests "$@" 2>/dev/null | awk '/Depends: libjs-/ { print $2 }'; }
js=($(libjs prometheus))
[ "${#js[@]}" -eq 0 ] || js=($(printf '%s\n' "${js[@]}" $(libjs "${js[@]}") | sort -u))
(cd "$work" && apt-get download -q "${sandbox[@]}" "prometheus=$version" "${js[@]}" >/dev/null) \
  || die "apt-get download prometheus=$version ${js[*]} failed"
deb="$(ls "$work"/prometheus_*.deb 2>/dev/null | head -n 1)"
[ -n "$deb" ] || die "apt-get download left no prometheus_*.deb"
mkdir -p "$work/root"
for d in "$work"/*.deb; do dpkg -x "$d" "$work/root"; done
# Time zone data the UI does not load (moment-timezone-with-data.min.js has it): 200 MB.
rm -rf "$work/root/usr/share/javascript/moment-timezone/data"
for bin in prometheus promtool; do
  [ -x "$work/root/usr/bin/$bin" ] || die "the package has no usr/bin/$bin"
done
mkdir -p "$CACHE_DIR"
rm -rf "$target"
# Only the binaries and the web UI's files; a move keeps a half-written directory invisible.
mkdir -p "$work/keep/usr/bin" "$work/keep/usr/share"
mv "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$work/keep/usr/bin/"
mv "$work/root/usr/share/prometheus" "$work/keep/usr/share/"
for d in javascript nodejs; do
  [ ! -d "$work/root/usr/share/$d" ] || mv "$work/root/usr/share/$d" "$work/keep/usr/share/"
done
mv "$work/keep" "$target"
"$target/usr/bin/promtool" --version >/dev/null 2>&1 || die "$target/usr/bin/promtool does not run"
log "installed $target/usr/bin/{prometheus,promtool}"
