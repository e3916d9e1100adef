//! The provider's side: a TLS acceptor whose certificate (and client CA) follow their files, the
//! caller's identity from its certificate, and an allow-list of identities.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::client::{HandshakeError, TlsCause};
use super::files::{CertInfo, TlsError, TlsFiles};
use super::metrics::TlsMetrics;
use super::reload::{Reloadable, TlsStatus};

/// What a provider's TLS needs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTlsOptions {
    /// Certificate and key (required); a CA bundle makes it mutual TLS: callers must present a
    /// certificate signed by one of those CAs.
    pub files: TlsFiles,
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
}

impl ServerTlsOptions {
    /// Serving `files` (certificate and key required).
    pub fn new(files: TlsFiles) -> Self {
        ServerTlsOptions { files, handshake_timeout: Duration::from_secs(10) }
    }
}

/// A provider's TLS: accepts connections with the certificate in use now. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloadable<ServerConfig>>,
    metrics: TlsMetrics,
    mutual: bool,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("mutual", &self.mutual).finish()
    }
}

impl ServerTls {
    /// Loads and checks the files (an error names the file and what is wrong), then follows them.
    /// Must be called within a Tokio runtime for the files to be reloaded.
    pub fn start(opts: ServerTlsOptions, metrics: TlsMetrics) -> Result<Self, TlsError> {
        opts.files.check("server")?;
        if opts.files.cert.is_none() {
            return Err(TlsError::Missing {
                what: "a certificate and key".into(),
                why: "a TLS server presents its certificate".into(),
            });
        }
        let mutual = opts.files.ca.is_some();
        let config = Reloadable::start(opts.files, "server", metrics.clone(), |m| {
            let provider = super::provider();
            let builder = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| unusable_config(e.to_string()))?;
            let builder = match &m.roots {
                // Callers without a certificate complete the handshake and are refused per call with
                // UNAUTHENTICATED, which says what is missing; a certificate that is presented must
                // verify.
                Some(roots) => builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| unusable_config(e.to_string()))?,
                ),
                None => builder.with_no_client_auth(),
            };
            let certified = m.certified.clone().ok_or_else(|| unusable_config("no certificate".into()))?;
            let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
            config.alpn_protocols = vec![super::ALPN_H2.to_vec()];
            Ok(config)
        })?;
        Ok(ServerTls { config, metrics, mutual, handshake_timeout: opts.handshake_timeout })
    }

    /// Whether callers must present a certificate (a client CA is configured).
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    /// What is loaded, and how reloads went.
    pub fn status(&self) -> TlsStatus {
        self.config.status()
    }

    /// Reads the files now instead of at the next interval; returns whether new material is in use.
    pub fn reload_now(&self) -> bool {
        self.config.poll()
    }

    /// The TLS handshake on an accepted connection, with the configuration in use now. A failure is
    /// classified and counted (`tls_handshake_failures{role="server"}`).
    pub async fn accept<IO>(&self, io: IO) -> Result<TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        let result = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(io)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => HandshakeError::from_io(&e, "the client"),
            Err(_) => HandshakeError::new(
                TlsCause::Timeout,
                format!("the client did not finish the handshake within {:?}", self.handshake_timeout),
            ),
        };
        self.metrics.handshake_failed("server", result.cause().as_str());
        Err(result)
    }

    /// Counts a handshake failure seen outside [`ServerTls::accept`] (a plaintext client).
    pub fn count_failure(&self, cause: TlsCause) {
        self.metrics.handshake_failed("server", cause.as_str());
    }
}

fn unusable_config(reason: String) -> TlsError {
    TlsError::Missing { what: "a usable TLS configuration".into(), why: reason }
}

/// The caller of a connection, as its certificate says.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The caller's certificate (`None`: it presented none, or the connection is plaintext).
    pub cert: Option<CertInfo>,
}

impl PeerIdentity {
    /// The identity of the TLS connection `stream`.
    pub fn of<IO>(stream: &TlsStream<IO>) -> PeerIdentity {
        let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| CertInfo::parse(c).ok());
        PeerIdentity { cert }
    }
}

/// Which callers may call: their certificate must carry one of these names (DNS or URI SANs,
/// SPIFFE IDs among them). An entry ending in `*` matches every name that starts with the rest
/// (`spiffe://cluster.local/ns/demo/*`). An empty list accepts any certificate the CA signed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authorizer {
    allow: Vec<String>,
}

/// Why a caller is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No certificate was presented on a mutual-TLS port (gRPC UNAUTHENTICATED).
    #[error(
        "no client certificate: this provider requires mutual TLS (a client certificate signed by its client CA); \
         configure the caller's certificate and key"
    )]
    NoCertificate,
    /// The certificate's names are not allowed (gRPC PERMISSION_DENIED).
    #[error("the client certificate's names [{}] are not allowed here (allowed: {})", presented.join(", "), allowed.join(", "))]
    NotAllowed {
        /// What the certificate carries.
        presented: Vec<String>,
        /// The allow-list.
        allowed: Vec<String>,
    },
}

impl Authorizer {
    /// From a list of names; an entry that is empty or has `*` other than at its end is an error
    /// naming it.
    pub fn new<S: AsRef<str>>(allow: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let mut list = Vec::new();
        for entry in allow {
            let e = entry.as_ref().trim();
            if e.is_empty() {
                continue;
            }
            if e.trim_end_matches('*').contains('*') {
                return Err(format!("{e:?}: '*' may only end an entry (a prefix match)"));
            }
            list.push(e.to_owned());
        }
        Ok(Authorizer { allow: list })
    }

    /// Whether anything is restricted.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty()
    }

    /// Checks a caller; `Ok` carries the name that matched (or `None` with an empty list).
    pub fn check(&self, peer: &PeerIdentity) -> Result<Option<String>, Refusal> {
        let cert = peer.cert.as_ref().ok_or(Refusal::NoCertificate)?;
        if self.allow.is_empty() {
            return Ok(None);
        }
        for name in cert.names() {
            let hit = self.allow.iter().any(|a| match a.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => a == name,
            });
            if hit {
                return Ok(Some(name.to_owned()));
            }
        }
        Err(Refusal::NotAllowed {
            presented: cert.names().into_iter().map(str::to_owned).collect(),
            allowed: self.allow.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(dns: &[&str], uris: &[&str]) -> PeerIdentity {
        PeerIdentity {
            cert: Some(CertInfo {
                serial: "01".into(),
                subject: String::new(),
                issuer: String::new(),
                dns: dns.iter().map(|s| (*s).to_owned()).collect(),
                uris: uris.iter().map(|s| (*s).to_owned()).collect(),
                not_before: 0,
                not_after: 0,
            }),
        }
    }

    #[test]
    fn allow_list_matches_names_and_prefixes() {
        let a = Authorizer::new(["spiffe://cluster.local/ns/demo/sa/consumer", "ops.example.com", "spiffe://x/ns/a/*"])
            .expect("valid");
        let ok = peer(&[], &["spiffe://cluster.local/ns/demo/sa/consumer"]);
        assert_eq!(a.check(&ok).expect("allowed").as_deref(), Some("spiffe://cluster.local/ns/demo/sa/consumer"));
        assert!(a.check(&peer(&["ops.example.com"], &[])).is_ok());
        assert!(a.check(&peer(&[], &["spiffe://x/ns/a/sa/b"])).is_ok());
        let refused = a.check(&peer(&["other.example.com"], &[])).expect_err("not in the list");
        assert!(refused.to_string().contains("other.example.com"), "{refused}");
        assert_eq!(a.check(&PeerIdentity::default()), Err(Refusal::NoCertificate));
        assert!(Authorizer::new(["spiffe://*/ns"]).is_err());
        assert!(Authorizer::default().check(&peer(&["any"], &[])).is_ok());
    }
}
