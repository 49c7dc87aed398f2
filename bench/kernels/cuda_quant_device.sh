#!/usr/bin/env bash
# One device call for the GPTQ / LoRA kernels: op tests, memcheck on small shapes, benchmark,
# and with NCU=1 an Nsight Compute profile of the int4 decode kernel at batch 1 and 16.
# Run from a folder holding cuda_quant_test, cuda_quant_bench and lib/
# (/work/shared/tools/device-bundle); logs and JSON go to $OUT (default: .). SWEEP=1 also
# times the decode kernel under other work splits (TESSERA_QUANT_SWEEP). TEST_S, BENCH_S and
# MEMCHECK_S bound each step's seconds (a device call has a limit of its own); MEMCHECK_FILTER
# narrows the memcheck run.
set -u
cd "$(dirname "$0")"
out=${OUT:-.}
export LD_LIBRARY_PATH=$PWD/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi -L
timeout "${TEST_S:-100}" ./cuda_quant_test > "$out/quant_test.log" 2>&1; echo "cuda_quant_test rc=$?"
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|rel|error" "$out/quant_test.log" | head -40
TESSERA_QUANT_SWEEP=${SWEEP:-0} timeout "${BENCH_S:-70}" ./cuda_quant_bench "$out/bench_quant.json" > "$out/bench.log" 2>&1
echo "cuda_quant_bench rc=$?"; grep -v "^  sweep" "$out/bench.log" | tail -32
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$sanitizer" ]; then
  filter=${MEMCHECK_FILTER:-'*PackedInt4MatchesCpuWhenShapesLeave*:*PackedInt4Decode*:*RepeatedSplitKCallsOnThePacked*:*PackedInt4MatchesCpuForEveryGroup*:*NotMultiplesOf32*:*Int8AndInt2*:*Lora*'}
  timeout "${MEMCHECK_S:-90}" "$sanitizer" --tool memcheck --error-exitcode 9 ./cuda_quant_test \
    --gtest_filter="$filter" \
    > "$out/memcheck.log" 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|Invalid|PASSED|FAILED" "$out/memcheck.log" | head -20
else
  echo "compute-sanitizer not found"
fi
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
if [ "${NCU:-0}" = 1 ] && [ -n "$ncu" ]; then
  stalls=smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio
  for b in 1 16; do
    TESSERA_QUANT_CASES=4096x4096:$b timeout 40 "$ncu" --clock-control none -k regex:Int4DecodeKernel \
      --launch-count 1 --section SpeedOfLight --section LaunchStats --section Occupancy \
      --section WarpStateStats --section InstructionStats --metrics smsp__inst_executed.sum,dram__bytes_read.sum \
      ./cuda_quant_bench /tmp/ncu_quant.json > "$out/ncu_decode_b$b.txt" 2>&1
    echo "ncu batch $b rc=$?"
    grep -E "Duration|inst_executed|dram__bytes|Registers Per|Achieved Occupancy|Elapsed Cycles|SM Active|Warp Cycles Per Issued|DRAM Throughput" "$out/ncu_decode_b$b.txt" | head -14
    TESSERA_QUANT_CASES=4096x4096:$b timeout 30 "$ncu" --clock-control none -k regex:Int4DecodeKernel \
      --launch-count 1 --metrics "$stalls" ./cuda_quant_bench /tmp/ncu_quant.json > "$out/ncu_stalls_b$b.txt" 2>&1
    echo "ncu stalls batch $b rc=$?"; grep -E "stalled" "$out/ncu_stalls_b$b.txt" | head -8
  done
fi
