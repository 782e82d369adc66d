#!/usr/bin/env bash
# Bring up an mlcloud host on an aarch64 board (Coral Dev Board, Raspberry Pi 4/5, any arm64
# Debian). Run it as root from a copy of the mlcloud checkout on the board:
#
#   sudo deploy/coral/install.sh --dev 192.168.1.10 --trust AB… --nats-auth rpi5-nats-auth
#                                                   # host on the dev machine's NATS, with the folder
#                                                   # `mlcloud nats-creds rpi5` wrote there
#   sudo deploy/coral/install.sh --dev 192.168.1.10 --nats standalone   # the board is its own lattice
#   sudo mlcloud/deploy/coral/install.sh --bundle . --dev 192.168.1.10 …  # offline, from the bundle
#                                                   # deploy/coral/bundle.sh made (mlcloud/ is in it)
#
# A system Python older than pyproject.toml's requires-python (Mendel's 3.7) is no stop: python.sh
# installs a standalone CPython into PREFIX/python (with uv when online, from the bundle when not).
# It creates the venv PREFIX/venv with the aarch64 dependency set (requirements-aarch64*.txt:
# onnxruntime and ai-edge-litert, no tract), installs mlcloud into it, writes /etc/mlcloud/
# (host.env, and nats.conf unless --nats direct), the board's NATS secrets (--nats-auth, into
# /var/lib/mlcloud/nats-auth, 0600 for the mlcloud user) and the systemd units mlcloud-host (and
# mlcloud-nats), and starts them.
# Running it again upgrades the venv and keeps an edited /etc/mlcloud/host.env.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(cd "${HERE}/../.." && pwd)"

PREFIX=/opt/mlcloud
ETC=/etc/mlcloud
UNIT_DIR=/etc/systemd/system
DEV=""
TRUST=""
NATS_AUTH=""
STATE=/var/lib/mlcloud
AUTH_DIR="${STATE}/nats-auth"
NATS_MODE=direct
CORAL=auto
SYSTEMD=1
PYTHON="${PYTHON:-python3}"
WHEELS=""
BUNDLE=""

usage() {
    cat <<EOF
usage: deploy/coral/install.sh --dev ADDRESS [options]

  --dev ADDRESS     the development machine as the board reaches it (NATS on :4222, Bindle on
                    :8080, registry on :5000; deploy/coral/dev.env opens them there)
  --trust KEY       the account key (A…) that signs the development machine's components
                    (\`mlcloud trust list\` there prints it): the board's host runs only
                    artifacts signed by it (MLCLOUD_TRUSTED_ISSUERS in host.env)
  --nats-auth DIR   the folder \`mlcloud nats-creds BOARD\` wrote on the development machine:
                    the host's credentials and the lattice account seed (to mint its instances'),
                    the leaf node's credentials and operator-mode lines; installed 0600 for the
                    mlcloud user in ${AUTH_DIR} (the hub refuses connections without them)
  --nats MODE       direct (default): the host connects to the development machine's NATS;
                    standalone: a NATS server with JetStream here, the board its own lattice;
                    leaf: a leaf node of the development machine's hub (the host follows the
                    links through the hub's hosts; link changes are made on the hub)
  --standalone      same as --nats standalone
  --coral auto|true|false
                    the host's coral= label (auto: true when libedgetpu.so.1 or a Coral device
                    is found)
  --prefix DIR      where the venv goes (default ${PREFIX})
  --wheels DIR      install from wheels in DIR only (a board without a package index: fill DIR
                    on another machine with \`pip download\`, see docs/deploy.md)
  --bundle DIR      install offline from the bundle deploy/coral/bundle.sh made: its wheels
                    (mlcloud's own included) and, when the system Python is too old, its
                    standalone CPython
  --no-systemd      install the venv and /etc/mlcloud only; start nothing
  -h, --help        this text

environment: PYTHON (default python3; when older than pyproject.toml's requires-python, 3.11, a
             standalone CPython is installed in PREFIX/python: deploy/coral/python.sh)
EOF
}

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dev) DEV="${2:?--dev needs an address}"; shift 2 ;;
        --trust) TRUST="${2:?--trust needs an account key}"; shift 2 ;;
        --nats-auth) NATS_AUTH="${2:?--nats-auth needs the folder \`mlcloud nats-creds\` wrote}"; shift 2 ;;
        --nats) NATS_MODE="${2:?--nats needs direct, standalone or leaf}"; shift 2 ;;
        --standalone) NATS_MODE=standalone; shift ;;
        --coral) CORAL="${2:?--coral needs auto, true or false}"; shift 2 ;;
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --wheels) WHEELS="${2:?--wheels needs a directory}"; shift 2 ;;
        --bundle) BUNDLE="${2:?--bundle needs the directory deploy/coral/bundle.sh made}"; shift 2 ;;
        --no-systemd) SYSTEMD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[ -n "${DEV}" ] || { usage >&2; die "--dev is required"; }
if [ -n "${TRUST}" ] && ! [[ "${TRUST}" =~ ^A[A-Z2-7]{55}$ ]]; then
    die "--trust must be an account public key (A…, 56 characters), as \`mlcloud trust list\` prints it"
fi
if [ -n "${BUNDLE}" ]; then
    [ -d "${BUNDLE}/wheels" ] || die "--bundle ${BUNDLE} has no wheels/: make it with deploy/coral/bundle.sh"
    BUNDLE="$(cd "${BUNDLE}" && pwd)"
    WHEELS="${BUNDLE}/wheels"
fi
case "${CORAL}" in auto | true | false) ;; *) die "--coral must be auto, true or false" ;; esac
case "${NATS_MODE}" in
    direct) NATS_URL="nats://${DEV}:4222" ;;
    standalone | leaf) NATS_URL="nats://127.0.0.1:4222" ;;
    *) die "--nats must be direct, standalone or leaf" ;;
esac
[ "$(id -u)" -eq 0 ] || die "run as root (it writes ${PREFIX}, ${ETC} and systemd units)"
# The NATS secrets: from --nats-auth, or kept from an earlier run.
auth_files=(host.creds account.nk)
if [ "${NATS_MODE}" = leaf ]; then auth_files+=(leaf.creds server.conf); fi
missing=()
for file in "${auth_files[@]}"; do [ -f "${NATS_AUTH:-${AUTH_DIR}}/${file}" ] || missing+=("${file}"); done
if [ ${#missing[@]} -gt 0 ]; then
    [ -z "${NATS_AUTH}" ] || die "--nats-auth ${NATS_AUTH} has no ${missing[*]}: \`mlcloud nats-creds BOARD\` on the development machine writes them"
    [ "${NATS_MODE}" != leaf ] || die "--nats leaf needs --nats-auth (${AUTH_DIR} has no ${missing[*]})"
    say "warning: no --nats-auth: the host cannot join a hub that requires credentials (every hub deploy/run.sh starts)"
fi

arch="$(uname -m)"
if [ "${arch}" != aarch64 ]; then
    say "warning: this machine is ${arch}, not aarch64; the host will still say arch=aarch64"
fi
# The system's Python when new enough, else a standalone CPython in PREFIX/python.
PYTHON="$(PYTHON="${PYTHON}" "${HERE}/python.sh" "${PREFIX}" "${BUNDLE}")"
say "Python ${PYTHON} ($("${PYTHON}" -c 'import platform; print(platform.python_version())'))"

edgetpu_present() {
    ldconfig -p 2>/dev/null | grep -q 'libedgetpu\.so\.1' && return 0
    [ -e /dev/apex_0 ] && return 0
    # USB accelerator, before and after its firmware is loaded.
    grep -qsiE '^(1a6e|18d1)$' /sys/bus/usb/devices/*/idVendor 2>/dev/null \
        && grep -qsiE '^(089a|9302)$' /sys/bus/usb/devices/*/idProduct 2>/dev/null
}
if [ "${CORAL}" = auto ]; then
    if edgetpu_present; then CORAL=true; else CORAL=false; fi
fi

# 1. venv with the aarch64 dependency set, then mlcloud itself (its deps are already there).
say "venv ${PREFIX}/venv"
mkdir -p "${PREFIX}"
[ -x "${PREFIX}/venv/bin/python" ] || "${PYTHON}" -m venv "${PREFIX}/venv"
pip=("${PREFIX}/venv/bin/python" -m pip install --upgrade --progress-bar off)
if [ -n "${WHEELS}" ]; then pip+=(--no-index --find-links "${WHEELS}"); fi
"${pip[@]}" pip
"${pip[@]}" -r "${HERE}/requirements-aarch64.txt" -r "${HERE}/requirements-aarch64-sdist.txt"
# mlcloud itself: the bundle's wheel (no build backend offline), else built from this checkout.
if [ -n "${BUNDLE}" ]; then "${pip[@]}" --no-deps mlcloud; else "${pip[@]}" --no-deps "${PROJECT}"; fi
"${PREFIX}/venv/bin/mlcloud" --version

# 2. the mlcloud user, with access to the Edge TPU devices.
if ! id mlcloud >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/mlcloud --shell /usr/sbin/nologin mlcloud
fi
for group in plugdev apex; do
    if getent group "${group}" >/dev/null; then usermod -a -G "${group}" mlcloud; fi
done
install -d -o mlcloud -g mlcloud "${STATE}"

# 3. the board's NATS secrets, where the host looks by default (state_dir/nats-auth); readable by
# the mlcloud user only (both the host and nats-server run as it).
if [ -n "${NATS_AUTH}" ]; then
    install -d -m 0700 -o mlcloud -g mlcloud "${AUTH_DIR}"
    for file in "${auth_files[@]}"; do
        install -m 0600 -o mlcloud -g mlcloud "${NATS_AUTH}/${file}" "${AUTH_DIR}/${file}"
    done
    say "installed the NATS secrets ${auth_files[*]} in ${AUTH_DIR} (0600): delete ${NATS_AUTH} once copied"
fi

# 4. /etc/mlcloud: host settings (kept when edited) and the NATS configuration.
install -d "${ETC}"
if [ ! -f "${ETC}/host.env" ]; then
    sed -e "s/@DEV@/${DEV}/g" -e "s|@NATS_URL@|${NATS_URL}|g" -e "s/@TRUST@/${TRUST}/g" \
        "${HERE}/host.env" >"${ETC}/host.env"
    say "wrote ${ETC}/host.env"
    [ -n "${TRUST}" ] || say "warning: no --trust: the host refuses every artifact until MLCLOUD_TRUSTED_ISSUERS is set in ${ETC}/host.env"
else
    say "kept ${ETC}/host.env (delete it to start from deploy/coral/host.env again)"
fi
if [ "${NATS_MODE}" != direct ]; then
    account=""
    if [ "${NATS_MODE}" = leaf ]; then
        # The operator-mode lines nats-leaf.conf includes (JWTs: public, but no one else's business).
        install -m 0640 -g mlcloud "${AUTH_DIR}/server.conf" "${ETC}/nats-auth.conf"
        account="$("${PREFIX}/venv/bin/python" -c 'import sys
from mlcloud.identity import KeyPair
print(KeyPair.from_seed(open(sys.argv[1]).read()).public_key)' "${AUTH_DIR}/account.nk")"
    fi
    sed -e "s/@DEV@/${DEV}/g" -e "s/@HOSTNAME@/$(hostname -s)/g" -e "s|@AUTH_DIR@|${AUTH_DIR}|g" \
        -e "s/@ACCOUNT@/${account}/g" "${HERE}/nats-${NATS_MODE}.conf" >"${ETC}/nats.conf"
    "${PREFIX}/venv/bin/nats-server" -t -c "${ETC}/nats.conf" >/dev/null || die "${ETC}/nats.conf does not parse"
    say "wrote ${ETC}/nats.conf (${NATS_MODE})"
fi
say "the host connects to ${NATS_URL}"

# 5. the LiteRT engine and the Edge TPU delegate.
if "${PREFIX}/venv/bin/python" -c 'import ai_edge_litert.interpreter' 2>/dev/null; then
    say "LiteRT (ai-edge-litert) installed"
else
    say "warning: ai-edge-litert does not import: tflite models will not load"
fi
if ldconfig -p 2>/dev/null | grep -q 'libedgetpu\.so\.1'; then
    say "Edge TPU runtime libedgetpu.so.1 found: execution_target tpu models use the Edge TPU"
else
    say "no libedgetpu.so.1: tflite models run on LiteRT's CPU kernels (the provider logs this)."
    say "  For the Edge TPU install libedgetpu1-std from Coral's apt repository (docs/deploy.md)."
fi

# 6. systemd units.
if [ "${SYSTEMD}" = 0 ]; then
    [ "${NATS_MODE}" = direct ] || say "done (--no-systemd): start ${PREFIX}/venv/bin/nats-server -c ${ETC}/nats.conf, then"
    say "  env \$(grep -v '^#' ${ETC}/host.env | xargs) ${PREFIX}/venv/bin/mlcloud host --label arch=aarch64 --label coral=${CORAL}"
    exit 0
fi
command -v systemctl >/dev/null || die "no systemctl: rerun with --no-systemd"
units=(mlcloud-host.service)
[ "${NATS_MODE}" = direct ] || units+=(mlcloud-nats.service)
for unit in "${units[@]}"; do
    sed -e "s|@PREFIX@|${PREFIX}|g" -e "s|@CORAL@|${CORAL}|g" "${HERE}/${unit}" >"${UNIT_DIR}/${unit}"
done
systemctl daemon-reload
[ "${NATS_MODE}" = direct ] || systemctl enable --now mlcloud-nats.service
systemctl enable mlcloud-host.service
systemctl restart mlcloud-host.service
say "mlcloud-host runs (labels arch=aarch64 coral=${CORAL}); follow it with: journalctl -u mlcloud-host -f"
say "on the development machine: deploy/run.sh status  (the board's host is listed with arch=aarch64)"
