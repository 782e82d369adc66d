#!/usr/bin/env bash
# Installs the Debian packages mlcloud's embedded servers and browser tests use, when missing:
# docker-registry (the OCI registry), chromium (the washboard's browser tests) and shellcheck (the
# deploy scripts' lint test).
set -euo pipefail
missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "mlcloud: please install: ${missing[*]} (apt-get install -y ${missing[*]})" >&2; exit 1
    fi
else SUDO=""; fi
echo "mlcloud: installing ${missing[*]} with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
