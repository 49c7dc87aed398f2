#!/usr/bin/env bash
# Regenerates data/eval/stories_eval.txt and data/calib/stories_calib.txt by sampling the
# unquantized default model (models/stories260k) with fixed seeds; the two texts use
# disjoint seeds. Usage: data/eval/make_texts.sh [path/to/tessera]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tessera="${1:-$root/build/bin/tessera}"
prompts=("Once upon a time" "One day" "Lily and Ben" "The little dog" "Tom had a red ball" "In the park")
sample() {  # sample SEED_FIRST SEED_LAST
  for seed in $(seq "$1" "$2"); do
    prompt="${prompts[$((seed % ${#prompts[@]}))]}"
    printf '%s' "$prompt"
    "$tessera" generate --device cpu --prompt "$prompt" --max-tokens 300 --temperature 1.0 --seed "$seed" 2>/dev/null
  done
}
sample 1 12 > "$root/data/eval/stories_eval.txt"
sample 1001 1012 > "$root/data/calib/stories_calib.txt"
