#!/usr/bin/env bash
# Training speed on the device machine, ours beside PyTorch's in one run: the GEMM harness
# (dev/gemm/gemm.mts) and torch.matmul on the same shapes, `moba bench-train` in f16 and f32, the
# PyTorch twin (dev/torch/train.py; the official moba_efficient.py in .peers/), a per-op profile.
# Usage (device tool, carry [".device", "dist", ".peers"]): source .device/setup.sh && [GEMM_VERSIONS=1,4] [PRECISIONS="f16 f32"] [PROFILE=1] [LOSS_STEPS=2000] bash dev/device-train.sh
source "$(dirname "$0")/device-common.sh"
gpuInfo
timeout 200 node --import tsx dev/gemm/gemm.mts ${GEMM_VERSIONS:-} 2>&1 | quiet > "$out/gemm.log"; tail -12 "$out/gemm.log"; grep -E 'FAIL|rror' "$out/gemm.log" | head -5
timeout 120 python3 dev/torch/gemm.py > "$out/torch-gemm.jsonl" 2>&1
grep bfloat16 "$out/torch-gemm.jsonl" | python3 -c 'import sys, json
for r in map(json.loads, sys.stdin): print("%-14s torch bf16 %6.1f TFLOP/s" % (r["name"], r["tflops"]))'
for p in ${PRECISIONS:-f16 f32}; do
  timeout 200 node dist/cli/main.js bench-train --backend webgpu --precision $p --lengths ${LENGTHS:-8192,32768} --steps 3 --decode-context 0 2>&1 | quiet | tee -a "$out/bench-train.log" | tail -7
done
[ -f .peers/moba_efficient.py ] && timeout 150 python3 dev/torch/train.py 2>&1 | tee "$out/torch-train.jsonl" | tail -5
[ -n "${PROFILE:-}" ] && timeout 100 node --import tsx dev/profile-step.mts 32768 512 8 512 moba f16 2>&1 | quiet | head -24
# the loss curves: the tour's model trained LOSS_STEPS steps in float32 and in f16 from the same seed
if [ -n "${LOSS_STEPS:-}" ]; then
  for p in f32 f16; do
    timeout 250 node dist/cli/main.js train --backend webgpu --precision $p --steps "$LOSS_STEPS" --out "/tmp/loss-$p" 2>&1 | quiet | tail -2
    cp "/tmp/loss-$p/log.jsonl" "$out/loss-$p.jsonl"
  done
fi
