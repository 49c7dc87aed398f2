#!/usr/bin/env bash
# Packs binaries for one call of the GPU machine: builds the named targets in build/, copies
# them (stripped) to DIR/bin with the sentencepiece plugin in DIR/lib and every shared
# library the GPU machine lacks in DIR/bundle/lib (the shared device-bundle tool, which is
# also run on the plugin: without its own libsentencepiece it would load the GPU machine's
# and abort), records the source directory the tests were built in (they read the default
# model from there), then compresses it all into DIR/pack.tar.xz (the call carries DIR).
#   bench/device/pack.sh .device-m cuda_ops_test tessera tessera-bench-decode ...
# On the GPU machine, from the repo root:
#   tar -C DIR -xJf DIR/pack.tar.xz; export LD_LIBRARY_PATH=$PWD/DIR/bundle/lib:/usr/local/cuda/lib64
#   export TESSERA_SPM_PLUGIN=$PWD/DIR/lib/libtessera_spm.so
# DIR must be ignored by git (.git/info/exclude).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR TARGET..." >&2; exit 2; }
dir=$1; shift
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle_tool=${DEVICE_BUNDLE:-$root/../shared/tools/device-bundle}
cd "$root"
git check-ignore -q "$dir" || { echo "$dir is not ignored by git: add /$dir/ to .git/info/exclude" >&2; exit 2; }
ninja -C build -j"${JOBS:-2}" "$@" libtessera_spm.so > /dev/null
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for t in "$@"; do
  bin=$(find build -type f -name "$t" -perm -u+x -not -path "*/CMakeFiles/*" | head -1)
  [ -n "$bin" ] || { echo "no binary for target $t under build/" >&2; exit 1; }
  cp "$bin" "$stage/bin/"
done
cp build/lib/libtessera_spm.so "$stage/lib/"
strip "$stage"/bin/* "$stage"/lib/*
"$bundle_tool" "$stage/bundle" "$stage"/bin/* "$stage"/lib/* > /dev/null
echo "$root" > "$stage/source_dir"
mkdir -p "$dir"
rm -f "$dir/pack.tar.xz"
tar -C "$stage" -cf - bin lib bundle source_dir | xz -T"${JOBS:-2}" -6 > "$dir/pack.tar.xz"
echo "$dir/pack.tar.xz: $(du -h "$dir/pack.tar.xz" | cut -f1) ($(ls "$stage/bin" | wc -l) binaries)"
