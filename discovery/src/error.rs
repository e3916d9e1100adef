//! [`Error`]: why discovery could not start, or could not follow a service.

use crate::config::ConfigError;
use crate::mapping::MappingError;

/// A boxed error from a dependency, kept as the source of ours.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why discovery could not start, or could not follow a service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The identity cannot be mapped to a Service.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No DNS resolver could be built (DNS mode).
    #[error("failed to build the DNS resolver; set DISCOVERY_DNS_SERVER")]
    Resolver(#[source] BoxError),
    /// The ServiceAccount lacks what the EndpointSlice watch needs.
    #[error(
        "the kubernetes identity may not {} in namespace {namespace:?} (checked with a SelfSubjectAccessReview); \
         apply the Role of README \"Role for API mode\" (printed by Error::role) and bind it to the pod's \
         ServiceAccount",
        missing.join(", ")
    )]
    Forbidden {
        /// The namespace.
        namespace: String,
        /// What is missing (`list endpointslices.discovery.k8s.io`, ...).
        missing: Vec<String>,
        /// The Role and RoleBinding to apply.
        role: String,
    },
    /// Static mode: not one of `DISCOVERY_STATIC_ENDPOINTS` resolves to an address.
    #[error(
        "none of DISCOVERY_STATIC_ENDPOINTS resolves: {}; give IP addresses or names this process can resolve \
         (/etc/hosts or DNS)",
        failures.join(", ")
    )]
    StaticHosts {
        /// Each name and why it did not resolve.
        failures: Vec<String>,
    },
    /// A client option cannot be used.
    #[cfg(feature = "client")]
    #[error(transparent)]
    Options(#[from] crate::client::OptionsError),
    /// TLS files cannot be used.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Something that starts background tasks was called outside a Tokio runtime.
    #[error("no Tokio runtime: discovery starts background tasks; call it from within a Tokio runtime")]
    NoRuntime,
}

impl Error {
    /// For [`Error::Forbidden`]: the Role and RoleBinding (YAML) that grant what is missing.
    pub fn role(&self) -> Option<&str> {
        match self {
            Error::Forbidden { role, .. } => Some(role),
            _ => None,
        }
    }

    /// Whether configuration can fix it (programs exit with code 2 for these).
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::Mapping(_) | Error::Config(_) | Error::StaticHosts { .. } | Error::Forbidden { .. } => true,
            #[cfg(feature = "client")]
            Error::Options(_) => true,
            #[cfg(feature = "tls")]
            Error::Tls(_) => true,
            _ => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
