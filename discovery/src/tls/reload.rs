//! A TLS configuration rebuilt from its files when their bytes change; the last good one kept when
//! a change cannot be used.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use serde::Serialize;
use tracing::{info, warn};

use super::files::{CertInfo, Contents, Material, TlsError, TlsFiles, rfc3339, unix_now};
use super::metrics::TlsMetrics;

/// What is loaded now.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LoadedInfo {
    /// This side's certificate, if it has one.
    pub cert: Option<CertInfo>,
    /// The CAs trusted for the peer.
    pub cas: Vec<CertInfo>,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// When it was loaded, milliseconds since the epoch.
    pub loaded_at_unix_ms: u64,
    /// 1 for the material read at start, one more for every reload that took.
    pub generation: u64,
}

/// The TLS state of one side, for `/debug/tls` and tests.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct TlsStatus {
    /// The side (`provider`, `client`).
    pub role: String,
    /// The files, as `VARIABLE=path`.
    pub files: Vec<String>,
    /// In use now.
    pub current: LoadedInfo,
    /// Changes of the files that could not be used (the last good material was kept).
    pub failed_reloads: u64,
    /// Why the latest change could not be used, while the files still hold it.
    pub last_error: Option<String>,
}

struct Current<T> {
    value: Arc<T>,
    info: LoadedInfo,
}

#[derive(Default)]
struct Progress {
    /// Hash of the bytes last looked at (loaded or refused).
    seen: u64,
    failed_reloads: u64,
    last_error: Option<String>,
    /// The last read failed (a file missing for a moment during a swap, or for good).
    read_failed: bool,
    expiry_warned: bool,
}

type Build<T> = Box<dyn Fn(&Material) -> Result<T, TlsError> + Send + Sync>;

/// A configuration of type `T` built from files and rebuilt when they change.
pub(crate) struct Reloadable<T> {
    files: TlsFiles,
    role: &'static str,
    build: Build<T>,
    current: ArcSwap<Current<T>>,
    progress: Mutex<Progress>,
    metrics: TlsMetrics,
}

fn hash(c: &Contents) -> u64 {
    let mut h = DefaultHasher::new();
    c.hash(&mut h);
    h.finish()
}

fn loaded_info(m: &Material, generation: u64) -> LoadedInfo {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    LoadedInfo {
        cert: m.cert.clone(),
        cas: m.cas.clone(),
        loaded_at: rfc3339(now.as_secs() as i64),
        loaded_at_unix_ms: now.as_millis() as u64,
        generation,
    }
}

impl<T: Send + Sync + 'static> Reloadable<T> {
    /// Loads the files now (an error is returned, nothing is kept), then follows them from a task.
    pub(crate) fn start(
        files: TlsFiles,
        role: &'static str,
        metrics: TlsMetrics,
        build: impl Fn(&Material) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, TlsError> {
        let contents = Contents::read(&files)?;
        let material = Material::load(&files, &contents, unix_now())?;
        let value = build(&material)?;
        let info = loaded_info(&material, 1);
        record_loaded(&metrics, role, &info);
        let this = Arc::new(Reloadable {
            build: Box::new(build),
            current: ArcSwap::new(Arc::new(Current { value: Arc::new(value), info })),
            progress: Mutex::new(Progress { seen: hash(&contents), ..Progress::default() }),
            files,
            role,
            metrics,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(follow(Arc::downgrade(&this), this.files.reload_interval));
        } else {
            warn!(role, "TLS files loaded outside a Tokio runtime: they will not be reloaded");
        }
        Ok(this)
    }

    /// The configuration in use.
    pub(crate) fn current(&self) -> Arc<T> {
        self.current.load().value.clone()
    }

    pub(crate) fn status(&self) -> TlsStatus {
        let p = crate::sync::lock(&self.progress);
        let files = [&self.files.cert, &self.files.key, &self.files.ca];
        TlsStatus {
            role: self.role.to_owned(),
            files: files.into_iter().flatten().map(ToString::to_string).collect(),
            current: self.current.load().info.clone(),
            failed_reloads: p.failed_reloads,
            last_error: p.last_error.clone(),
        }
    }

    /// Reads the files; loads them when their bytes changed. Returns whether new material is in use.
    pub(crate) fn poll(&self) -> bool {
        let contents = Contents::read(&self.files);
        let mut p = crate::sync::lock(&self.progress);
        let contents = match contents {
            Ok(c) => c,
            Err(e) => {
                // A Secret being swapped can be missing for an instant; a file gone for good is said once.
                let text = e.to_string();
                if p.last_error.as_deref() != Some(text.as_str()) {
                    warn!(role = self.role, error = %text, "TLS files cannot be read; keeping the material loaded before");
                    p.last_error = Some(text);
                    p.failed_reloads += 1;
                    self.metrics.reload(self.role, "failed");
                }
                p.read_failed = true;
                return false;
            }
        };
        let h = hash(&contents);
        if std::mem::take(&mut p.read_failed) && h == p.seen {
            // Readable again, unchanged: the material in use is what the files hold.
            p.last_error = None;
        }
        if h == p.seen {
            self.warn_if_expired(&mut p);
            return false;
        }
        p.seen = h;
        let built =
            Material::load(&self.files, &contents, unix_now()).and_then(|m| (self.build)(&m).map(|value| (m, value)));
        match built {
            Ok((material, value)) => {
                let generation = self.current.load().info.generation + 1;
                let info = loaded_info(&material, generation);
                record_loaded(&self.metrics, self.role, &info);
                self.metrics.reload(self.role, "ok");
                info!(
                    role = self.role,
                    generation,
                    serial = info.cert.as_ref().map_or("-", |c| c.serial.as_str()),
                    not_after = info.cert.as_ref().map_or_else(|| "-".to_owned(), |c| rfc3339(c.not_after)),
                    cas = %info.cas.iter().map(|c| c.serial.as_str()).collect::<Vec<_>>().join(","),
                    "TLS files changed: new certificates in use for new connections"
                );
                self.current.store(Arc::new(Current { value: Arc::new(value), info }));
                p.last_error = None;
                p.expiry_warned = false;
                true
            }
            Err(e) => {
                let current = self.current.load();
                warn!(
                    role = self.role,
                    error = %e,
                    kept_serial = current.info.cert.as_ref().map_or("-", |c| c.serial.as_str()),
                    kept_since = %current.info.loaded_at,
                    "TLS files changed but cannot be used; keeping the last good certificates"
                );
                p.failed_reloads += 1;
                p.last_error = Some(e.to_string());
                self.metrics.reload(self.role, "failed");
                false
            }
        }
    }

    fn warn_if_expired(&self, p: &mut Progress) {
        if p.expiry_warned {
            return;
        }
        let current = self.current.load();
        if let Some(cert) = &current.info.cert
            && unix_now() > cert.not_after
        {
            p.expiry_warned = true;
            warn!(
                role = self.role,
                serial = %cert.serial,
                not_after = %rfc3339(cert.not_after),
                "the certificate in use has expired and no newer one was written: peers will refuse handshakes"
            );
        }
    }
}

fn record_loaded(metrics: &TlsMetrics, role: &str, info: &LoadedInfo) {
    let ca_expiry = info.cas.iter().map(|c| c.not_after).min();
    metrics.loaded(role, (info.loaded_at_unix_ms / 1000) as i64, info.cert.as_ref().map(|c| c.not_after), ca_expiry);
}

async fn follow<T: Send + Sync + 'static>(this: Weak<Reloadable<T>>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(r) = this.upgrade() else { return };
        // Reading a few small files: blocking is brief, but keep it off the async workers anyway.
        let _ = tokio::task::spawn_blocking(move || r.poll()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::files::FileRef;
    use testkit::certs::{Leaf, SecretDir, TestCa};

    #[test]
    fn a_file_gone_for_a_moment_and_back_unchanged_is_no_reload() {
        let ca = TestCa::new("unit CA").expect("ca");
        let pair = ca.issue(&Leaf::server(&["a.example"])).expect("leaf");
        let dir =
            SecretDir::new(std::env::temp_dir().join(format!("dubbo-k8s-reload-{}", std::process::id()))).expect("dir");
        dir.write(&[("tls.crt", &pair.cert_pem), ("tls.key", &pair.key_pem)]).expect("write");
        let files = TlsFiles::new()
            .with_pair(FileRef::new("CERT", dir.file("tls.crt")), FileRef::new("KEY", dir.file("tls.key")));
        let r = Reloadable::start(files, "test", TlsMetrics::default(), |m| Ok(m.cert.clone())).expect("loads");
        assert!(!r.poll(), "unchanged files are not loaded again");

        let moved = dir.path().join("moved");
        std::fs::rename(dir.file("tls.key"), &moved).expect("hide the key");
        assert!(!r.poll());
        let status = r.status();
        assert!(status.last_error.as_deref().is_some_and(|e| e.contains("KEY=")), "{status:?}");
        assert_eq!(status.failed_reloads, 1);

        std::fs::rename(&moved, dir.file("tls.key")).expect("restore the key");
        assert!(!r.poll(), "the same bytes again: no reload");
        let status = r.status();
        assert_eq!((status.last_error, status.current.generation), (None, 1));

        let next = ca.issue(&Leaf::server(&["a.example"])).expect("leaf");
        dir.write(&[("tls.crt", &next.cert_pem), ("tls.key", &next.key_pem)]).expect("write");
        assert!(r.poll(), "new bytes: loaded");
        let status = r.status();
        assert_eq!(status.current.generation, 2);
        assert_eq!(r.current().as_ref().as_ref().map(|c| c.serial.clone()), status.current.cert.map(|c| c.serial));
    }
}
