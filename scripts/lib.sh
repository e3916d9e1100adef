# Shared helpers of the scripts: step headings, tool checks with install hints, a cleanup stack,
# process management and bounded HTTP waits. Sourced, never run. Every wait here has a bound, and
# no helper runs its arguments as code: commands are kept as quoted argument lists.
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
    # Each entry is an argument list quoted by cleanup() with printf %q: eval only re-splits it.
    eval "${CLEANUP[$i]}" >/dev/null 2>&1 || true
  done
  exit "$rc"
}
trap on_exit EXIT
# cleanup CMD ARGS...: run at exit, last registered first. The arguments are kept as they are given
# (quoted), never re-parsed as shell code.
cleanup() { CLEANUP+=("$(printf '%q ' "$@")"); }

# stop_pid PID [SECONDS]: SIGTERM, then up to SECONDS (default 30) for it to exit, then SIGKILL.
stop_pid() {
  local pid=$1 secs=${2:-30} i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && { info "pid $pid still running after ${secs}s: SIGKILL"; kill -9 "$pid" 2>/dev/null; }
  wait "$pid" 2>/dev/null || true
}

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
  # SIGTERM, then a bounded wait: providers drain before they exit and must free their ports first.
  cleanup stop_pid "$pid"
  printf -v "PID_${name//-/_}" '%s' "$pid"
  info "started $name (pid $pid, log $log)"
}

# fetch URL [CURL ARGS...]: one HTTP request that gives up after FETCH_TIMEOUT seconds (default 10).
fetch() {
  local url=$1
  shift
  curl -fsS --connect-timeout 5 --max-time "${FETCH_TIMEOUT:-10}" "$@" "$url"
}

# wait_http URL SECONDS
wait_http() {
  local url=$1 secs=${2:-30} end=$((SECONDS + ${2:-30}))
  while ((SECONDS < end)); do
    FETCH_TIMEOUT=2 fetch "$url" -o /dev/null 2>/dev/null && return 0
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
# and the log's path when it fails. CMD is stopped after RUN_TIMEOUT seconds (default 1800).
run_logged() {
  local name=$1 start=$SECONDS pid rc=0 log limit=${RUN_TIMEOUT:-1800}
  shift
  log="${LOGDIR:?}/$name.log"
  mkdir -p "$LOGDIR"
  info "$name: log in ${log#"$ROOT"/}"
  timeout --kill-after=30 "$limit" "$@" >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (((SECONDS - start) % 20 == 0)); then info "... $name: $(clock $((SECONDS - start))) so far"; fi
  done
  wait "$pid" || rc=$?
  if [ "$rc" -eq 124 ]; then
    tail -n 40 "$log" >&2
    die "$name did not finish in ${limit}s (RUN_TIMEOUT) and was stopped; full log: ${log#"$ROOT"/}"
  fi
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log" >&2
    die "$name failed after $(clock $((SECONDS - start))) (exit $rc); full log: ${log#"$ROOT"/}"
  fi
  info "$name: done in $(clock $((SECONDS - start)))"
}
