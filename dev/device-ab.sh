#!/usr/bin/env bash
# A kernel change on the device machine, against the build before it (carried as dist-old/): the
# f16 check and the WebGPU tests of the new code, the two builds' bench rows alternately (same
# machine, same warm-up), then per-kernel profiles of the new code.
# BUILDS lists the builds to alternate (default "dist-old dist"; more variants as more carried folders).
# Usage (device tool): source .device/setup.sh && [AB="bench args"] [BUILDS="dist-old dist-a dist"] [PROFILES="args;args"] bash dev/device-ab.sh
source "$(dirname "$0")/device-common.sh"
gpuInfo
timeout 200 node --import tsx dev/f16-check.mts "${CHECK_CASES:-6}" 2>&1 | quiet > "$out/f16-check.log"
grep -E 'adapter|FAIL|pass$|error|Error' "$out/f16-check.log" | head -30
CI=true timeout 200 node --import tsx --test test/webgpu.test.ts 2>&1 | quiet > "$out/tests.log"
grep -E '^# (pass|fail)|^not ok' "$out/tests.log" | head
ab=${AB:-"--lengths 32768 --heads 8 --precision f16 --runs 5 --max-seconds 3"}
for build in ${BUILDS:-dist-old dist} ${BUILDS:-dist-old dist}; do
  timeout 150 node $build/cli/main.js bench --backend webgpu $ab 2>&1 | quiet | grep -E '^f16|^f32' | tr -s ' ' | sed "s|^|$build: |"
done | tee "$out/ab.log"
IFS=';' read -ra profiles <<< "${PROFILES:-32768 8 f16 512 3 backward;32768 1 f16 512 3}"
for args in "${profiles[@]}"; do
  timeout 120 node --import tsx dev/profile-attention.mts $args 2>&1 | quiet
done > "$out/profile.log"
grep -v -E "poison|tile offsets|segment starts|scatter|q f16|k f16|v f16|dout f16" "$out/profile.log"
