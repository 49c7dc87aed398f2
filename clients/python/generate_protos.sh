#!/bin/sh
# Regenerates tessera_client/_gen/ from proto/tessera/v1/*.proto with protoc and gRPC's Python
# plugin (Debian: protobuf-compiler, protobuf-compiler-grpc). The output is committed so the
# package installs without a compiler; rerun this after changing a .proto.
# usage: clients/python/generate_protos.sh [OUT_DIR]   (default: tessera_client/_gen)
# PROTOC and GRPC_PYTHON_PLUGIN override the tools found on PATH.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proto_root="$here/../../proto"
out="${1:-$here/tessera_client/_gen}"
plugin="${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin)}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PROTOC:-protoc}" -I "$proto_root" --python_out="$tmp" --grpc_out="$tmp" --plugin=protoc-gen-grpc="$plugin" \
  "$proto_root/tessera/v1/inference.proto" "$proto_root/tessera/v1/admin.proto"
mkdir -p "$out"
for f in "$tmp"/tessera/v1/*.py; do
  # protoc names the modules by their proto path (tessera.v1.X_pb2); inside this package
  # they are siblings, so the service modules import their messages relatively.
  sed -e 's/^from tessera\.v1 import \(.*_pb2\)/from . import \1/' "$f" > "$out/$(basename "$f")"
done
