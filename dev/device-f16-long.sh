#!/usr/bin/env bash
# The long rows of `moba bench --backend webgpu` with the issue's protocol (median of 10 GPU-timed
# runs, 1 and 8 heads, forward and forward + backward), block 4096 / top-12. Two parts, each within
# one device command (10 minutes): PART=1 f16, 1 head, 128K-1M (forward; forward + backward, full
# attention's backward up to 256K); PART=2 8 heads at 128K-256K (f16) and float32 at 128K-256K.
# PRECISIONS=f16 leaves PART=2's float32 rows out.
# Usage (device tool): source .device/setup.sh && PART=1 [PRECISIONS=f16] bash dev/device-f16-long.sh
source "$(dirname "$0")/device-common.sh"
bench() { MOBA_BENCH_JSONL="$out/bench-long.jsonl" timeout "$1" node dist/cli/main.js bench --backend webgpu --runs 10 --max-seconds 1000 "${@:2}" 2>&1 | quiet | tee -a "$out/bench-long.log" | tail -"${TAIL:-6}"; }
gpuInfo
if [ "${PART:-1}" = 1 ]; then
  TAIL=7 bench 250 --lengths 131072,262144,524288,1048576 --heads 1 --precision f16 --forward-only
  TAIL=5 bench 120 --lengths 131072,262144 --heads 1 --precision f16
  TAIL=5 bench 150 --lengths 524288,1048576 --heads 1 --precision f16 --full-up-to 262144
else
  TAIL=5 bench 150 --lengths 131072,262144 --heads 8 --precision f16 --forward-only
  TAIL=4 bench 100 --lengths 131072 --heads 8 --precision f16
  [[ ${PRECISIONS:-f32} == *f32* ]] && TAIL=5 bench 150 --lengths 131072,262144 --heads 1 --precision f32 --forward-only
fi
