#!/usr/bin/env bash
# A ~1B Llama at real context lengths on the GPU machine: Llama-3.2-1B's config.json
# (dev/hf/llama-3.2-1b.json; random weights made on the machine, nothing downloaded), prefill of
# 32K tokens (MoBA block 512 / top-3) and 128K tokens (block 4096 / top-12, the official MoBA's
# defaults) with MoBA on every layer, the hybrid (last 3 layers full) and full attention, then
# greedy decoding: ours (dev/prefill-bench.mts, WebGPU f16) and PyTorch's (dev/torch/prefill.py:
# transformers' LlamaForCausalLM in bf16, SDPA and the official MoBA). nvidia-smi's memory.used is
# sampled every 200 ms beside each, for the process-level peak. Rows print as they finish, so a
# timeout keeps those before it. SIZE=tiny: a 1M-parameter model of the same layout at 1K-2K
# tokens (a check that everything runs). PART=ours or PART=torch runs one half.
# Usage (device tool, carry [".device", ".peers"]):
#   source .device/setup.sh && bash dev/device-1b.sh
source "$(dirname "$0")/device-common.sh"
if [ "${SIZE:-}" = tiny ]; then
  args=(--config dev/hf/llama-tiny.json --lengths 1024:64:3,2048:128:4 --decode 8)
else
  args=(--config dev/hf/llama-3.2-1b.json --lengths 32768:512:3,131072:4096:12 --decode 16)
fi
command -v nvidia-smi > /dev/null && gpuInfo
# runs a command ($2...) and then prints the most memory.used (MiB) nvidia-smi saw meanwhile (where there is one)
peak() {
  command -v nvidia-smi > /dev/null || { "${@:2}"; return; }
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/$1.mem" &
  local sampler=$!
  "${@:2}"
  kill "$sampler" && wait "$sampler" 2> /dev/null
  echo "$1: nvidia-smi peak memory.used $(sort -n "$out/$1.mem" | tail -1) MiB"
}
if [ "${PART:-ours}" != torch ]; then
  rm -f "$out/ours.jsonl"
  peak ours timeout "${OURS_LIMIT:-380}" node --import tsx dev/prefill-bench.mts "${args[@]}" --jsonl "$out/ours.jsonl" 2>&1 | quiet | tee "$out/ours.log"
fi
if [ "${PART:-torch}" != ours ] && [ -f .peers/moba_efficient.py ]; then
  peak torch timeout "${TORCH_LIMIT:-150}" python3 dev/torch/prefill.py "${args[@]}" 2>&1 | tee "$out/torch.log"
fi
