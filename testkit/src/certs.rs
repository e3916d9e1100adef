//! Certificates for TLS tests (feature `certs`): a CA, leaf certificates with DNS and URI names and
//! any validity window, and a directory laid out as kubelet mounts a Secret, whose files change by
//! the same atomic symlink swap.
//!
//! ```
//! # fn demo() -> Result<(), String> {
//! use dubbo_k8s_testkit::certs::{Leaf, SecretDir, TestCa};
//! let ca = TestCa::new("demo CA")?;
//! let server = ca.issue(&Leaf::server(&["greeter.demo.svc.cluster.local"]))?;
//! let dir = SecretDir::new(std::env::temp_dir().join("greeter-tls-doc"))?;
//! dir.write(&[("tls.crt", &server.cert_pem), ("tls.key", &server.key_pem), ("ca.crt", &ca.pem())])?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

fn err(e: rcgen::Error) -> String {
    format!("cannot make the test certificate: {e}")
}

/// A certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// What a leaf certificate carries.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// DNS names.
    pub dns: Vec<String>,
    /// URI names (SPIFFE IDs).
    pub uris: Vec<String>,
    /// Valid from, in seconds relative to now (negative: in the past).
    pub not_before: i64,
    /// Valid until, in seconds relative to now.
    pub not_after: i64,
    /// For servers (serverAuth), clients (clientAuth), or both.
    pub server: bool,
    /// See `server`.
    pub client: bool,
}

impl Leaf {
    /// A server certificate for `dns`, valid from an hour ago for a day.
    pub fn server(dns: &[&str]) -> Leaf {
        Leaf {
            dns: dns.iter().map(|s| (*s).to_owned()).collect(),
            uris: Vec::new(),
            not_before: -3600,
            not_after: 86_400,
            server: true,
            client: false,
        }
    }

    /// A client certificate for the URI `uri` (a SPIFFE ID), valid from an hour ago for a day.
    pub fn client(uri: &str) -> Leaf {
        Leaf { dns: Vec::new(), uris: vec![uri.to_owned()], server: false, client: true, ..Leaf::server(&[]) }
    }

    /// The same, valid between `not_before` and `not_after` seconds from now.
    pub fn valid(mut self, not_before: i64, not_after: i64) -> Leaf {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The certificate.
    pub cert_pem: String,
    /// Its key (PKCS#8).
    pub key_pem: String,
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

fn serial() -> SerialNumber {
    // Unique within the process, and across processes by the clock.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let n = (now.as_micros() as u64) << 8 | (SERIAL.fetch_add(1, Ordering::Relaxed) & 0xff);
    SerialNumber::from(n)
}

fn at(offset_secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs)
}

impl TestCa {
    /// A new self-signed CA named `name`, valid from a day ago for ten years.
    pub fn new(name: &str) -> Result<TestCa, String> {
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        p.serial_number = Some(serial());
        p.not_before = at(-86_400);
        p.not_after = at(3650 * 86_400);
        Ok(TestCa { issuer: CertifiedIssuer::self_signed(p, key).map_err(err)? })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate signed by this CA, with a fresh serial.
    pub fn issue(&self, leaf: &Leaf) -> Result<Pair, String> {
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(leaf.dns.clone()).map_err(err)?;
        for uri in &leaf.uris {
            p.subject_alt_names.push(SanType::URI(uri.as_str().try_into().map_err(err)?));
        }
        let cn = leaf.dns.first().or(leaf.uris.first()).cloned().unwrap_or_else(|| "test".to_owned());
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if leaf.server {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        p.serial_number = Some(serial());
        p.not_before = at(leaf.not_before);
        p.not_after = at(leaf.not_after);
        let cert = p.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Pair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A directory as kubelet mounts a Secret: `tls.crt` → `..data/tls.crt`, `..data` → a timestamped
/// directory. [`SecretDir::write`] swaps `..data` atomically, as kubelet's atomic writer does, so a
/// reader sees either the old files or the new ones, never a mix.
#[derive(Debug)]
pub struct SecretDir {
    path: PathBuf,
    generation: AtomicU64,
}

impl SecretDir {
    /// An empty directory at `path` (created; emptied if it exists).
    pub fn new(path: impl Into<PathBuf>) -> Result<SecretDir, String> {
        let path = path.into();
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(SecretDir { path, generation: AtomicU64::new(0) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of one file, as a pod reads it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Replaces every file with `files` (name, content) in one atomic swap.
    pub fn write(&self, files: &[(&str, &str)]) -> Result<(), String> {
        let io = |what: &str, p: &Path, e: std::io::Error| format!("cannot {what} {}: {e}", p.display());
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let stamp = format!("..{generation:04}_{}", std::process::id());
        let fresh = self.path.join(&stamp);
        std::fs::create_dir_all(&fresh).map_err(|e| io("create", &fresh, e))?;
        for (name, content) in files {
            let p = fresh.join(name);
            std::fs::write(&p, content).map_err(|e| io("write", &p, e))?;
        }
        let tmp = self.path.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| io("link", &tmp, e))?;
        let old = std::fs::read_link(self.path.join("..data")).ok();
        let data = self.path.join("..data");
        std::fs::rename(&tmp, &data).map_err(|e| io("swap", &data, e))?;
        for (name, _) in files {
            let link = self.path.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).map_err(|e| io("link", &link, e))?;
            }
        }
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.path.join(old));
        }
        Ok(())
    }
}
