#!/usr/bin/env bash
# Installs the system pieces the tests and the demo use, with apt-get, when they are missing:
# redis-server (required: tests start their own on a free port) and promtool (optional:
# /metrics is also checked with Prometheus's own linter when it is there).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v promtool >/dev/null 2>&1 || [ "${MDPIPE_SKIP_PROMTOOL:-}" = 1 ] || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is missing: install it (e.g. apt-get install redis-server)" >&2
    exit 1
  fi
  exit 0  # promtool is optional
fi
echo "installing with apt-get: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if ! apt-get install -y -qq --no-install-recommends redis-server >/dev/null; then
  echo "apt-get could not install redis-server" >&2
  exit 1
fi
if [[ " ${need[*]} " == *" prometheus "* ]]; then
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
    echo "promtool not installed; /metrics is checked with the Python parser only" >&2
fi
# Debian's packages start system services; mdpipe's tests start their own servers.
for svc in redis-server prometheus; do
  (service "$svc" stop || true) >/dev/null 2>&1
done
exit 0
