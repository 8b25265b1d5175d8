#!/usr/bin/env bash
# Make sure `promtool` (Prometheus rule and metrics checker) is on PATH: install Debian's
# `prometheus` package when it is missing (needs root and apt; ~8 s). tests/deploy/
# test_monitoring.py uses promtool and skips those checks, saying so, when it is absent
# (set CRM_REQUIRE_PROMTOOL=1 in CI to make them fail instead).
# `make test` runs it best effort (its failure is ignored): where root and apt are available,
# as on CI's machine kind, the promtool checks run; elsewhere they skip and say so.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  promtool --version 2>&1 | head -n 1
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "promtool not found and apt-get is unavailable: install Prometheus' promtool by hand" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "promtool not found; run as root: apt-get install -y prometheus" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# On a systemd host the package also enables a Prometheus server unit; only promtool is used.
$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null; }
promtool --version 2>&1 | head -n 1
