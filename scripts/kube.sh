# Cluster helpers shared by deploy and e2e. Sourced, never run.
# shellcheck shell=bash

# Everything that explains a failed rollout: pods, recent events, and for every pod that is not
# ready its description and logs (current and previous container).
explain_namespace() {
  local ns=$1 pod
  printf '\n\033[1m--- what went wrong in namespace %s ---\033[0m\n' "$ns" >&2
  kubectl -n "$ns" get pods -o wide >&2 || true
  printf '\n--- events (latest last) ---\n' >&2
  kubectl -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 30 >&2 || true
  for pod in $(kubectl -n "$ns" get pods -o jsonpath='{range .items[?(@.status.containerStatuses[0].ready!=true)]}{.metadata.name}{"\n"}{end}' 2>/dev/null); do
    printf '\n--- describe pod %s ---\n' "$pod" >&2
    kubectl -n "$ns" describe pod "$pod" 2>/dev/null | sed -n '/^Containers:/,$p' | head -n 60 >&2 || true
    printf '\n--- logs %s ---\n' "$pod" >&2
    kubectl -n "$ns" logs "$pod" --all-containers --tail=40 >&2 2>&1 || true
    kubectl -n "$ns" logs "$pod" --all-containers --previous --tail=20 >&2 2>/dev/null || true
  done
}

# The consumer's /stats, through the API server's pod proxy (no port-forward needed).
consumer_stats() {
  local ns=$1 pod
  pod=$(kubectl -n "$ns" get pods -l app=consumer --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
  kubectl get --raw "/api/v1/namespaces/$ns/pods/$pod:8081/proxy/stats"
}
