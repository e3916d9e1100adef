# Shared helpers of the scripts: step headings, tool checks with install hints, a cleanup stack,
# process management and small HTTP/JSON checks. Sourced, never run.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

# The kind node image of kind v0.29.0 for Kubernetes 1.32 (by digest: the tag alone can move). The
# tools themselves are pinned in scripts/tools.lock.
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.32.5@sha256:e3b2327e3a5ab8c76f5ece68936e4cafaa82edf58486b769727ab0b3b97a5b0d}"
export KIND_NODE_IMAGE

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

# 1m05s
clock() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# phase TEXT: a step heading with the time since the script started
PHASE_START=${PHASE_START:-$SECONDS}
phase() { printf '\n\033[1m==> [%s] %s\033[0m\n' "$(clock $((SECONDS - PHASE_START)))" "$*" >&2; }

# run_logged NAME CMD...: output to $LOGDIR/NAME.log, a line every 20 s while it runs, the last lines
# and the log's path when it fails.
run_logged() {
  local name=$1 start=$SECONDS pid rc=0 log
  shift
  log="${LOGDIR:?}/$name.log"
  mkdir -p "$LOGDIR"
  info "$name: log in ${log#"$ROOT"/}"
  "$@" >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (((SECONDS - start) % 20 == 0)); then info "... $name: $(clock $((SECONDS - start))) so far"; fi
  done
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log" >&2
    die "$name failed after $(clock $((SECONDS - start))) (exit $rc); full log: ${log#"$ROOT"/}"
  fi
  info "$name: done in $(clock $((SECONDS - start)))"
}

# json URL PYTHON-EXPRESSION-ON-d   → prints the value
json() {
  curl -fsS "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)"
}
