#!/usr/bin/env bash
# Every run of every experiment in experiments/ side by side on the device machine (one process
# per run: the small models leave the GPU mostly idle, so 14 processes share it and the 16 cores),
# each stopped after LIMIT seconds; rerunning resumes them from their checkpoints. Copies the logs
# and results (not the checkpoints) to $OUT as one archive.
# Usage (device tool): source .device/setup.sh && bash dev/device-experiments.sh [LIMIT]
set -uo pipefail
limit=${1:-560}
out=${OUT:-/tmp}
mkdir -p runs/logs
runs=$(node -e 'const fs = require("fs"); for (const f of fs.readdirSync("experiments")) for (const r of JSON.parse(fs.readFileSync("experiments/" + f)).runs) console.log(f.replace(".json", "") + " " + r.name)')
while read -r name run; do
  MOBA_THREADS=1 timeout "$limit" node dist/cli/main.js experiment "$name" --run "$run" --backend webgpu >> "runs/logs/$name-$run.log" 2>&1 &
done <<< "$runs"
wait
# the device returns at most 8 files: everything in one archive
tar czf "$out/experiments.tgz" runs/logs $(ls runs/experiments/*/*/log.jsonl runs/experiments/*/*/result.json 2>/dev/null)
for f in runs/logs/*.log; do echo "$f: $(grep -v '^Warning' "$f" | grep -E 'step [0-9]+/|eval with|error' | tail -1)"; done
