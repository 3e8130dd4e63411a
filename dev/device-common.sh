# Sourced by every dev/device-*.sh script (see dev/README.md): the setup and the output filter a
# run on the device machine shares. $OUT is the folder the device tool sends back (/tmp elsewhere).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-/tmp}
# Drops Dawn's and the driver's noise: warnings, shader compilation logs, the subgroup-matrix notice, blank lines.
quiet() { grep -v -E '^Warning|deprecated|\^\^\^|subgroupMatrix|^$|Compilation log|warning\(s\) generated|^warning:$'; }
# The GPU, its clocks and memory, as one CSV line.
gpuInfo() { nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used,memory.total --format=csv,noheader; }
