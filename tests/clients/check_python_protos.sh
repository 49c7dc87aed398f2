#!/bin/sh
# Fails when clients/python/tessera_client/_gen/ differs from what generate_protos.sh makes
# from proto/tessera/v1 now (a .proto changed without regenerating the Python modules).
# usage: check_python_protos.sh REPO_ROOT
set -eu
root="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sh "$root/clients/python/generate_protos.sh" "$tmp"
for f in "$tmp"/*.py; do
  if ! cmp -s "$f" "$root/clients/python/tessera_client/_gen/$(basename "$f")"; then
    echo "clients/python/tessera_client/_gen/$(basename "$f") is stale: run clients/python/generate_protos.sh"
    diff -u "$root/clients/python/tessera_client/_gen/$(basename "$f")" "$f" | head -40
    exit 1
  fi
done
echo "generated Python modules match proto/tessera/v1"
