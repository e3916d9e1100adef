//! The calling side: the CA bundle (and this side's certificate for mutual TLS) following their
//! files, the name a provider's certificate is verified against, and why a handshake failed.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::SingleCertAndKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::files::{CertInfo, TlsError, TlsFiles};
use super::metrics::TlsMetrics;
use super::reload::{Reloadable, TlsStatus};

/// The name a provider's certificate must carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerIdentity {
    /// The DNS name of the Kubernetes Service the mapping chose:
    /// `<service>.<namespace>.svc.<cluster-domain>` (the default).
    #[default]
    ServiceDns,
    /// This DNS name, whatever the Service.
    Dns(String),
    /// This URI SAN (a SPIFFE ID such as `spiffe://cluster.local/ns/demo/sa/greeter`).
    Uri(String),
}

impl ServerIdentity {
    /// From configuration: a URI (it contains `://`) is a URI SAN, anything else a DNS name, checked.
    pub fn parse(text: &str) -> Result<ServerIdentity, String> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(ServerIdentity::ServiceDns);
        }
        if t.contains("://") {
            return Ok(ServerIdentity::Uri(t.to_owned()));
        }
        match ServerName::try_from(t) {
            Ok(ServerName::DnsName(_)) => Ok(ServerIdentity::Dns(t.to_owned())),
            _ => Err(format!("{t:?} is neither a DNS name nor a URI (such as spiffe://trust-domain/ns/x/sa/y)")),
        }
    }
}

/// What the balanced client's TLS needs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientTlsOptions {
    /// The CA bundle (required) and, for mutual TLS, this client's certificate and key.
    pub files: TlsFiles,
    /// The name the provider's certificate is verified against.
    pub server: ServerIdentity,
    /// The cluster domain of [`ServerIdentity::ServiceDns`] (`None`: the hub's
    /// `DISCOVERY_CLUSTER_DOMAIN`, else `cluster.local`).
    pub cluster_domain: Option<String>,
}

impl ClientTlsOptions {
    /// Trusting the CAs of `files` (and presenting its certificate, if it has one).
    pub fn new(files: TlsFiles) -> Self {
        ClientTlsOptions { files, server: ServerIdentity::ServiceDns, cluster_domain: None }
    }

    /// Verify providers against this name instead of the Service's DNS name.
    pub fn with_server(mut self, server: ServerIdentity) -> Self {
        self.server = server;
        self
    }
}

/// The balanced client's TLS: the configuration in use now for new connections. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloadable<ClientConfig>>,
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) metrics: TlsMetrics,
    server: ServerIdentity,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("server", &self.server).finish()
    }
}

impl ClientTls {
    /// Loads and checks the files (an error names the file and what is wrong), then follows them.
    pub fn start(opts: &ClientTlsOptions, metrics: TlsMetrics) -> Result<Self, TlsError> {
        opts.files.check("client")?;
        if opts.files.ca.is_none() {
            return Err(TlsError::Missing {
                what: "a CA bundle (DISCOVERY_TLS_CA)".into(),
                why: "providers' certificates are verified against it".into(),
            });
        }
        let server = opts.server.clone();
        let uri = match &server {
            ServerIdentity::Uri(u) => Some(u.clone()),
            _ => None,
        };
        let config = Reloadable::start(opts.files.clone(), "client", metrics.clone(), move |m| {
            let provider = super::provider();
            let roots = m.roots.clone().ok_or_else(|| TlsError::Missing {
                what: "a CA bundle".into(),
                why: "providers' certificates are verified against it".into(),
            })?;
            let builder =
                ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::Missing { what: "a usable TLS configuration".into(), why: e.to_string() })?;
            let builder = match &uri {
                Some(uri) => builder.dangerous().with_custom_certificate_verifier(Arc::new(UriVerifier {
                    roots,
                    provider,
                    uri: uri.clone(),
                })),
                None => builder.with_root_certificates(roots),
            };
            let mut config = match &m.certified {
                Some(ck) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(ck.clone()))),
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![super::ALPN_H2.to_vec()];
            Ok(config)
        })?;
        Ok(ClientTls { config, metrics, server })
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.current()
    }

    /// What is loaded, and how reloads went.
    pub fn status(&self) -> TlsStatus {
        self.config.status()
    }

    /// Reads the files now instead of at the next interval; returns whether new material is in use.
    pub fn reload_now(&self) -> bool {
        self.config.poll()
    }

    /// The name sent as SNI and, unless a URI SAN is configured, verified: the configured DNS name,
    /// else the Service's DNS name.
    pub fn server_name(&self, service: &str, namespace: &str, cluster_domain: &str) -> String {
        match &self.server {
            ServerIdentity::Dns(name) => name.clone(),
            _ => format!("{service}.{namespace}.svc.{cluster_domain}"),
        }
    }

    /// What a provider's certificate is verified against, for messages.
    pub fn expected(&self, server_name: &str) -> String {
        match &self.server {
            ServerIdentity::Uri(u) => format!("URI SAN {u}"),
            _ => format!("DNS name {server_name}"),
        }
    }
}

/// Verifies the chain as the stock verifier does, then looks for a URI SAN instead of a DNS name.
#[derive(Debug)]
struct UriVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    uri: String,
}

/// The certificate lacks the URI SAN asked for.
#[derive(Debug, thiserror::Error)]
#[error("certificate not valid for URI {expected} (it names: {presented})")]
struct UriMismatch {
    expected: String,
    presented: String,
}

impl ServerCertVerifier for UriVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let info = CertInfo::parse(end_entity.as_ref()).map_err(rustls::Error::General)?;
        if info.uris.contains(&self.uri) {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = UriMismatch { expected: self.uri.clone(), presented: info.names().join(", ") };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(mismatch)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a TLS handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsCause {
    /// The peer's certificate is not signed by a trusted CA.
    UnknownCa,
    /// The peer's certificate does not carry the name asked for.
    NameMismatch,
    /// The peer's certificate has expired or is not valid yet.
    Expired,
    /// The peer refused the handshake (it sent an alert: our certificate is unknown to it, say).
    Refused,
    /// The peer does not speak TLS (a plaintext port), or closed the connection during the handshake.
    NotTls,
    /// The handshake did not finish in time.
    Timeout,
    /// Any other handshake failure.
    Other,
}

impl TlsCause {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsCause::UnknownCa => "unknown_ca",
            TlsCause::NameMismatch => "name_mismatch",
            TlsCause::Expired => "expired",
            TlsCause::Refused => "refused",
            TlsCause::NotTls => "not_tls",
            TlsCause::Timeout => "timeout",
            TlsCause::Other => "other",
        }
    }

    /// From a rustls error.
    pub fn of(e: &rustls::Error) -> TlsCause {
        use CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => TlsCause::UnknownCa,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsCause::NameMismatch,
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                    TlsCause::Expired
                }
                C::Other(o) if o.0.downcast_ref::<UriMismatch>().is_some() => TlsCause::NameMismatch,
                _ => TlsCause::Other,
            },
            rustls::Error::AlertReceived(_) => TlsCause::Refused,
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => TlsCause::NotTls,
            _ => TlsCause::Other,
        }
    }
}

/// A failed TLS handshake: its cause and what happened, with the peer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("TLS handshake failed ({}): {detail}", cause.as_str())]
pub struct HandshakeError {
    cause: TlsCause,
    detail: String,
}

impl HandshakeError {
    pub(crate) fn new(cause: TlsCause, detail: String) -> Self {
        HandshakeError { cause, detail }
    }

    /// From the error of a tokio-rustls handshake with `peer` (a description such as
    /// `the provider at 10.0.0.1:50051`).
    pub fn from_io(e: &std::io::Error, peer: &str) -> Self {
        if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            let cause = TlsCause::of(tls);
            let hint = match cause {
                TlsCause::NotTls => " (it does not speak TLS: is its port plaintext?)",
                TlsCause::Refused => " (it refused us: does it trust our certificate, or want one?)",
                _ => "",
            };
            return HandshakeError { cause, detail: format!("{peer}: {tls}{hint}") };
        }
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        if matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe) {
            return HandshakeError {
                cause: TlsCause::NotTls,
                detail: format!(
                    "{peer} closed the connection during the handshake ({e}): a plaintext port, or it refused us"
                ),
            };
        }
        HandshakeError { cause: TlsCause::Other, detail: format!("{peer}: {e}") }
    }

    /// Why it failed.
    pub fn cause(&self) -> TlsCause {
        self.cause
    }

    /// What happened, naming the peer.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_identity_from_text() {
        assert_eq!(ServerIdentity::parse(""), Ok(ServerIdentity::ServiceDns));
        assert_eq!(ServerIdentity::parse("greeter.demo.svc"), Ok(ServerIdentity::Dns("greeter.demo.svc".into())));
        assert_eq!(
            ServerIdentity::parse("spiffe://cluster.local/ns/demo/sa/greeter"),
            Ok(ServerIdentity::Uri("spiffe://cluster.local/ns/demo/sa/greeter".into()))
        );
        assert!(ServerIdentity::parse("not a name").is_err());
    }

    #[test]
    fn causes_from_rustls_errors() {
        let cert = |c| rustls::Error::InvalidCertificate(c);
        assert_eq!(TlsCause::of(&cert(CertificateError::UnknownIssuer)), TlsCause::UnknownCa);
        assert_eq!(TlsCause::of(&cert(CertificateError::NotValidForName)), TlsCause::NameMismatch);
        assert_eq!(TlsCause::of(&cert(CertificateError::Expired)), TlsCause::Expired);
        assert_eq!(TlsCause::of(&rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)), TlsCause::Refused);
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(HandshakeError::from_io(&eof, "p").cause(), TlsCause::NotTls);
    }
}
