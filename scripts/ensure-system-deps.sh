#!/usr/bin/env bash
# Installs the system pieces the tests and the demo use, with apt-get, when they are missing:
# redis-server (required: tests start their own on a free port), promtool (checks /metrics and
# deploy/prometheus/alerts.yml) and chromium (the dashboard's browser test drives it headless
# over its DevTools protocol; fonts-dejavu-core makes its screenshots legible).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v promtool >/dev/null 2>&1 || [ "${MDPIPE_SKIP_PROMTOOL:-}" = 1 ] || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || [ "${MDPIPE_SKIP_CHROMIUM:-}" = 1 ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is missing: install it (e.g. apt-get install redis-server)" >&2
    exit 1
  fi
  for pkg in "${need[@]}"; do
    echo "$pkg is missing (apt-get install $pkg): the tests that use it will fail" >&2
  done
  exit 0
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
if [[ " ${need[*]} " == *" chromium "* ]]; then
  if ! apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; then
    echo "apt-get could not install chromium" >&2
    exit 1
  fi
fi
# Debian's packages start system services; mdpipe's tests start their own servers.
for svc in redis-server prometheus; do
  (service "$svc" stop || true) >/dev/null 2>&1
done
exit 0
