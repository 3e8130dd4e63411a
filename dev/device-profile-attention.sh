#!/usr/bin/env bash
# Per-kernel GPU times (timestamp queries) of MoBA and full attention on the device machine.
# Usage (device tool): source .device/setup.sh && bash dev/device-profile-attention.sh
source "$(dirname "$0")/device-common.sh"
for args in "32768 8 f16 512 3" "32768 1 f16 512 3" "32768 1 f32 512 3" "4096 1 f16 512 3" "32768 8 f16 512 3 backward"; do
  timeout 120 node --import tsx dev/profile-attention.mts $args 2>&1 | quiet
done | tee "$out/profile-attention.log" | grep -v -E "poison|tile offsets|segment starts|block sums"
