#!/usr/bin/env bash
# Build (or reuse) an arm64 Debian 12 root that stands in for a board in `make test-aarch64`:
# debootstrap --arch=arm64 and qemu-user-static, both Debian 12's own packages, and the kernel's
# binfmt_misc running aarch64 binaries through qemu. Prints the root's path.
#
#   tests/aarch64/emulated-root.sh [ROOT]    (default: $MLCLOUD_STATE_DIR/aarch64/rootfs)
#
# The root is stock bookworm (minbase plus python3, python3-venv, ca-certificates: what a Debian 12
# board or Raspberry Pi OS has); the tests install mlcloud into it with deploy/coral/install.sh.
# It lives in the state directory, never in git; delete it to start over. Needs root.
set -euo pipefail

ROOT="${1:-${MLCLOUD_STATE_DIR:-$(pwd)/.state}/aarch64/rootfs}"
SUITE=bookworm
MIRROR="${MLCLOUD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
say() { printf 'emulated-root: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "needs root (debootstrap, chroot, binfmt_misc)"; exit 1; }
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (Debian's packages)"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi

# qemu-user-static's binfmt entry (flag F: the interpreter is opened now, so it works in a chroot).
# A container without systemd-binfmt has neither the mount nor the entry.
binfmt=/proc/sys/fs/binfmt_misc
[ -e "${binfmt}/register" ] || mount -t binfmt_misc binfmt_misc "${binfmt}"
if [ ! -e "${binfmt}/qemu-aarch64" ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >"${binfmt}/register"
fi

if [ ! -x "${ROOT}/usr/bin/python3" ]; then
    say "debootstrap --arch=arm64 ${SUITE} into ${ROOT} (under emulation: 15–30 minutes)"
    rm -rf "${ROOT}.partial"
    mkdir -p "$(dirname "${ROOT}")"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
        "${SUITE}" "${ROOT}.partial" "${MIRROR}" >&2
    rm -rf "${ROOT}"
    mv "${ROOT}.partial" "${ROOT}"
fi
[ "$(chroot "${ROOT}" uname -m)" = aarch64 ] || { say "${ROOT} does not run as aarch64"; exit 1; }
echo "${ROOT}"
