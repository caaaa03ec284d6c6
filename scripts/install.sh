#!/usr/bin/env bash
# Installs novactl from this checkout:
#   PREFIX/bin/novactl                  a launcher running the bundled program (deno bundle),
#                                       or with --compile a `deno compile` binary
#   PREFIX/lib/novactl/novactl.js       the bundled program (one file, npm packages included)
#   PREFIX/lib/novactl/ui/              the built dashboard, if `deno task build:ui` has run
#   /etc/systemd/system/novactl.service the unit (scripts/novactl.service)
#   /etc/novactl/node.yaml              a sample node config, only if there is none
#   /var/lib/novactl                    the data dir (0700)
# Running it again upgrades the program and the unit and keeps the config and the data.
# With --root DIR (or DESTDIR=DIR) everything goes under DIR, e.g. for packaging or tests.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: scripts/install.sh [--prefix DIR] [--root DIR] [--compile]
  --prefix DIR  where bin/novactl and lib/novactl go (default /usr/local)
  --root DIR    install under DIR instead of / (env DESTDIR does the same)
  --compile     install a `deno compile` binary instead of the launcher and bundle
                (deno compile downloads its runtime base binary, or takes DENORT_BIN)
USAGE
}

fail() {
  echo "install.sh: $*" >&2
  exit 1
}

prefix=/usr/local
root="${DESTDIR:-}"
compile=0
while [ $# -gt 0 ]; do
  case "$1" in
  --prefix) [ $# -ge 2 ] || fail "--prefix needs a directory"; prefix="$2"; shift 2 ;;
  --prefix=*) prefix="${1#*=}"; shift ;;
  --root) [ $# -ge 2 ] || fail "--root needs a directory"; root="$2"; shift 2 ;;
  --root=*) root="${1#*=}"; shift ;;
  --compile) compile=1; shift ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) fail "--prefix must be an absolute path, not $prefix" ;; esac
root="${root%/}"

src="$(cd "$(dirname "$0")/.." && pwd)"
deno="${DENO:-$(command -v deno || true)}"
[ -n "$deno" ] || fail "deno is not on PATH (scripts/setup.sh installs it)"
deno="$(readlink -f "$deno")"

bin="$root$prefix/bin"
lib="$root$prefix/lib/novactl"
units="$root/etc/systemd/system"
conf="$root/etc/novactl"
data="$root/var/lib/novactl"
install -d -m 0755 "$bin" "$lib" "$units"
install -d -m 0755 "$conf"
install -d -m 0700 "$data"
chmod 0700 "$data" # also when it existed with looser modes

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Build into tmp first and move into place last: a failed build leaves the old install as it was.
if [ "$compile" = 1 ]; then
  if ! (cd "$src" && "$deno" compile -A --unstable-net -o "$tmp/novactl" main.ts) >"$tmp/log" 2>&1; then
    cat "$tmp/log" >&2
    fail "deno compile failed (it downloads its runtime base binary unless DENORT_BIN names one); run without --compile to install the bundled program with a launcher"
  fi
  install -m 0755 "$tmp/novactl" "$bin/.novactl.new"
  rm -f "$lib/novactl.js"
else
  (cd "$src" && "$deno" bundle --platform=deno -o "$tmp/novactl.js" main.ts) >"$tmp/log" 2>&1 ||
    { cat "$tmp/log" >&2; fail "deno bundle failed"; }
  install -m 0644 "$tmp/novactl.js" "$lib/.novactl.js.new"
  mv -f "$lib/.novactl.js.new" "$lib/novactl.js"
  # The launcher finds the bundle beside itself (../lib/novactl), so an install under --root runs
  # in place; --no-config keeps a deno.json in the caller's directory out of it, --unstable-net
  # lets the node notify systemd (host/systemd/mod.ts).
  cat >"$tmp/launcher" <<LAUNCHER
#!/bin/sh
# novactl launcher, written by scripts/install.sh: runs the bundled program with Deno.
here="\$(dirname "\$(readlink -f "\$0")")"
lib="\$here/../lib/novactl"
deno="\${NOVACTL_DENO:-$deno}"
[ -x "\$deno" ] || deno="\$(command -v deno)" || { echo "novactl: deno not found" >&2; exit 1; }
export NOVACTL_UI_DIR="\${NOVACTL_UI_DIR:-\$lib/ui}"
exec "\$deno" run -A --unstable-net --no-config "\$lib/novactl.js" "\$@"
LAUNCHER
  install -m 0755 "$tmp/launcher" "$bin/.novactl.new"
fi
mv -f "$bin/.novactl.new" "$bin/novactl"

if [ -f "$src/ui/dist/index.html" ]; then
  rm -rf "$lib/.ui.new"
  cp -R "$src/ui/dist" "$lib/.ui.new"
  rm -rf "$lib/ui"
  mv "$lib/.ui.new" "$lib/ui"
else
  echo "install.sh: the dashboard is not built (deno task build:ui): /ui/ will say so" >&2
fi

sed "s#/usr/local/#$prefix/#g" "$src/scripts/novactl.service" >"$tmp/novactl.service"
install -m 0644 "$tmp/novactl.service" "$units/novactl.service"

if [ ! -e "$conf/node.yaml" ]; then
  address="$(hostname -I 2>/dev/null | awk '{print $1}' || true)"
  advertise="# advertise: https://10.0.0.5:7070"
  [ -z "$address" ] || advertise="advertise: https://$address:7070"
  # 0600: a join token may be put in it.
  install -m 0600 /dev/null "$conf/node.yaml"
  cat >"$conf/node.yaml" <<CONFIG
# novactl node config: keys are \`novactl node start\` flags without the dashes; flags given on the
# command line (or in NOVACTL_NODE_ARGS, /etc/default/novactl) override them.
name: $(hostname -s 2>/dev/null | tr 'A-Z_' 'a-z-' || echo n1)
data-dir: /var/lib/novactl
listen: 0.0.0.0:7070
# The URL peers and clients reach this node at (with listen 0.0.0.0, an address of this host).
$advertise
# To join a cluster instead of starting one (token from \`novactl cluster token create\`):
# join: https://10.0.0.1:7070
# token-file: /etc/novactl/join.token
# label:
#   rack: r1
# networking: on
# log-level: info
CONFIG
fi
if [ ! -e "$root/etc/default/novactl" ]; then
  install -d -m 0755 "$root/etc/default"
  cat >"$root/etc/default/novactl" <<'DEFAULTS'
# Environment of the novactl service (systemd EnvironmentFile).
# NOVACTL_NODE_ARGS="--log-level debug"
DEFAULTS
fi

echo "installed novactl $("$bin/novactl" version --client | sed 's/^Client Version: //') to $bin/novactl"
if [ -z "$root" ]; then
  echo "next: edit /etc/novactl/node.yaml, then: systemctl daemon-reload && systemctl enable --now novactl"
fi
