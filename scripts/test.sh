#!/usr/bin/env bash
# The whole test suite: static checks, unit tests, simulation, multi-process tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
deno task check
deno test -A --quiet
