#!/usr/bin/env bash
# One device call for the GPTQ / LoRA kernels: op tests, memcheck on small shapes, benchmark.
# Run from a folder holding cuda_quant_test, cuda_ops_test, cuda_quant_bench and lib/
# (/work/shared/tools/device-bundle); logs and JSON go to $OUT (default: .).
set -u
cd "$(dirname "$0")"
out=${OUT:-.}
export LD_LIBRARY_PATH=$PWD/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi -L
timeout 150 ./cuda_quant_test > "$out/quant_test.log" 2>&1; echo "cuda_quant_test rc=$?"
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|rel|error" "$out/quant_test.log" | head -40
if [ -x ./cuda_ops_test ]; then
  timeout 60 ./cuda_ops_test --gtest_filter='*Matmul*:*Quantized*' > "$out/ops_test.log" 2>&1; echo "cuda_ops_test (matmul) rc=$?"
  tail -3 "$out/ops_test.log"
fi
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$sanitizer" ]; then
  timeout 150 "$sanitizer" --tool memcheck --error-exitcode 9 ./cuda_quant_test \
    --gtest_filter='*NotMultiplesOf32*:*Int8AndInt2*:*Lora*:*Repeated*:*ThreeBit*:*PackedInt4MatchesCpuWhenShapesLeave*:*WithoutAPacked*' \
    > "$out/memcheck.log" 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|Invalid|PASSED|FAILED" "$out/memcheck.log" | head -20
else
  echo "compute-sanitizer not found"
fi
timeout 120 ./cuda_quant_bench "$out/bench_quant.json" 2>&1 | tee "$out/bench.log" | tail -32
