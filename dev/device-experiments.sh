#!/usr/bin/env bash
# The given experiment configs on the device machine, one run at a time (processes sharing a GPU
# are time-sliced: six side by side each ran ~4x slower than alone, no faster in total), every
# config stopped after LIMIT seconds (rerunning resumes from checkpoints while the machine is
# held); then each experiment's report. Copies logs and results (not checkpoints) to $OUT as one
# archive (the device returns at most 8 files).
# RUNS (optional) picks runs by name, as `moba experiment --run` does (a fresh machine has none of
# the runs an earlier hold finished).
# Usage (device tool): source .device/setup.sh && LIMIT=240 [RUNS=a,b] bash dev/device-experiments.sh experiments/h100/parity-8k.json ...
# Keep LIMIT below the call's limit_s (the lease can cut it below the timeout asked for): a call killed
# outright returns nothing, one stopped by a TERM packs what it has first (the trap).
source "$(dirname "$0")/device-common.sh"
limit=${LIMIT:-240}
mkdir -p runs/logs
pack() {
  tar czf "$out/experiments.tgz" runs/logs $(ls runs/experiments/*/*/log.jsonl runs/experiments/*/*/result.json runs/experiments/*/results.jsonl runs/experiments/*/*.svg 2>/dev/null)
}
child=""
trap '[ -n "$child" ] && kill "$child" 2>/dev/null; wait; pack; exit 143' TERM
for config in "$@"; do
  name=$(basename "$config" .json)
  # in the background, so a TERM reaches the trap at once instead of after the run
  MOBA_THREADS=1 timeout "$limit" node dist/cli/main.js experiment "$config" --backend webgpu ${RUNS:+--run "$RUNS"} > "runs/logs/$name.log" 2>&1 &
  child=$!
  wait "$child"
  grep -v '^Warning' "runs/logs/$name.log" | grep -E 'eval with|rror|wrote|^[a-z0-9-]+ +[0-9]' | tail -12
done
pack
