#!/usr/bin/env bash
# Training speed on the device machine, ours beside PyTorch's in one run: the model tests on the
# GPU (TESTS=1: the tensor-core GEMM on odd shapes), the GEMM harness (dev/gemm/gemm.mts) and
# torch.matmul on the same shapes (GEMM_VERSIONS=none: neither), `moba bench-train` in f16 and f32 for each build in BUILDS
# (default dist, and dist-old/ where carried: the old build's rows beside), the PyTorch twin (dev/torch/train.py; the official
# moba_efficient.py in .peers/), one step's GPU time by kernel (PROFILE=1), and loss curves of the
# tour's model (LOSS_STEPS steps for each precision:seed in LOSS_RUNS, default "f32:1 f16:1").
# Usage (device tool, carry [".device", "dist", ".peers"]):
#   source .device/setup.sh && [TESTS=1] [GEMM_VERSIONS=1,4] [BUILDS="dist-a dist"] [PRECISIONS="f16 f32"] [PROFILE=1] [LOSS_STEPS=2000] bash dev/device-train.sh
source "$(dirname "$0")/device-common.sh"
gpuInfo
if [ -n "${TESTS:-}" ]; then
  CI=true timeout 150 node --import tsx --test test/backend.test.ts test/f16.test.ts test/model.test.ts 2>&1 | quiet > "$out/tests.log"
  grep -E '^# (pass|fail)|^not ok' "$out/tests.log" | head
fi
if [ "${GEMM_VERSIONS:-}" != none ]; then
  timeout 200 node --import tsx dev/gemm/gemm.mts ${GEMM_VERSIONS:-} 2>&1 | quiet > "$out/gemm.log"; tail -12 "$out/gemm.log"; grep -E 'FAIL|rror' "$out/gemm.log" | head -5
  timeout 120 python3 dev/torch/gemm.py > "$out/torch-gemm.jsonl" 2>&1
  grep bfloat16 "$out/torch-gemm.jsonl" | python3 -c 'import sys, json
for r in map(json.loads, sys.stdin): print("%-14s torch bf16 %6.1f TFLOP/s" % (r["name"], r["tflops"]))'
fi
for build in ${BUILDS:-dist $([ -d dist-old ] && echo dist-old)}; do
  for p in ${PRECISIONS:-f16 f32}; do
    echo "$build $p"
    timeout 200 node $build/cli/main.js bench-train --backend webgpu --precision $p --lengths ${LENGTHS:-8192,32768} --steps 3 --decode-context 0 2>&1 | quiet | tee -a "$out/bench-train.log" | tail -6
  done
done
[ -f .peers/moba_efficient.py ] && timeout 150 python3 dev/torch/train.py 2>&1 | tee "$out/torch-train.jsonl" | tail -5
if [ -n "${PROFILE:-}" ]; then
  for T in 32768 8192; do timeout 100 node --import tsx dev/profile-step-gpu.mts $T moba f16 2>&1 | quiet | head -22; done | tee "$out/profile.log"
fi
if [ -n "${LOSS_STEPS:-}" ]; then
  for run in ${LOSS_RUNS:-f32:1 f16:1}; do
    p=${run%:*} seed=${run#*:}
    timeout 250 node dist/cli/main.js train --backend webgpu --precision $p --seed $seed --steps "$LOSS_STEPS" --out "/tmp/loss-$p-$seed" 2>&1 | quiet | tail -1
    cp "/tmp/loss-$p-$seed/log.jsonl" "$out/loss-$p-$seed.jsonl"
  done
fi
