#!/usr/bin/env bash
# The model on the device machine: the model tests on the GPU, then `moba bench-train` on WebGPU
# (a ~25M-parameter model at 8K and 32K; the experiments' small model) and on the CPU for scale.
# Usage (device tool): source .device/setup.sh && bash dev/device-model.sh
set -uo pipefail
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
nproc
CI=true timeout 120 node --import tsx --test test/model.test.ts 2>&1 | grep -E '^# (pass|fail)|^not ok|error' | head
( /usr/bin/time -v timeout 330 node dist/cli/main.js bench-train --backend webgpu --lengths 8192,32768 --steps 2 ) 2>&1 | grep -v '^Warning' | grep -v "^\s*\(Page\|Vol\|Invol\|Swaps\|File\|Socket\|Signals\|Average\|Exit\|Minor\|Major\|Percent\|System\|User\|Elapsed\|Command\)" | tee "$out/bench-train-25m.log"
timeout 90 node dist/cli/main.js bench-train --backend webgpu --lengths 1024,4096 --hidden 128 --layers 4 --heads 4 --block-size 64 --steps 3 --decode-context 0 2>&1 | grep -v '^Warning' | tail -6 | tee "$out/bench-train-small-webgpu.log"
MOBA_THREADS=1 timeout 90 node dist/cli/main.js bench-train --backend cpu --lengths 1024,4096 --hidden 128 --layers 4 --heads 4 --block-size 64 --steps 2 --decode-context 0 2>&1 | grep -v '^Warning' | tail -6 | tee "$out/bench-train-small-cpu1.log"
