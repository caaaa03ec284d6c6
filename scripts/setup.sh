#!/usr/bin/env bash
# Installs everything novactl's tests and demo need on a fresh Debian machine
# that has only Node/npm: Deno (from npm), and Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v ip >/dev/null || need_apt+=(iproute2)
# The linearizability test cuts links between network namespaces with nftables rules.
command -v nft >/dev/null || need_apt+=(nftables)
command -v df >/dev/null || need_apt+=(coreutils)
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v setpriv >/dev/null || need_apt+=(util-linux) # HA QEMUs: setpriv --pdeathsig
command -v genisoimage >/dev/null || need_apt+=(genisoimage)
command -v strace >/dev/null || need_apt+=(strace) # core/store/files_test.ts: which syscalls a durable rename makes
command -v cpio >/dev/null || need_apt+=(cpio)
command -v openssl >/dev/null || need_apt+=(openssl) # host/kvm tests make their own CA for QEMU TLS
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
# Real networks: each host's own Open vSwitch (userspace datapath where the kernel lacks the
# module) and OVN. Debian's policy-rc.d keeps the services from starting; nodes start their own.
command -v ovs-vswitchd >/dev/null || need_apt+=(openvswitch-switch)
command -v ovn-controller >/dev/null || need_apt+=(ovn-host)
command -v ovn-northd >/dev/null || need_apt+=(ovn-central)
# Tests feed OVS's userspace datapath through veths, whose tx checksum offload must be off.
command -v ethtool >/dev/null || need_apt+=(ethtool)
# tests/node_service_test.ts checks scripts/novactl.service with systemd-analyze verify.
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# The btrfs storage backend (host/storage/btrfs.ts): mkfs.btrfs, btrfs subvolume/send/receive.
command -v btrfs >/dev/null || need_apt+=(btrfs-progs)
# bench:net sees a guest's DHCP lease as OVN's DHCPACK on its tap (bench/lib/dhcp_watch.ts).
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
# The dashboard's browser tests and bench:ui drive Debian's Chromium (tests/support/browser.ts).
command -v chromium >/dev/null || need_apt+=(chromium)
dpkg -s fonts-liberation >/dev/null 2>&1 || need_apt+=(fonts-liberation) # readable screenshots
# `novactl completion zsh|fish` is checked in the shells themselves (cmd/completion_test.ts).
command -v zsh >/dev/null || need_apt+=(zsh)
command -v fish >/dev/null || need_apt+=(fish)
if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Guests here run under TCG (no KVM), and QEMU before 9.0 loses guest writes in a live migration
# under TCG, so novactl would pause them for the whole copy (migration.stopAndCopy=auto, README).
# On Debian bookworm (QEMU 7.2) take QEMU 10 from bookworm-backports, which migrates them live.
# NOVACTL_SYSTEM_QEMU=1 keeps the distribution's QEMU.
qemu_major=$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p')
if [ "${NOVACTL_SYSTEM_QEMU:-}" != 1 ] && [ "${qemu_major:-0}" -lt 9 ] &&
  grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive bash scripts/install_qemu_backports.sh >/dev/null
  else
    echo "setup: QEMU $qemu_major migrates TCG guests only paused; as root this installs QEMU 10" >&2
  fi
fi

# tests/rolling_upgrade_test.ts runs novactl 0.1.0, which passes QEMU -runas (gone in QEMU 10):
# its nodes get bookworm's own QEMU 7.2, unpacked here beside the system's (nothing installed).
PREVIOUS_QEMU=/opt/novactl-test/qemu-bookworm
qemu_major=$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p')
if [ "${qemu_major:-0}" -ge 9 ] && grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release &&
  [ ! -x "$PREVIOUS_QEMU/root/usr/bin/qemu-system-x86_64" ]; then
  bash scripts/install_qemu_backports.sh --private "$PREVIOUS_QEMU" --suite bookworm >/dev/null
fi

# QEMU drops root for this system user (-runas, see host/kvm/confine.ts); idempotent.
if ! getent passwd novactl-qemu >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin novactl-qemu
  else
    echo "setup: not root, user novactl-qemu not created: QEMU will run as the node's own user" >&2
  fi
fi

# NIC hot-plug: QEMU, already running as novactl-qemu, opens /dev/net/tun itself for the new
# tap (owned by that user). Debian's udev rule makes the device 0666; some containers leave it 0600.
if [ "$(id -u)" = 0 ] && [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
  chmod 0666 /dev/net/tun
fi

if ! command -v deno >/dev/null; then
  npm install -g --silent deno@2.9.6 >/dev/null
fi

# Fetch and cache npm dependencies pinned in deno.json / deno.lock.
deno install --frozen >/dev/null 2>&1 || deno install >/dev/null
# The dashboard served at /ui/: its browser packages (pinned in ui/package-lock.json), built
# into ui/dist.
npm ci --prefix ui --no-audit --no-fund --silent >/dev/null
deno task build:ui >/dev/null
# The small test guest (Debian kernel + busybox initramfs with qemu-ga) for tests and the demo.
bash scripts/build_guest.sh >/dev/null
echo "setup ok: $(deno --version | head -1), $(qemu-system-x86_64 --version | head -1)"
