#!/usr/bin/env bash
# The runs of the given experiment configs side by side on the device machine (one process per
# run: the small models leave the GPU partly idle), each stopped after LIMIT seconds; then each
# experiment's report. Copies logs and results (not checkpoints) to $OUT as one archive (the
# device returns at most 8 files).
# Usage (device tool): source .device/setup.sh && LIMIT=480 bash dev/device-experiments.sh experiments/h100/parity-8k.json ...
set -uo pipefail
limit=${LIMIT:-480}
out=${OUT:-/tmp}
mkdir -p runs/logs
for config in "$@"; do
  name=$(basename "$config" .json)
  for run in $(node -e 'for (const r of JSON.parse(require("fs").readFileSync(process.argv[1])).runs) console.log(r.name)' "$config"); do
    MOBA_THREADS=1 timeout "$limit" node dist/cli/main.js experiment "$config" --run "$run" --backend webgpu >> "runs/logs/$name-$run.log" 2>&1 &
  done
done
wait
for config in "$@"; do timeout 60 node dist/cli/main.js experiment "$config" --report 2>&1 | grep -v '^Warning' | tail -12; done
tar czf "$out/experiments.tgz" runs/logs $(ls runs/experiments/*/*/log.jsonl runs/experiments/*/*/result.json runs/experiments/*/results.jsonl runs/experiments/*/*.svg 2>/dev/null)
for f in runs/logs/*.log; do echo "$f: $(grep -v '^Warning' "$f" | grep -E 'step [0-9]+/|eval with|rror' | tail -1)"; done
