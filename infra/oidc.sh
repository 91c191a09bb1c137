#!/usr/bin/env bash
# The OpenID Provider of the portal's browser test under JWT (infra/oidc/provider.mjs):
# the npm registry's oidc-provider at the version infra/oidc/package-lock.json pins,
# installed with `npm ci` the first time and again whenever the lock file changes.
# Node.js and npm come with the machine; where they are missing, from Debian's packages
# (as ActiveMQ and Chromium are).
#   infra/oidc.sh install
set -euo pipefail

DIR="$(cd "$(dirname "$0")/oidc" && pwd)"

case "${1:-install}" in
  install)
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
      echo "oidc: installing Debian's nodejs and npm packages" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    major="$(node -p 'process.versions.node.split(".")[0]')"
    if [ "$major" -lt 20 ]; then
      echo "oidc: oidc-provider needs Node.js 20 or later; this machine has $(node --version)" >&2
      exit 1
    fi
    stamp="$DIR/node_modules/.herald-installed"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$DIR/package-lock.json" ]; then
      exit 0
    fi
    echo "oidc: npm ci in infra/oidc (oidc-provider, as package-lock.json pins it)" >&2
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
