#!/usr/bin/env bash
# The model on the device machine: the backend and model tests on the GPU, `moba bench-train` on
# WebGPU (a ~23M-parameter model at 8K and 32K, MoBA vs full, with nvidia-smi's memory peak beside
# the backend's own count), per-op profiles of a small and a medium step, the tour on the auto backend.
# Usage (device tool): source .device/setup.sh && bash dev/device-model.sh [STEPS]
source "$(dirname "$0")/device-common.sh"
gpuInfo
CI=true timeout 150 node --import tsx --test test/backend.test.ts test/model.test.ts 2>&1 | grep -E '^# (pass|fail)|^not ok|error' | head
peak() { # runs "$@" while sampling the GPU's used memory; prints the peak
  (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done) > "$out/mem.txt" &
  local sampler=$!
  "$@"
  kill $sampler
  echo "nvidia-smi peak memory used: $(sort -n "$out/mem.txt" | tail -1) MiB"
}
peak timeout 300 node dist/cli/main.js bench-train --backend webgpu --lengths 8192,32768 --steps "${1:-3}" --decode-context 0 2>&1 | quiet | tee "$out/bench-train.log"
for shape in "1024 128 4 64" "8192 256 4 512" "8192 256 4 512 full" "16384 256 4 1024"; do
  timeout 100 node --import tsx dev/profile-step.mts $shape 2>&1 | quiet | head -9
done | tee "$out/profile.log"
( time timeout 120 node dist/cli/main.js tour --out "$out/tour" ) 2>&1 | quiet | tail -12 | tee "$out/tour.log"
