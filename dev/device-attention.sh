#!/usr/bin/env bash
# The attention kernels' harnesses (dev/attention/: forward, dq, dk/dv, gate) on the device machine:
# every version checked against float64, then timed at `moba bench`'s sizes; each harness's JSON
# lines and table go to $out/attention-KERNEL.log, the tables (and any FAIL) to the screen.
# KERNELS picks harnesses (default all four; not yet timed on the GPU: if one call runs out of its 10
# minutes, split them, e.g. KERNELS="forward gate" and KERNELS="dq dkdv");
# FORWARD_VERSIONS, DQ_VERSIONS, DKDV_VERSIONS, GATE_VERSIONS pick versions ("2,8"); LIMIT (280)
# caps each harness's seconds; ATTN_TOKENS, ATTN_HEADS, ATTN_BLOCK, ATTN_CALLS pass through (harness.mts).
# Usage (device tool, carry [".device"]):
#   source .device/setup.sh && [KERNELS="dq dkdv"] [DQ_VERSIONS=2,6,7,8] bash dev/device-attention.sh
source "$(dirname "$0")/device-common.sh"
gpuInfo
for kernel in ${KERNELS:-forward dq dkdv gate}; do
  versions="${kernel^^}_VERSIONS"
  timeout "${LIMIT:-280}" node --import tsx "dev/attention/$kernel.mts" ${!versions:-} 2>&1 | quiet > "$out/attention-$kernel.log"
  echo "exit $? (${kernel})"
  grep '^FAIL' "$out/attention-$kernel.log" | head -5
  sed -n '/TFLOP\/s of its dispatches/,$p' "$out/attention-$kernel.log"
done
