#!/usr/bin/env bash
# Installs the system pieces mdpipe builds and tests with, with apt-get, when they are missing.
#   build: a C compiler and the Python headers, for the seqlock extension (mdpipe.shm._seqlock)
#   (default) the above, plus redis-server (required: tests start their own on a free port),
#   promtool (checks /metrics and deploy/prometheus/alerts.yml) and chromium (the dashboard's
#   browser test drives it headless over its DevTools protocol; fonts-dejavu-core makes its
#   screenshots legible).
set -euo pipefail
python=${PYTHON:-python3}
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if ! "$python" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
  need+=(python3-dev)
fi
if [ "${1:-}" != build ]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v promtool >/dev/null 2>&1 || [ "${MDPIPE_SKIP_PROMTOOL:-}" = 1 ] || need+=(prometheus)
  command -v chromium >/dev/null 2>&1 || [ "${MDPIPE_SKIP_CHROMIUM:-}" = 1 ] ||
    need+=(chromium fonts-dejavu-core)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  if [ "${1:-}" != build ] && ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is missing: install it (e.g. apt-get install redis-server)" >&2
    exit 1
  fi
  echo "missing ${need[*]}: install them (without gcc and python3-dev the pure-Python" \
    "seqlock is used; without chromium or promtool the tests that use them fail)" >&2
  exit 0
fi
echo "installing with apt-get: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
required=()
for pkg in "${need[@]}"; do [ "$pkg" = prometheus ] || required+=("$pkg"); done
if [ ${#required[@]} -gt 0 ] && ! apt-get install -y -qq --no-install-recommends "${required[@]}" >/dev/null; then
  echo "apt-get could not install ${required[*]}" >&2
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
