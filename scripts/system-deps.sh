#!/usr/bin/env bash
# Debian packages the test suite needs. Installs only what is missing, so it is fast when run again.
set -euo pipefail
needed=()
for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || needed+=("$pkg")
done
if ((${#needed[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages: ${needed[*]} (run as root or install them)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
fi
