#!/usr/bin/env bash
# Installs everything novactl's tests and demo need on a fresh Debian machine
# that has only Node/npm: Deno (from npm), and Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v df >/dev/null || need_apt+=(coreutils)
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v deno >/dev/null; then
  npm install -g --silent deno@2.9.6 >/dev/null
fi

# Fetch and cache npm dependencies pinned in deno.json / deno.lock.
deno install --frozen >/dev/null 2>&1 || deno install >/dev/null
echo "setup ok: $(deno --version | head -1)"
