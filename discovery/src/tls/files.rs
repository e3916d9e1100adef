//! Reading and checking the PEM files: a certificate chain and its key, a CA bundle. Every error names
//! the variable (or option) that gave the path, and the file.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

/// A file and what named it (a variable such as `PROVIDER_TLS_CERT`, or an option's name), for
/// errors and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// The path.
    pub path: PathBuf,
    /// The variable or option that gave it.
    pub named_by: String,
}

impl FileRef {
    /// `path`, given by `named_by`.
    pub fn new(named_by: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        FileRef { path: path.into(), named_by: named_by.into() }
    }
}

impl fmt::Display for FileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.named_by, self.path.display())
    }
}

/// The files of one side: its certificate and key (both or neither), the CA bundle it trusts, and
/// how often they are read again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// This side's certificate chain (leaf first), PEM (`tls.crt`).
    pub cert: Option<FileRef>,
    /// Its private key, PEM: PKCS#8, SEC1 or PKCS#1 (`tls.key`).
    pub key: Option<FileRef>,
    /// The CA certificates trusted to sign the peer's certificate, PEM (`ca.crt`); several during a
    /// CA rotation.
    pub ca: Option<FileRef>,
    /// How often the files are read again (at least 100 ms, at most an hour).
    pub reload_interval: Duration,
}

/// The default reload interval: a mounted Secret changes within about a minute of its update, so a
/// second adds nothing noticeable and costs three small reads.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

impl Default for TlsFiles {
    fn default() -> Self {
        TlsFiles { cert: None, key: None, ca: None, reload_interval: DEFAULT_RELOAD_INTERVAL }
    }
}

impl TlsFiles {
    /// No files yet; add them with the `with_*` methods.
    pub fn new() -> Self {
        TlsFiles::default()
    }

    /// The certificate chain and its key.
    pub fn with_pair(mut self, cert: FileRef, key: FileRef) -> Self {
        self.cert = Some(cert);
        self.key = Some(key);
        self
    }

    /// The CA bundle.
    pub fn with_ca(mut self, ca: FileRef) -> Self {
        self.ca = Some(ca);
        self
    }

    /// How often the files are read again.
    pub fn with_reload_interval(mut self, every: Duration) -> Self {
        self.reload_interval = every;
        self
    }

    /// Reads and checks the files once, as a start does (for configuration checks that should fail
    /// before anything runs).
    pub fn check_files(&self) -> Result<(), TlsError> {
        let contents = Contents::read(self)?;
        Material::load(self, &contents, unix_now()).map(drop)
    }

    pub(crate) fn check(&self, side: &str) -> Result<(), TlsError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err(TlsError::missing(format!("{side} key"), "a certificate needs its key")),
            (None, Some(_)) => {
                return Err(TlsError::missing(format!("{side} certificate"), "a key needs its certificate"));
            }
            _ => {}
        }
        if !reload_interval_ok(self.reload_interval) {
            return Err(TlsError::missing(
                format!("a reload interval {RELOAD_INTERVAL_RANGE}"),
                format!("{:?} was given", self.reload_interval),
            ));
        }
        Ok(())
    }
}

/// What a reload interval may be, for messages.
pub const RELOAD_INTERVAL_RANGE: &str = "of 100ms to 1h";

/// Whether `every` is a usable reload interval (100 ms to an hour).
pub fn reload_interval_ok(every: Duration) -> bool {
    (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&every)
}

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Something required was not given.
    #[error("TLS: {what} is required ({why})")]
    Missing {
        /// What is missing.
        what: String,
        /// Why it is required.
        why: String,
    },
    /// A file cannot be read.
    #[error("TLS: cannot read {file}: {source}")]
    Read {
        /// The file.
        file: FileRef,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds nothing usable of what it should.
    #[error("TLS: {file} holds no usable {expected}: {reason}")]
    Unusable {
        /// The file.
        file: FileRef,
        /// What it should hold.
        expected: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error(
        "TLS: the private key in {key} does not match the certificate in {cert}; write the pair from one Secret \
         (or one Certificate) together"
    )]
    KeyMismatch {
        /// The certificate.
        cert: FileRef,
        /// The key.
        key: FileRef,
    },
    /// The certificate has expired.
    #[error("TLS: the certificate in {file} (serial {serial}) expired at {not_after}; write a renewed one")]
    Expired {
        /// The file.
        file: FileRef,
        /// Its serial.
        serial: String,
        /// When it expired.
        not_after: String,
    },
    /// The certificate is not valid yet.
    #[error(
        "TLS: the certificate in {file} (serial {serial}) is not valid before {not_before}; check the clocks of its \
         issuer and of this machine"
    )]
    NotYetValid {
        /// The file.
        file: FileRef,
        /// Its serial.
        serial: String,
        /// When it becomes valid.
        not_before: String,
    },
}

impl TlsError {
    fn missing(what: String, why: impl Into<String>) -> Self {
        TlsError::Missing { what, why: why.into() }
    }

    fn unusable(file: &FileRef, expected: &'static str, reason: impl fmt::Display) -> Self {
        TlsError::Unusable { file: file.clone(), expected, reason: reason.to_string() }
    }

    /// The file at fault, when one is (for a key that does not match, the key).
    pub fn file(&self) -> Option<&FileRef> {
        match self {
            TlsError::Missing { .. } => None,
            TlsError::Read { file, .. }
            | TlsError::Unusable { file, .. }
            | TlsError::Expired { file, .. }
            | TlsError::NotYetValid { file, .. } => Some(file),
            TlsError::KeyMismatch { key, .. } => Some(key),
        }
    }

    /// A short label for metrics and tables: `missing`, `unreadable`, `unusable`, `key_mismatch`,
    /// `expired`, `not_yet_valid`.
    pub fn kind(&self) -> &'static str {
        match self {
            TlsError::Missing { .. } => "missing",
            TlsError::Read { .. } => "unreadable",
            TlsError::Unusable { .. } => "unusable",
            TlsError::KeyMismatch { .. } => "key_mismatch",
            TlsError::Expired { .. } => "expired",
            TlsError::NotYetValid { .. } => "not_yet_valid",
        }
    }
}

/// What a certificate says of itself, for logs, `/debug/tls` and the walkthrough's summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CertInfo {
    /// Serial number, hex.
    pub serial: String,
    /// Subject (RFC 4514).
    pub subject: String,
    /// Issuer (RFC 4514).
    pub issuer: String,
    /// DNS names (subject alternative names).
    pub dns: Vec<String>,
    /// URI names (SPIFFE IDs among them).
    pub uris: Vec<String>,
    /// Valid from (seconds since the epoch).
    pub not_before: i64,
    /// Valid until (seconds since the epoch).
    pub not_after: i64,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertInfo, String> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let (mut dns, mut uris) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    _ => {}
                }
            }
        }
        Ok(CertInfo {
            serial: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            dns,
            uris,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Every name it carries (DNS then URI).
    pub fn names(&self) -> Vec<&str> {
        self.dns.iter().chain(&self.uris).map(String::as_str).collect()
    }
}

/// A UTC time in RFC 3339 form, from seconds since the epoch.
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The bytes of every file, read together (what a reload compares).
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub(crate) struct Contents {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

impl Contents {
    pub(crate) fn read(files: &TlsFiles) -> Result<Contents, TlsError> {
        let read = |f: &Option<FileRef>| -> Result<Vec<u8>, TlsError> {
            match f {
                Some(file) => std::fs::read(&file.path).map_err(|source| TlsError::Read { file: file.clone(), source }),
                None => Ok(Vec::new()),
            }
        };
        Ok(Contents { cert: read(&files.cert)?, key: read(&files.key)?, ca: read(&files.ca)? })
    }
}

/// What the files hold, checked.
#[derive(Debug)]
pub(crate) struct Material {
    pub certified: Option<Arc<CertifiedKey>>,
    pub cert: Option<CertInfo>,
    pub roots: Option<Arc<RootCertStore>>,
    pub cas: Vec<CertInfo>,
}

impl Material {
    /// Parses and checks `contents` read from `files`, at `now` (seconds since the epoch).
    pub(crate) fn load(files: &TlsFiles, contents: &Contents, now: i64) -> Result<Material, TlsError> {
        let mut material = Material { certified: None, cert: None, roots: None, cas: Vec::new() };
        if let (Some(cert_file), Some(key_file)) = (&files.cert, &files.key) {
            let chain = certificates(cert_file, &contents.cert, "certificate")?;
            let info = CertInfo::parse(&chain[0]).map_err(|e| TlsError::unusable(cert_file, "certificate", e))?;
            if now > info.not_after {
                return Err(TlsError::Expired {
                    file: cert_file.clone(),
                    serial: info.serial,
                    not_after: rfc3339(info.not_after),
                });
            }
            if now < info.not_before {
                return Err(TlsError::NotYetValid {
                    file: cert_file.clone(),
                    serial: info.serial,
                    not_before: rfc3339(info.not_before),
                });
            }
            let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| {
                TlsError::unusable(key_file, "private key", format!("{e} (expected a PEM PRIVATE KEY block)"))
            })?;
            let signing = super::provider()
                .key_provider
                .load_private_key(key)
                .map_err(|e| TlsError::unusable(key_file, "private key", e))?;
            let certified = CertifiedKey::new(chain, signing);
            match certified.keys_match() {
                Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
                Err(_) => return Err(TlsError::KeyMismatch { cert: cert_file.clone(), key: key_file.clone() }),
            }
            material.certified = Some(Arc::new(certified));
            material.cert = Some(info);
        }
        if let Some(ca_file) = &files.ca {
            let mut roots = RootCertStore::empty();
            for der in certificates(ca_file, &contents.ca, "CA certificate")? {
                let info = CertInfo::parse(&der).map_err(|e| TlsError::unusable(ca_file, "CA certificate", e))?;
                roots.add(der).map_err(|e| TlsError::unusable(ca_file, "CA certificate", e))?;
                material.cas.push(info);
            }
            material.roots = Some(Arc::new(roots));
        }
        Ok(material)
    }
}

fn certificates(file: &FileRef, pem: &[u8], expected: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::unusable(file, expected, e))?;
    if chain.is_empty() {
        return Err(TlsError::unusable(file, expected, "no PEM CERTIFICATE block"));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_143_846), "2026-12-01T16:50:46Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
