#!/bin/sh
# Installs the Debian packages CI uses beside Python: chromium (the Flower browser test) and
# docker-compose 1.29 (to validate docker-compose.yml; there is no Docker engine). Idempotent.
set -eu

missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
if [ -z "$missing" ]; then
    echo "present: chromium, docker-compose"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
echo "installed:$missing"
