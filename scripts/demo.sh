#!/usr/bin/env bash
# The README quick start: sets up the machine, starts a local 3-node cluster with
# real networking (a network namespace per node), boots two VMs on different
# hosts on an overlay network and shows them pinging each other. Runs until
# Ctrl-C (--exit: stops after showing them); exits 1 if the ping fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec deno run -A scripts/demo.ts "$@"
