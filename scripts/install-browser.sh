#!/bin/sh
# Installs Debian's chromium for the Flower browser test (tests/integration/test_flower.py).
# Idempotent: does nothing when /usr/bin/chromium is already there. Needs root (or sudo).
set -eu

if [ -x /usr/bin/chromium ]; then
    echo "chromium present: /usr/bin/chromium"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
echo "chromium installed: /usr/bin/chromium"
