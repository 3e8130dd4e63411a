#!/usr/bin/env bash
# The whole test suite: type check, then every test file on node's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.check.json
node --import tsx --test --test-concurrency=2 test/*.test.ts
