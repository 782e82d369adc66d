#!/usr/bin/env bash
# Print a Python that mlcloud runs on (pyproject.toml's requires-python), installing a standalone
# CPython when the system's is too old (the Coral Dev Board's Mendel 5 has 3.7). install.sh calls it.
#
#   deploy/coral/python.sh PREFIX [BUNDLE]
#
# In this order:
#   1. $PYTHON (default python3) when it is new enough;
#   2. PREFIX/python/bin/python3, which an earlier run installed;
#   3. with BUNDLE (deploy/coral/bundle.sh made it): BUNDLE/python/*.tar.gz, a python-build-standalone
#      CPython, unpacked into PREFIX/python, offline;
#   4. without: `uv python install` into PREFIX/python (uv from PATH, else from the package index
#      through $PYTHON's pip), which downloads python-build-standalone's CPython (needs internet).
# Messages go to stderr; the Python's path is the one line on stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "${HERE}/../.." && pwd)"
PREFIX="${1:?usage: deploy/coral/python.sh PREFIX [BUNDLE]}"
BUNDLE="${2:-}"
PYTHON="${PYTHON:-python3}"

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# The minimum is pyproject.toml's requires-python (one place); 3.11.0 and later work, Debian 12's 3.11.2 included.
min_python="$(sed -n 's/^requires-python = ">=\([0-9.]*\)"$/\1/p' "${PROJECT}/pyproject.toml")"
[ -n "${min_python}" ] || die "cannot read requires-python from ${PROJECT}/pyproject.toml"
new_enough() {
    "$1" -c "import sys; sys.exit(sys.version_info < tuple(int(p) for p in '${min_python}'.split('.')))" 2>/dev/null
}
can_venv() { "$1" -c 'import venv, ensurepip' 2>/dev/null; }

if command -v "${PYTHON}" >/dev/null && new_enough "${PYTHON}"; then
    can_venv "${PYTHON}" || die "${PYTHON} cannot make venvs: apt-get install python3-venv"
    command -v "${PYTHON}"
    exit 0
fi
found="$("${PYTHON}" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo "missing")"
standalone="${PREFIX}/python/bin/python3"
if [ -x "${standalone}" ] && new_enough "${standalone}"; then
    say "${PYTHON} is ${found}, older than ${min_python}: using ${standalone} (installed earlier)"
    echo "${standalone}"
    exit 0
fi
mkdir -p "${PREFIX}"
rm -rf "${PREFIX}/python"
if [ -n "${BUNDLE}" ]; then
    archives=("${BUNDLE}"/python/*.tar.gz)
    [ -f "${archives[0]}" ] || die "${PYTHON} is ${found}, older than ${min_python}, and the bundle ${BUNDLE} has no python/*.tar.gz: make it again with deploy/coral/bundle.sh"
    say "${PYTHON} is ${found}, older than ${min_python}: unpacking the bundle's $(basename "${archives[0]}") into ${PREFIX}/python"
    tar -xzf "${archives[0]}" -C "${PREFIX}"
else
    say "${PYTHON} is ${found}, older than ${min_python}: installing a standalone CPython ${min_python} with uv into ${PREFIX}/python"
    offline="without internet, make an offline bundle on the development machine (deploy/coral/bundle.sh) and run install.sh --bundle DIR"
    uv="$(command -v uv || true)"
    if [ -z "${uv}" ]; then
        say "no uv here: installing it from the package index with ${PYTHON} -m pip into ${PREFIX}/uv"
        "${PYTHON}" -m pip install --quiet --disable-pip-version-check --target "${PREFIX}/uv" uv >&2 \
            || die "could not install uv with ${PYTHON}'s pip (pip older than 19.3 cannot install its manylinux2014 wheel: ${PYTHON} -m pip install --user --upgrade pip first); ${offline}"
        uv="${PREFIX}/uv/bin/uv"
    fi
    managed="$(mktemp -d)"
    trap 'rm -rf "${managed}"' EXIT
    UV_PYTHON_INSTALL_DIR="${managed}" "${uv}" python install "${min_python}" >&2 \
        || die "uv could not download CPython ${min_python} (python-build-standalone); ${offline}"
    installed=("${managed}"/cpython-*/)
    mv "${installed[0]}" "${PREFIX}/python"
fi
new_enough "${standalone}" || die "${standalone} does not run or is older than ${min_python}"
echo "${standalone}"
