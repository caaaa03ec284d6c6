#!/usr/bin/env bash
# The README quick start: sets up the machine, starts a local 3-node cluster on
# loopback, boots a real VM on it and shows its console. Runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec deno run -A scripts/demo.ts "$@"
