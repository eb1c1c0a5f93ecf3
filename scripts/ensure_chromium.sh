#!/usr/bin/env bash
# Chromium and its WebDriver for the browser tests of the /ui pages (tests/serving/ui/).
# Installs Debian's chromium and chromium-driver when chromedriver is missing and this runs as
# root (CI); otherwise says what to install (the browser tests then skip, naming what is missing).
set -euo pipefail
if command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Chromium (Debian's chromium and chromium-driver) for the browser tests" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  exit 0
fi
echo "chromium / chromedriver not found: install them (Debian: apt-get install chromium chromium-driver)" >&2
echo "or the browser tests will be skipped" >&2
