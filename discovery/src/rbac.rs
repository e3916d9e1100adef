//! Start-up RBAC check for API mode: SelfSubjectAccessReviews for what the watch needs, and the Role
//! to apply when something is missing (instead of a bare 403 later).

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

/// One permission the discovery crate uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
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

/// What the EndpointSlice watch needs.
pub const REQUIRED: [Permission; 2] = [
    Permission { group: "discovery.k8s.io", resource: "endpointslices", verb: "list" },
    Permission { group: "discovery.k8s.io", resource: "endpointslices", verb: "watch" },
];

/// What the annotation lookup needs (optional: without it the naming rule applies).
pub const FOR_ANNOTATIONS: Permission = Permission { group: "", resource: "services", verb: "list" };

/// Asks the API server whether this identity may do `p` in `namespace`.
pub async fn allowed(client: &Client, namespace: &str, p: &Permission) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
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
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The Role (and RoleBinding) that grants what API mode needs, ready for `kubectl apply -f -`.
pub fn role_yaml(namespace: &str, with_services: bool) -> String {
    let services = if with_services {
        "\n  - apiGroups: [\"\"]\n    resources: [\"services\"]\n    verbs: [\"get\", \"list\", \"watch\"]"
    } else {
        ""
    };
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: dubbo-discovery\n  namespace: {namespace}\nrules:\n  \
         - apiGroups: [\"discovery.k8s.io\"]\n    resources: [\"endpointslices\"]\n    verbs: [\"get\", \"list\", \"watch\"]{services}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: dubbo-discovery\n  namespace: {namespace}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: dubbo-discovery\nsubjects:\n  \
         - kind: ServiceAccount\n    name: <your-service-account>\n    namespace: {namespace}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_yaml_names_the_resources() {
        let y = role_yaml("demo", true);
        assert!(y.contains("namespace: demo"));
        assert!(y.contains("endpointslices") && y.contains("services"));
        assert!(!role_yaml("demo", false).contains("services"));
        assert_eq!(REQUIRED[1].to_string(), "watch endpointslices.discovery.k8s.io");
        assert_eq!(FOR_ANNOTATIONS.to_string(), "list services");
    }
}
