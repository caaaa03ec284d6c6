#!/usr/bin/env bash
# The whole test suite: static checks, unit tests, simulation, multi-process tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
deno task check
# Files run one after another: multi-process tests measure elections and
# failovers, which two cores shared with a parallel simulation would distort.
deno task test
