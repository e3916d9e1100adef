# Shared helpers of the scripts: step headings, tool checks with install hints, a cleanup stack,
# process management and small HTTP/JSON checks. Sourced, never run.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

# Pinned tool versions (the walkthrough is tested with these).
KIND_VERSION="${KIND_VERSION:-v0.27.0}"
KUBECTL_MIN_MINOR=28
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.32.2}"
export KIND_VERSION KUBECTL_MIN_MINOR KIND_NODE_IMAGE

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# need TOOL "install hint"
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed. $2"
}

CLEANUP=()
on_exit() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ] && declare -F explain_failure >/dev/null; then
    explain_failure || true
  fi
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUP[$i]}" >/dev/null 2>&1 || true
  done
  exit "$rc"
}
trap on_exit EXIT
cleanup() { CLEANUP+=("$*"); }

# Names must be DNS-1123 labels (lowercase); the original note's deploy failed on an uppercase name.
check_dns1123() {
  local what=$1 name=$2
  if ! [[ "$name" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || [ "${#name}" -gt 63 ]; then
    die "$what '$name' is not a valid Kubernetes name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (DNS-1123 label), e.g. '$(echo "$name" | tr 'A-Z_.' 'a-z--' | sed 's/[^a-z0-9-]//g; s/^-*//; s/-*$//')'"
  fi
}

# start NAME LOGFILE -- command...   (background process, killed on exit)
start_bg() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  local pid=$!
  # SIGTERM, then wait: providers drain before they exit and must free their ports first.
  cleanup "kill $pid; wait $pid"
  eval "PID_${name//-/_}=$pid"
  info "started $name (pid $pid, log $log)"
}

# wait_http URL SECONDS
wait_http() {
  local url=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  die "no answer from $url after ${secs}s"
}

# json URL PYTHON-EXPRESSION-ON-d   → prints the value
json() {
  curl -fsS "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"
}
