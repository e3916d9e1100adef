"""Policy checks on rendered manifests, beyond the schema: what this project promises of every
object (DNS-1123 names, non-root read-only containers with dropped capabilities, probes, requests
and limits, named ports, a grace period that covers the provider's drain, read-only RBAC).
Usage: manifest_policy.py RENDERED.yaml  (exit 1 with one line per violation)."""
import re
import sys

import yaml

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Least privilege, exactly: API mode reads EndpointSlices and Services in its namespace; zone
# awareness (its own overlay) reads Nodes. Nothing is ever written.
ALLOWED_ROLE_RULES = {
    ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
    ("", "services"): {"list", "watch"},
}
ALLOWED_CLUSTER_RULES = {("", "nodes"): {"get"}}


def seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(v))
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return n / 1000 if unit == "ms" else n * (60 if unit == "m" else 1)


def millicores(v):
    if v is None:
        return None
    v = str(v)
    return int(v[:-1]) if v.endswith("m") else int(float(v) * 1000)


def main(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    errors = []
    err = errors.append
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        where = f"{kind}/{name}"
        if not DNS1123.match(name) or len(name) > 63:
            err(f"{where}: name is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)")
        if kind == "Deployment":
            pod = d["spec"]["template"]["spec"]
            psc = pod.get("securityContext", {})
            if psc.get("runAsNonRoot") is not True:
                err(f"{where}: pod securityContext.runAsNonRoot must be true")
            for c in pod["containers"]:
                cw = f"{where} container {c['name']}"
                sc = c.get("securityContext", {})
                if sc.get("readOnlyRootFilesystem") is not True:
                    err(f"{cw}: readOnlyRootFilesystem must be true")
                if sc.get("allowPrivilegeEscalation") is not False:
                    err(f"{cw}: allowPrivilegeEscalation must be false")
                if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                    err(f"{cw}: capabilities.drop must include ALL")
                res = c.get("resources", {})
                if not res.get("requests") or not res.get("limits"):
                    err(f"{cw}: resources.requests and resources.limits are required")
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in c:
                        err(f"{cw}: {probe} is required")
                    elif "timeoutSeconds" not in c[probe]:
                        err(f"{cw}: {probe}.timeoutSeconds must be set")
                if c.get("readinessProbe", {}).get("failureThreshold", 3) < 2:
                    err(f"{cw}: readinessProbe.failureThreshold must be at least 2 (one slow answer is not unreadiness)")
                cpu_req, cpu_lim = millicores(res.get("requests", {}).get("cpu")), millicores(res.get("limits", {}).get("cpu"))
                if cpu_lim is not None and (cpu_req is None or cpu_lim > 2 * cpu_req):
                    err(f"{cw}: a CPU limit above twice the request throttles calls in bursts: raise the request or drop the limit")
                for p in c.get("ports", []):
                    if not p.get("name"):
                        err(f"{cw}: port {p.get('containerPort')} has no name")
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                if c["name"] == "provider":
                    for probe in ("readinessProbe", "livenessProbe"):
                        if "grpc" not in c.get(probe, {}):
                            err(f"{cw}: {probe} must be a gRPC probe")
                    drain = seconds(env.get("PROVIDER_DRAIN", "5s"))
                    stop = seconds(env.get("PROVIDER_SHUTDOWN_TIMEOUT", "10s"))
                    grace = pod.get("terminationGracePeriodSeconds", 30)
                    if drain is None or stop is None or grace <= drain + stop:
                        err(f"{cw}: terminationGracePeriodSeconds ({grace}) must exceed PROVIDER_DRAIN + PROVIDER_SHUTDOWN_TIMEOUT")
                if c["name"] == "consumer" and env.get("DISCOVERY_MODE") not in ("api", "dns", "static"):
                    err(f"{cw}: DISCOVERY_MODE must be set by the overlay (api, dns or static)")
        if kind == "Service":
            for p in d["spec"].get("ports", []):
                if not p.get("name"):
                    err(f"{where}: port {p.get('port')} has no name (SRV records and EndpointSlices need it)")
        if kind in ("Role", "ClusterRole"):
            allowed = ALLOWED_ROLE_RULES if kind == "Role" else ALLOWED_CLUSTER_RULES
            for rule in d.get("rules", []):
                for group in rule.get("apiGroups", []):
                    for resource in rule.get("resources", []):
                        extra = set(rule.get("verbs", [])) - allowed.get((group, resource), set())
                        if extra:
                            err(f"{where}: {sorted(extra)} on {resource!r} (group {group!r}) is more than discovery needs")
    tls_policy(docs, err)
    for e in errors:
        print(f"policy: {e}", file=sys.stderr)
    if not errors:
        print(f"    policy checks: {len(docs)} objects passed", file=sys.stderr)
    return 1 if errors else 0


TLS_DIR = "/etc/dubbo-k8s/tls"
MONITORING = {"matchLabels": {"dubbo-k8s.io/monitoring": "true"}}


def tls_policy(docs, err):
    """TLS overlays: every TLS file a container names is mounted from a Secret; the admin ports are
    closed to other namespaces (except the labelled monitoring namespace) by a NetworkPolicy that
    selects every Deployment's pods; no policy rule opens every port."""
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    uses_tls = False
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        for c in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for e in c.get("env", []):
                if e["name"].startswith(("PROVIDER_TLS_", "DISCOVERY_TLS_")) and str(e.get("value", "")).startswith("/"):
                    uses_tls = True
                    if not str(e["value"]).startswith(TLS_DIR + "/") or mounts.get(TLS_DIR) not in secret_volumes:
                        err(f"Deployment/{d['metadata']['name']} container {c['name']}: {e['name']}={e['value']} is not a file of a Secret mounted at {TLS_DIR}")
    if uses_tls and not policies:
        err("TLS overlay without NetworkPolicy: the admin ports must be closed to other namespaces (components/network-policy)")
    for p in policies:
        where = f"NetworkPolicy/{p['metadata']['name']}"
        spec = p["spec"]
        if "Ingress" not in spec.get("policyTypes", []):
            err(f"{where}: policyTypes must include Ingress")
        for rule in spec.get("ingress", []):
            ports = [x.get("port") for x in rule.get("ports", [])]
            if not ports:
                err(f"{where}: a rule without ports opens every port, the admin ports included")
            if "admin" in ports:
                peers = rule.get("from") or []
                if not peers:
                    err(f"{where}: the admin port is open to every source")
                for peer in peers:
                    if "ipBlock" in peer:
                        err(f"{where}: the admin port is open to an ipBlock")
                    if "namespaceSelector" in peer and peer["namespaceSelector"] != MONITORING:
                        err(f"{where}: the admin port is open to namespaces other than dubbo-k8s.io/monitoring=true")
    for d in deployments if policies else []:
        labels = d["spec"]["template"]["metadata"].get("labels", {})
        selected = any(
            all(labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items()) for p in policies
        )
        if not selected:
            err(f"Deployment/{d['metadata']['name']}: no NetworkPolicy selects its pods: its admin port is open")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
