#!/usr/bin/env bash
# Per-op time of WebGPU training steps on the device (dev/profile-step.mts), small and medium models.
# Usage (device tool): source .device/setup.sh && bash dev/device-profile.sh
source "$(dirname "$0")/device-common.sh"
for shape in "1024 128 4 64" "8192 256 4 512" "8192 512 8 512"; do
  timeout 100 node --import tsx dev/profile-step.mts $shape 2>&1 | quiet | head -16
done
