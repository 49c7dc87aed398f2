#!/usr/bin/env bash
# Installs what tessera needs (Debian 12, as root), builds it, and starts it on the
# built-in default model. Extra arguments go to the command that is started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
bash scripts/build.sh
exec build/bin/tessera serve "$@"
