# Cluster helpers shared by deploy and e2e. Sourced, never run.
# shellcheck shell=bash

# kubectl with a bound on every request (KUBECTL_TIMEOUT, default 30s), for one-shot commands; waits
# (rollout status, delete --wait) keep kubectl and their own --timeout.
kc() { kubectl --request-timeout="${KUBECTL_TIMEOUT:-30s}" "$@"; }

# Everything that explains a failed rollout: pods, recent events, and for every pod that is not
# ready its description and logs (current and previous container).
explain_namespace() {
  local ns=$1 pod
  printf '\n\033[1m--- what went wrong in namespace %s ---\033[0m\n' "$ns" >&2
  kc -n "$ns" get pods -o wide >&2 || true
  printf '\n--- events (latest last) ---\n' >&2
  kc -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 30 >&2 || true
  for pod in $(kc -n "$ns" get pods -o jsonpath='{range .items[?(@.status.containerStatuses[0].ready!=true)]}{.metadata.name}{"\n"}{end}' 2>/dev/null); do
    printf '\n--- describe pod %s ---\n' "$pod" >&2
    kc -n "$ns" describe pod "$pod" 2>/dev/null | sed -n '/^Containers:/,$p' | head -n 60 >&2 || true
    printf '\n--- logs %s ---\n' "$pod" >&2
    kc -n "$ns" logs "$pod" --all-containers --tail=40 >&2 2>&1 || true
    kc -n "$ns" logs "$pod" --all-containers --previous --tail=20 >&2 2>/dev/null || true
  done
}

# Whether the current context's API server is ready: /readyz, not `kubectl version` (which exits
# non-zero when a custom-built server reports a version that is not strict semver).
cluster_ready() {
  [ "$(kubectl get --raw /readyz --request-timeout="${1:-10}s" 2>/dev/null)" = ok ]
}

# The server's version, for information only (any string the server reports).
server_version() {
  kubectl get --raw /version --request-timeout=10s 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("gitVersion", "unknown"))' 2>/dev/null || echo unknown
}

# write_kustomization DIR MODE NAMESPACE REPO TAG: an overlay of k8s/overlays/MODE in NAMESPACE with
# the images REPO/provider:TAG and REPO/consumer:TAG (DIR must sit two levels under the repository).
write_kustomization() {
  local dir=$1 mode=$2 ns=$3 repo=$4 tag=$5
  rm -rf "$dir" && mkdir -p "$dir"
  {
    printf '%s\n' "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" "namespace: $ns" "resources:" \
      "  - ../../k8s/overlays/$mode"
    # The ClusterRoleBinding's subject names the ServiceAccount's namespace: kustomize leaves it.
    if [ "$mode" = api-zone ]; then
      printf '%s\n' "patches:" "  - target: {kind: ClusterRoleBinding, name: dubbo-discovery-node-reader}" "    patch: |-" \
        "      - op: replace" "        path: /subjects/0/namespace" "        value: $ns"
    fi
    printf '%s\n' "images:" "  - name: dubbo-k8s/provider" "    newName: $repo/provider" "    newTag: \"$tag\"" \
      "  - name: dubbo-k8s/consumer" "    newName: $repo/consumer" "    newTag: \"$tag\""
  } >"$dir/kustomization.yaml"
}

# pf_open NS POD PORT: a kubectl port-forward to the pod's PORT, kept open until exit, and its local URL
# in PF_URL. Call it in the main shell (not in $(...)): the forward must outlive the call. A
# port-forward enters the pod's network namespace, so the NetworkPolicy of the TLS overlays, which
# may keep the API server's pod proxy away from the admin ports, does not keep it out.
pf_open() {
  local ns=$1 pod=$2 port=$3 lp pid i
  lp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  kubectl -n "$ns" port-forward "pod/$pod" "$lp:$port" >/dev/null 2>&1 &
  pid=$!
  cleanup stop_pid "$pid" 5
  for ((i = 0; i < 75; i++)); do
    if curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$lp/healthz" 2>/dev/null; then
      # shellcheck disable=SC2034 # read by the caller
      PF_URL="http://127.0.0.1:$lp"
      return 0
    fi
    sleep 0.2
  done
  stop_pid "$pid" 5
  return 1
}

# The consumer's /stats, through the API server's pod proxy (no port-forward needed).
consumer_stats() {
  local ns=$1 pod
  pod=$(kc -n "$ns" get pods -l app=consumer --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
  kc get --raw "/api/v1/namespaces/$ns/pods/$pod:8081/proxy/stats"
}
