#!/usr/bin/env bash
# The whole test suite: WebGPU without a GPU (Mesa's lavapipe), headless Chromium for the browser
# test, Deno (npm's deno package, in .tools/) for the Deno test, build and type check, every test
# file on node's test runner. Under CI=true a missing WebGPU adapter, browser or Deno fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# setup NAME WHAT-HAPPENS-WITHOUT: runs scripts/setup-NAME.sh; a failure fails under CI=true, else is said
setup() {
  if ! bash "scripts/setup-$1.sh"; then
    if [ "${CI:-}" = true ]; then exit 1; fi
    echo "test.sh: $2" >&2
  fi
}
setup lavapipe "no lavapipe; the WebGPU tests run only if another adapter is present"
setup browser "no headless Chromium; the browser test is skipped"
setup deno "no Deno; the Deno test is skipped"
npx tsc -p tsconfig.json # dist/, which the browser and Deno tests load
npx tsc -p tsconfig.check.json
npx tsc -p web/tsconfig.json # the playground's page against the browser entry's types (dist/index.d.ts) and the DOM
npx prettier --check src test dev scripts # the formatter's line width and style (npm run format applies it)
node --import tsx --test --test-concurrency=2 test/*.test.ts
