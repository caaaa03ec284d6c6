#!/usr/bin/env bash
# QEMU 10 from Debian bookworm-backports, for hosts whose guests run under TCG (no usable KVM):
# QEMU before 9.0 loses guest writes during a live migration under TCG, so novactl pauses such
# guests for the copy (migration.stopAndCopy=auto; README). With QEMU >= 9 it migrates live.
#
#   sudo scripts/install_qemu_backports.sh
#       Adds bookworm-backports to apt's sources (if missing) and installs qemu-system-x86 and
#       qemu-utils from it, for every user of the host. Restart the node afterwards: it reads
#       QEMU's release once, at start. Running VMs keep their old QEMU until they stop or move.
#
#   scripts/install_qemu_backports.sh --private DIR
#       Installs nothing system-wide: downloads the packages with a private apt state under DIR
#       and unpacks them into DIR/root. Then run novactl (or its tests) with
#         PATH="DIR/root/usr/bin:$PATH"
#       QEMU finds its own firmware relative to its binary (DIR/root/usr/share/qemu) and the
#       system's SeaBIOS/iPXE at their usual places. qemu-img and qemu-io stay the system's.
#
#   scripts/install_qemu_backports.sh --private DIR --suite bookworm
#       The same from another suite: bookworm's own QEMU 7.2, which the rolling-upgrade test
#       gives the nodes still running novactl 0.1.0 (it passes -runas, which QEMU 10 lacks).
set -euo pipefail

SUITE=bookworm-backports
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
private=""
while [[ $# -gt 0 ]]; do
  case $1 in
  --private) private=${2:?"--private needs a directory"} && shift 2 ;;
  --suite) SUITE=${2:?"--suite needs a Debian suite"} && shift 2 ;;
  *)
    echo "usage: $0 [--private DIR [--suite SUITE]]" >&2
    exit 2
    ;;
  esac
done
if [[ -z $private && $SUITE != bookworm-backports ]]; then
  echo "install_qemu_backports: --suite only with --private" >&2
  exit 2
fi

. /etc/os-release
if [[ ${VERSION_CODENAME:-} != bookworm ]]; then
  echo "install_qemu_backports: for Debian bookworm; this is ${PRETTY_NAME:-unknown}" >&2
  exit 1
fi

if [[ -z $private ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install_qemu_backports: run as root (or use --private DIR)" >&2
    exit 1
  fi
  if ! grep -rqs "^deb .*[[:space:]]$SUITE[[:space:]]" /etc/apt/sources.list /etc/apt/sources.list.d/ &&
    ! grep -rqs "Suites:.*$SUITE" /etc/apt/sources.list.d/; then
    echo "deb $MIRROR $SUITE main" >/etc/apt/sources.list.d/$SUITE.list
  fi
  apt-get update -qq
  # -t: QEMU and whatever it needs from backports; everything else stays bookworm's.
  apt-get install -y -qq --no-install-recommends -t "$SUITE" qemu-system-x86 qemu-utils
  qemu-system-x86_64 --version | head -1
  exit 0
fi

# Private: apt with its own sources, lists and cache; the system's dpkg database is untouched.
mkdir -p "$private"/{apt/lists/partial,apt/cache/archives/partial,debs,root}
private=$(cd "$private" && pwd)
echo "deb $MIRROR $SUITE main" >"$private/apt/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$private/apt/sources.list"
  -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$private/apt/lists"
  -o "Dir::Cache=$private/apt/cache"
  -o "APT::Sandbox::User=$(id -un)"
  -o "Debug::NoLocking=1"
)
apt-get "${apt_opts[@]}" update -qq
# The QEMU packages only: their other dependencies come from the system (checked below).
pkgs=(qemu-system-x86 qemu-system-common qemu-system-data)
# PKG/SUITE: that suite's version, not the one the system has installed.
(cd "$private/debs" && apt-get "${apt_opts[@]}" download "${pkgs[@]/%//$SUITE}")
for deb in "$private"/debs/*.deb; do dpkg-deb -x "$deb" "$private/root"; done
# QEMU finds its firmware path relative to its binary: DIR/root/usr/share/seabios and
# DIR/root/usr/lib/ipxe/qemu, which the QEMU packages do not ship (SeaBIOS and iPXE do): link
# the system's in.
for fw in /usr/share/seabios /usr/lib/ipxe/qemu; do
  if [[ -d $fw && ! -e $private/root$fw ]]; then
    mkdir -p "$(dirname "$private/root$fw")"
    ln -s "$fw" "$private/root$fw"
  fi
done
missing=$(ldd "$private/root/usr/bin/qemu-system-x86_64" | grep "not found" || true)
if [[ -n $missing ]]; then
  echo "install_qemu_backports: libraries this system lacks for QEMU from $SUITE:" >&2
  echo "$missing" >&2
  exit 1
fi
"$private/root/usr/bin/qemu-system-x86_64" --version | head -1
echo "PATH=\"$private/root/usr/bin:\$PATH\""
