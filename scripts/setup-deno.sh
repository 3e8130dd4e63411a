#!/usr/bin/env bash
# Deno for the Deno test (WebGPU through Deno's own wgpu): npm's `deno` package, installed into
# .tools/deno/ (ignored by git, and not in node_modules/, which the device pack carries).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.9.6
bin=.tools/deno/node_modules/.bin/deno
if [ -x "$bin" ] && [ "$("$bin" --version | head -1 | cut -d' ' -f2)" = "$VERSION" ]; then exit 0; fi
mkdir -p .tools/deno
npm install --prefix .tools/deno --no-save --no-audit --no-fund --loglevel=error "deno@$VERSION" >/dev/null
echo "setup-deno: $("$bin" --version | head -1)"
