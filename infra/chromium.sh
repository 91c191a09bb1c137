#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the portal's browser tests, from Debian's
# packages (as ActiveMQ is): installed the first time, left alone after.
#   infra/chromium.sh install
set -euo pipefail

case "${1:-install}" in
  install)
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
      exit 0
    fi
    echo "chromium: installing Debian's chromium and chromium-driver packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
