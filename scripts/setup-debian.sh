#!/usr/bin/env bash
# Installs the Debian 12 packages tessera needs to build and test. Idempotent: packages
# already present are left alone, and `apt-get update` runs only when something is missing.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  prometheus-cpp-dev libsentencepiece-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libboost-dev python3 python3-grpcio python3-protobuf curl
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
