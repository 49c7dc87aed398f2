#!/usr/bin/env bash
# Installs what tessera needs (Debian 12, as root), builds it, and runs the whole test
# suite with ctest. GPU tests skip themselves where no GPU is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
