#!/usr/bin/env bash
# WebGPU without a GPU: Dawn on Mesa's lavapipe (CPU Vulkan). Dawn rejects bookworm's Mesa 22.x,
# so Mesa 25.x comes from bookworm-backports. Idempotent; does nothing once lavapipe is present.
set -euo pipefail
icd=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
if [ -f "$icd" ] && dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^2[5-9]\.'; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then echo "setup-lavapipe: needs root for apt-get (or install mesa-vulkan-drivers >= 25 yourself)" >&2; exit 1; fi
. /etc/os-release
if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/bookworm-backports.list
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null
else
  apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
echo "setup-lavapipe: $(dpkg-query -W -f='mesa-vulkan-drivers ${Version}' mesa-vulkan-drivers)"
