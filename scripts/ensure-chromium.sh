#!/usr/bin/env bash
# Headless Chromium for the report rendering test (Debian package chromium), installed at set-up time
# so tests never install anything. Without root/apt it only warns: that one test then fails, loudly.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (Debian) for the report rendering test..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null && exit 0
fi
echo "warning: chromium is not installed; the HTML report rendering test will fail" >&2
