#!/usr/bin/env bash
# Decoding on the device machine: GPU decode = CPU decode (test/decode.test.ts on the GPU), then the
# decode rows of `moba bench-train` (the 22.9M model; CPU and GPU, MoBA vs full, ms/token and
# tokens/s) with CONTEXTS cached tokens (default 8192,32768,131072); its training rows are one short
# 1024-token step each.
# Usage (device tool): source .device/setup.sh && npx tsc -p tsconfig.json && bash dev/device-decode.sh
source "$(dirname "$0")/device-common.sh"
gpuInfo
CI=true timeout 150 node --import tsx --test test/decode.test.ts 2>&1 | grep -E '^# (pass|fail)|^not ok|error' | head
timeout 420 node dist/cli/main.js bench-train --backend webgpu --lengths 1024 --steps 1 --decode-context "${CONTEXTS:-8192,32768,131072}" 2>&1 |
  quiet | tee "$out/bench-decode.log"
