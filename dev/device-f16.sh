#!/usr/bin/env bash
# The f16 / tensor-core path on the device machine: the f16 pass/fail table against float64, the
# WebGPU test file (CI=true), then `moba bench --backend webgpu` in f32 and f16 from 4K to 1M tokens
# (forward only, then forward + backward up to 32K).
# With a previous build carried as dist-old/, the two builds' f16 forwards are timed side by side first.
# PRECISIONS=f16 leaves the float32 rows out (when only the f16 kernels changed).
# Usage (device tool): source .device/setup.sh && [SHORT=1] [CHECK_CASES=N] [PRECISIONS=f16] bash dev/device-f16.sh
source "$(dirname "$0")/device-common.sh"
gpuInfo
timeout 240 node --import tsx dev/f16-check.mts "${CHECK_CASES:-6}" 2>&1 | quiet > "$out/f16-check.log"
status=${PIPESTATUS[0]}
grep -E 'adapter|FAIL|pass$|error|Error' "$out/f16-check.log" | head -30
if [ "$status" != 0 ]; then tail -c 6000 "$out/f16-check.log"; exit 1; fi
if [ -d dist-old ]; then
  for build in dist-old dist dist-old dist; do
    echo "$build: $(timeout 100 node $build/cli/main.js bench --backend webgpu --lengths 32768 --heads 8 --precision f16 --runs 5 --max-seconds 3 --forward-only 2>&1 | quiet | grep -E '^f16' | tr -s ' ')"
  done
fi
CI=true timeout 200 node --import tsx --test test/webgpu.test.ts 2>&1 | quiet > "$out/tests.log"
grep -E '^# (pass|fail)|^not ok' "$out/tests.log" | head
bench() { MOBA_BENCH_JSONL="$out/bench.jsonl" timeout "$1" node dist/cli/main.js bench --backend webgpu "${@:2}" 2>&1 | quiet | tee -a "$out/bench.log" | tail -"${TAIL:-8}"; }
# forward only first (the issue's comparison), then forward + backward
TAIL=9 bench 200 --lengths 4096,8192,32768 --heads 1 --precision ${PRECISIONS:-f16,f32} --runs 10 --max-seconds 4 --forward-only
TAIL=4 bench 200 --lengths 32768 --heads 8 --precision ${PRECISIONS:-f16,f32} --runs 10 --max-seconds 6 --forward-only
bench 200 --lengths 4096,8192,32768 --heads 1 --precision ${PRECISIONS:-f32,f16} --runs 10 --max-seconds 6
TAIL=4 bench 200 --lengths 32768 --heads 8 --precision ${PRECISIONS:-f16,f32} --runs 10 --max-seconds 6
if [ -z "${SHORT:-}" ]; then # SHORT=1: up to 32K only; the long rows: bash dev/device-f16-long.sh
  TAIL=7 bench 250 --lengths 131072,262144,524288,1048576 --heads 1 --precision f16 --runs 3 --max-seconds 1 --forward-only
  [[ ${PRECISIONS:-f32} == *f32* ]] && TAIL=5 bench 200 --lengths 131072,262144 --heads 1 --precision f32 --runs 3 --max-seconds 1 --forward-only
fi
