#!/usr/bin/env bash
# Installs redis-server with apt-get when it is missing (tests start their own on a free port).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "redis-server is missing: install it (apt-get install redis-server) or run as root" >&2
  exit 1
fi
echo "installing redis-server with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# Debian's package starts a system service on 6379; mdpipe's tests start their own.
(service redis-server stop || true) >/dev/null 2>&1
