#!/usr/bin/env bash
# Make an offline bundle for a board without internet (the Coral Dev Board's Mendel has Python 3.7
# and often no route out): this checkout, every aarch64 wheel an mlcloud host needs, mlcloud's own
# wheel, and a standalone aarch64 CPython (python-build-standalone) for a board whose Python is
# older than pyproject.toml's requires-python. Run it on the development machine:
#
#   deploy/coral/bundle.sh OUT [--python-archive FILE]
#
# then copy OUT to the board and there run (as root, from OUT):
#
#   mlcloud/deploy/coral/install.sh --bundle . --dev 192.168.1.10 --trust A… --nats-auth DIR
#
# OUT/mlcloud/   the checkout's tracked files (install.sh, pyproject.toml, deploy/coral/…)
# OUT/wheels/    the aarch64 wheels for CPython 3.11 (requirements-aarch64*.txt) and mlcloud's own
# OUT/python/    cpython-*-aarch64-unknown-linux-gnu-install_only*.tar.gz (its top directory is python/)
#
# The CPython archive is FILE when given (download it from python-build-standalone's releases),
# else the one `uv python list` names for linux-aarch64-gnu (uv on PATH; `pip install uv`), fetched
# with curl. Wheels come through pip as this machine has it set up (its index, proxy, certificates).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "${HERE}/../.." && pwd)"
OUT=""
ARCHIVE=""
PYTHON="${PYTHON:-python3}"

say() { printf 'bundle.sh: %s\n' "$*"; }
die() { printf 'bundle.sh: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --python-archive) ARCHIVE="${2:?--python-archive needs a .tar.gz}"; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (usage: deploy/coral/bundle.sh OUT [--python-archive FILE])" ;;
        *) [ -z "${OUT}" ] || die "one OUT directory only"; OUT="$1"; shift ;;
    esac
done
[ -n "${OUT}" ] || die "usage: deploy/coral/bundle.sh OUT [--python-archive FILE]"
min_python="$(sed -n 's/^requires-python = ">=\([0-9.]*\)"$/\1/p' "${PROJECT}/pyproject.toml")"
[ -n "${min_python}" ] || die "cannot read requires-python from ${PROJECT}/pyproject.toml"
if [ -n "${ARCHIVE}" ]; then
    [ -f "${ARCHIVE}" ] || die "--python-archive ${ARCHIVE} does not exist"
    tar -tzf "${ARCHIVE}" python/bin/python3 >/dev/null 2>&1 \
        || die "${ARCHIVE} is not a python-build-standalone install_only archive (no python/bin/python3)"
fi
mkdir -p "${OUT}"
OUT="$(cd "${OUT}" && pwd)"
rm -rf "${OUT}/mlcloud" "${OUT}/wheels" "${OUT}/python"
mkdir -p "${OUT}/mlcloud" "${OUT}/wheels" "${OUT}/python"

# 1. the checkout (tracked files as they are in the working tree).
git -C "${PROJECT}" ls-files -z | tar -C "${PROJECT}" --null -T - -c | tar -C "${OUT}/mlcloud" -x
say "mlcloud/: $(git -C "${PROJECT}" ls-files | wc -l) files of ${PROJECT}"

# 2. wheels: the board's set for aarch64 (the platforms of tests/deploy/test_aarch64_deps.py), the
# sdist-only pure-Python ones built into wheels here, and mlcloud's own.
pip=("${PYTHON}" -m pip)
"${pip[@]}" download --quiet --progress-bar off --only-binary=:all: --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 --python-version 3.11 \
    --implementation cp -r "${HERE}/requirements-aarch64.txt" -d "${OUT}/wheels"
"${pip[@]}" wheel --quiet --progress-bar off --no-deps -r "${HERE}/requirements-aarch64-sdist.txt" -w "${OUT}/wheels"
"${pip[@]}" wheel --quiet --progress-bar off --no-deps "${OUT}/mlcloud" -w "${OUT}/wheels"
rm -rf "${OUT}/mlcloud/build" "${OUT}"/mlcloud/*.egg-info  # setuptools builds in the tree
say "wheels/: $(find "${OUT}/wheels" -name '*.whl' | wc -l) wheels"

# 3. the standalone CPython.
if [ -z "${ARCHIVE}" ]; then
    command -v uv >/dev/null || die "no uv to find python-build-standalone's CPython (pip install uv), or pass --python-archive FILE"
    url="$(uv python list --all-platforms --show-urls --output-format json "cpython-${min_python}-linux-aarch64-gnu" \
        | "${PYTHON}" -c 'import json, sys; print(next(p["url"] for p in json.load(sys.stdin) if p["url"]))')" \
        || die "uv names no CPython ${min_python} for linux-aarch64-gnu"
    ARCHIVE="${OUT}/python/$(basename "${url}" | sed 's/%2B/+/g')"
    curl -fsSL --retry 3 -o "${ARCHIVE}" "${url}" || die "could not download ${url}"
else
    cp "${ARCHIVE}" "${OUT}/python/"
fi
say "python/: $(basename "${ARCHIVE}")"
say "done: copy ${OUT} to the board and run, as root in it: mlcloud/deploy/coral/install.sh --bundle . --dev ADDRESS …"
