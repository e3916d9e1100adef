//! TLS and mutual TLS for Triple (feature `tls`): certificates read from files and reloaded when they
//! change, a server side ([`ServerTls`]) for providers and a client side ([`ClientTls`]) for the
//! balanced client.
//!
//! **Files.** A certificate chain, its private key and a CA bundle in PEM, under the names a
//! Kubernetes TLS Secret and cert-manager use (`tls.crt`, `tls.key`, `ca.crt`). Each is checked when
//! it is loaded: readable, parseable, the key matching the certificate, the certificate valid now.
//! An error names the variable (or option) that gave the path and the file ([`TlsError`]).
//!
//! **Reloading.** The files are read again every [`TlsFiles::reload_interval`] and, when their bytes
//! changed, loaded again. A mounted Secret changes by an atomic symlink swap, so polling the bytes
//! sees every change whatever the filesystem (inotify misses swaps of a parent symlink). A new
//! certificate serves new handshakes; open connections keep theirs, so nothing in flight fails. A
//! change that cannot be used (garbage, a key that does not match, an expired certificate) keeps the
//! last good material and is reported once, with a warning and a counter.
//!
//! **Names, not addresses.** The balanced client connects to pod IPs, so it verifies a provider's
//! certificate against a name: by default the DNS name of the Kubernetes Service the mapping chose
//! (`<service>.<namespace>.svc.<cluster-domain>`), or a configured DNS name or URI SAN (SPIFFE IDs
//! such as `spiffe://cluster.local/ns/demo/sa/greeter`), see [`ServerIdentity`].

mod client;
mod files;
mod metrics;
mod reload;
mod server;

pub use client::{ClientTls, ClientTlsOptions, HandshakeError, ServerIdentity, TlsCause};
pub use files::{
    CertInfo, DEFAULT_RELOAD_INTERVAL, FileRef, RELOAD_INTERVAL_RANGE, TlsError, TlsFiles, reload_interval_ok,
};
pub use metrics::TlsMetrics;
pub use reload::{LoadedInfo, TlsStatus};
pub use server::{Authorizer, PeerIdentity, Refusal, ServerTls, ServerTlsOptions};

/// The cryptography every TLS configuration here uses: rustls with ring.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN: Triple is gRPC over HTTP/2; gRPC clients (grpc-core among them) require `h2` to be chosen.
pub(crate) const ALPN_H2: &[u8] = b"h2";
