//! RBAC self-checks for API mode: SelfSubjectAccessReviews for what each namespace actually watched
//! needs, and the Role (and RoleBinding) to apply when something is missing, instead of a bare 403
//! later.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

/// One permission the discovery crate uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Permission {
    /// API group (`discovery.k8s.io`, or `""` for core).
    pub group: &'static str,
    /// Resource (`endpointslices`).
    pub resource: &'static str,
    /// Verb (`list`, `watch`).
    pub verb: &'static str,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{} {}", self.verb, self.resource)
        } else {
            write!(f, "{} {}.{}", self.verb, self.resource, self.group)
        }
    }
}

/// What the EndpointSlice watch needs, in each namespace it watches.
pub(crate) const FOR_SLICES: [Permission; 2] = [
    Permission { group: "discovery.k8s.io", resource: "endpointslices", verb: "list" },
    Permission { group: "discovery.k8s.io", resource: "endpointslices", verb: "watch" },
];

/// What annotation mapping needs (optional: without it the naming rule applies).
pub(crate) const FOR_SERVICES: [Permission; 2] = [
    Permission { group: "", resource: "services", verb: "list" },
    Permission { group: "", resource: "services", verb: "watch" },
];

/// Asks the API server whether this identity may do `p` in `namespace` (cluster-wide for `None`),
/// within `timeout`.
pub(crate) async fn allowed(
    client: &Client,
    namespace: Option<&str>,
    p: &Permission,
    timeout: Duration,
) -> Result<bool, String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: namespace.map(str::to_owned),
                group: Some(p.group.to_owned()),
                resource: Some(p.resource.to_owned()),
                verb: Some(p.verb.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    match tokio::time::timeout(timeout, api.create(&PostParams::default(), &review)).await {
        Ok(Ok(answer)) => Ok(answer.status.is_some_and(|s| s.allowed)),
        Ok(Err(e)) => Err(format!("failed to check {p} with a SelfSubjectAccessReview: {e}")),
        Err(_) => Err(format!("failed to check {p}: no answer within {timeout:?}")),
    }
}

/// The permissions of `wanted` that are denied in `namespace` (`Err` when the server cannot say).
pub(crate) async fn missing(
    client: &Client,
    namespace: &str,
    wanted: &[Permission],
    timeout: Duration,
) -> Result<Vec<Permission>, String> {
    let mut out = Vec::new();
    for p in wanted {
        if !allowed(client, Some(namespace), p, timeout).await? {
            out.push(*p);
        }
    }
    Ok(out)
}

/// The Role (and RoleBinding) that grants what API mode needs in `namespace`, ready for
/// `kubectl apply -f -`.
pub(crate) fn role_yaml(namespace: &str, with_services: bool) -> String {
    let services = if with_services {
        "\n  - apiGroups: [\"\"]\n    resources: [\"services\"]\n    verbs: [\"list\", \"watch\"]"
    } else {
        ""
    };
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: dubbo-discovery\n  namespace: {namespace}\nrules:\n  \
         - apiGroups: [\"discovery.k8s.io\"]\n    resources: [\"endpointslices\"]\n    verbs: [\"list\", \"watch\"]{services}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: dubbo-discovery\n  namespace: {namespace}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: dubbo-discovery\nsubjects:\n  \
         - kind: ServiceAccount\n    name: <your-service-account>\n    namespace: <its-namespace>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Role shipped in k8s/ grants exactly what the code asks for: nothing missing, nothing more.
    #[test]
    fn the_shipped_role_is_exactly_what_the_code_needs() {
        let yaml = include_str!("../../k8s/overlays/api/rbac.yaml");
        let role = yaml.split("\n---").next().unwrap_or_default();
        let mut shipped = Vec::new();
        let (mut group, mut resource) = (String::new(), String::new());
        let list = |line: &str| -> Vec<String> {
            line.split_once('[')
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(inside, _)| inside.split(',').map(|v| v.trim().trim_matches('"').to_owned()).collect())
                .unwrap_or_default()
        };
        for line in role.lines().map(str::trim) {
            if let Some(l) = line.strip_prefix("- apiGroups:") {
                group = list(l).concat();
            } else if let Some(l) = line.strip_prefix("resources:") {
                resource = list(l).concat();
            } else if let Some(l) = line.strip_prefix("verbs:") {
                shipped.extend(list(l).into_iter().map(|v| (group.clone(), resource.clone(), v)));
            }
        }
        shipped.sort();
        let mut needed: Vec<(String, String, String)> = FOR_SLICES
            .iter()
            .chain(&FOR_SERVICES)
            .map(|p| (p.group.to_owned(), p.resource.to_owned(), p.verb.to_owned()))
            .collect();
        needed.sort();
        assert_eq!(shipped, needed);
        assert!(role_yaml("demo", true).contains("verbs: [\"list\", \"watch\"]"));
    }

    #[test]
    fn role_yaml_names_the_resources() {
        let y = role_yaml("demo", true);
        assert!(y.contains("namespace: demo"));
        assert!(y.contains("endpointslices") && y.contains("services"));
        assert!(!role_yaml("demo", false).contains("services"));
        assert_eq!(FOR_SLICES[1].to_string(), "watch endpointslices.discovery.k8s.io");
        assert_eq!(FOR_SERVICES[0].to_string(), "list services");
    }
}
