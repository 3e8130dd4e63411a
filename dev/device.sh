#!/usr/bin/env bash
# One GPU run on the device machine (see docs/benchmarks.md): adapter, the WebGPU test file
# (unrolled kernels, which lavapipe never compiles), then `moba bench --backend webgpu`.
# Usage (device tool): source .device/setup.sh && bash dev/device.sh "LENGTHS" HEADS MAX_SECONDS [tests]
set -uo pipefail
lengths=${1:-4096,8192,32768}
heads=${2:-1}
maxSeconds=${3:-30}
fullUpTo=${5:-1048576}
out=${OUT:-/tmp}
node -e 'import("./dist/webgpu/device.js").then(async (m) => { const d = await m.getDevice(); console.log("adapter:", d.adapterInfo, "f16", d.f16, "subgroupMatrix", d.subgroupMatrix, "maxStorageBinding", d.maxStorageBinding, "maxBuffer", d.maxBuffer, "workgroupStorage", d.maxWorkgroupStorage); process.exit(0); })' 2>&1 | grep -v '^Warning'
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used,memory.total --format=csv
if [ "${4:-}" = tests ]; then
  CI=true MOBA_SEED=${MOBA_SEED:-} timeout 300 node --import tsx --test test/webgpu.test.ts 2>&1 | grep -v '^Warning' | tee "$out/tests.log" | grep -E '^# (pass|fail)|^not ok|adapter|error' | head -20
fi
MOBA_BENCH_JSONL="$out/bench-$heads.jsonl" timeout 500 node dist/cli/main.js bench --backend webgpu --lengths "$lengths" --heads "$heads" --runs 10 --max-seconds "$maxSeconds" --full-up-to "$fullUpTo" 2>&1 | grep -v '^Warning' | tee "$out/bench-$heads.log"
