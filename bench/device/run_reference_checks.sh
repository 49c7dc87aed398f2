#!/usr/bin/env bash
# On the GPU machine: the independent references for drift (scipy), LoRA (PEFT) and GPTQ
# (a NumPy/torch unpacking of the AutoGPTQ format), in one call. Binaries come from
# DIR/bin, their libraries from DIR/bundle/lib, the sentencepiece plugin from DIR/lib.
#   bench/device/run_reference_checks.sh DIR OUT
set -u
dir=$1
out=$2
export LD_LIBRARY_PATH=$dir/bundle/lib:/usr/local/cuda/lib64
bin=$dir/bin
status=0
echo "== drift: KS against scipy.stats.ks_2samp"
python3 bench/device/drift_scipy_compare.py "$bin/drift_ks_compare" --out "$out/drift_ks_vs_scipy_device.json" || status=1
echo "== LoRA: logits against PEFT"
python3 bench/device/lora_peft_check.py --tool "$bin/tessera-lora-logits" --tessera-device cpu 2>&1 | tee "$out/lora_peft_check.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== GPTQ: independent unpacking against tessera's dequantization"
for flags in "--bits 4 --group-size 4 --act-order --asym" "--bits 3 --group-size 4 --format gptq_v2"; do
  q=$(mktemp -d)
  "$bin/tessera" quantize gptq --model models/stories260k --out "$q" $flags 2>/dev/null || status=1
  "$bin/tessera-gptq-dump" --model "$q" --out "$q/dense.safetensors" || status=1
  python3 bench/device/gptq_interop_check.py --model "$q" --dump "$q/dense.safetensors" 2>&1 | tee -a "$out/gptq_interop.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
exit $status
