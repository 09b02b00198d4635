#!/usr/bin/env bash
# Installs Debian's `prometheus` package (the server and promtool) when they are not on PATH yet.
# Idempotent and quick when already installed: the observability tests run a real Prometheus server, and
# `make test` runs this script first. Needs root (or sudo) for apt-get.
#
# The package's service is not wanted here (tests start their own server on a free port). Containers of this
# kind have /usr/sbin/policy-rc.d refusing service starts, so apt-get does not start it; on a host with
# systemd it is disabled and stopped right after the install.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install_prometheus.sh: run as root (or install sudo)" >&2; exit 1; }
    as_root=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null

if [ -d /run/systemd/system ]; then
    "${as_root[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

prometheus --version 2>&1 | head -n 1
