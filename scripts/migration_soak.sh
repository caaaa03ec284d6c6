#!/usr/bin/env bash
# Runs scripts/migration_soak.ts in a network namespace of its own: a bridge with the
# host's address 10.99.0.1/24 and two taps (one per side, owned by QEMU's user).
# Usage: scripts/migration_soak.sh [migration_soak.ts flags]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ns=migsoak-$$
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 10.99.0.1/24 dev br0
ip -n "$ns" link set br0 up
user=$(id -u novactl-qemu 2>/dev/null || echo 0)
for t in mstap0 mstap1; do
	ip -n "$ns" tuntap add dev "$t" mode tap user "$user"
	ip -n "$ns" link set "$t" master br0 up
done
ip netns exec "$ns" /usr/bin/deno run -A "$here/migration_soak.ts" "$@"
