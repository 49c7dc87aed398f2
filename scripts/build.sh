#!/usr/bin/env bash
# Configures and builds tessera into build/ (CUDA backend too when nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${TESSERA_BUILD_JOBS:-$(nproc)}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$jobs"
