#!/usr/bin/env bash
# Tensor-core forward variants (dev/mma/variants.mts), then f16 forward-only rows at 256K and 1M tokens.
# Usage (device tool): source .device/setup.sh && bash dev/device-mma.sh [TOKENS HEADS]
set -uo pipefail
out=${OUT:-/tmp}
timeout 200 node --import tsx dev/mma/variants.mts "${1:-32768}" "${2:-8}" 2>&1 | grep -v -E '^Warning|deprecated|\^\^\^|subgroupMatrix|^$|Compilation log|warning\(s\) generated' > "$out/variants.log"
tail -16 "$out/variants.log"
if [ "${3:-}" != variants-only ]; then
  MOBA_BENCH_JSONL="$out/bench.jsonl" timeout 300 node dist/cli/main.js bench --backend webgpu --lengths 262144,1048576 --heads 1 --precision f16 --runs 3 --max-seconds 1 --forward-only 2>&1 \
    | grep -v -E '^Warning|deprecated|\^\^\^|subgroupMatrix|^$|Compilation log|warning\(s\) generated' > "$out/bench.log"
  tail -6 "$out/bench.log"
fi
