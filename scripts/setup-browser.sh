#!/usr/bin/env bash
# Headless Chromium for the browser test (WebGPU on SwiftShader): Debian's chromium-headless-shell.
set -euo pipefail
[ -x /usr/bin/chromium-headless-shell ] && exit 0
if [ "$(id -u)" != 0 ]; then echo "setup-browser: needs root for apt-get (or install chromium-headless-shell yourself)" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium-headless-shell >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium-headless-shell >/dev/null; }
echo "setup-browser: $(dpkg-query -W -f='chromium-headless-shell ${Version}' chromium-headless-shell)"
