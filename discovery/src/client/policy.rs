//! Per-method call policy, the way gRPC's service config (`methodConfig` with `retryPolicy` and
//! `timeout`) and Dubbo's per-method `retries` and `timeout` work: whether a method is idempotent
//! (so that a call that may have been processed can be replayed), how many retries it gets, its
//! deadline and its attempt timeout. Keyed by gRPC path: `/<package>.<Service>/<Method>` for one
//! method, `/<package>.<Service>/*` for every method of a service.

use std::collections::HashMap;
use std::time::Duration;

use super::options::OptionsError;

/// How calls of one method (or of every method of a service) are made.
///
/// The default is what a library must assume of a method it knows nothing about: **not
/// idempotent** (a call that may have reached the provider is never replayed), the client's retry
/// count (used only for what provably never reached the provider), no deadline of its own.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MethodPolicy {
    /// Running the method twice is harmless (a read, a put of the same value): a call that failed
    /// after its request was written (connection lost, UNAVAILABLE, attempt timeout) is replayed
    /// on another endpoint.
    pub idempotent: bool,
    /// Retries after the first attempt; `None`: [`super::ClientOptions::retries`].
    pub retries: Option<u32>,
    /// The whole call's deadline, retries included, sent to the provider as `grpc-timeout`, when the
    /// caller set none (`tonic::Request::set_timeout`). `None`: the client's
    /// [`super::ClientOptions::default_deadline`], which bounds only the wait for the response to
    /// start (so server streams are not cut) and is not sent.
    pub deadline: Option<Duration>,
    /// How long one attempt may wait for the response to start before the call moves on to another
    /// endpoint (idempotent methods only): a black-holed endpoint then costs this, not the deadline.
    pub attempt_timeout: Option<Duration>,
}

impl MethodPolicy {
    /// An idempotent method: replayed after a failure that may have reached the provider.
    pub fn idempotent() -> Self {
        MethodPolicy { idempotent: true, ..MethodPolicy::default() }
    }

    /// A method that must run at most once (the default).
    pub fn at_most_once() -> Self {
        MethodPolicy::default()
    }

    /// Sets the retries after the first attempt.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Sets the whole call's deadline (sent as `grpc-timeout`).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the attempt timeout (idempotent methods only).
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    pub(crate) fn validate(&self, path: &str) -> Result<(), OptionsError> {
        let field = |f: &str| format!("methods[{path:?}].{f}");
        if let Some(r) = self.retries
            && r > super::options::MAX_RETRIES
        {
            return Err(OptionsError::new(field("retries"), r, "expected 0 to 10"));
        }
        if let Some(d) = self.deadline {
            super::options::check_duration(&field("deadline"), d)?;
        }
        if let Some(t) = self.attempt_timeout {
            super::options::check_duration(&field("attempt_timeout"), t)?;
            if !self.idempotent {
                return Err(OptionsError::new(
                    field("attempt_timeout"),
                    format!("{t:?}"),
                    "needs an idempotent method: an attempt that timed out may have been processed and is never \
                     replayed otherwise",
                ));
            }
        }
        Ok(())
    }
}

/// The policies of the methods the application declared.
#[derive(Clone, Debug, Default)]
pub(crate) struct MethodPolicies {
    /// By full path `/<package>.<Service>/<Method>`.
    methods: HashMap<String, MethodPolicy>,
    /// By service `/<package>.<Service>/` (declared as `/<package>.<Service>/*`).
    services: HashMap<String, MethodPolicy>,
}

impl MethodPolicies {
    pub(crate) fn insert(&mut self, path: &str, policy: MethodPolicy) {
        match path.strip_suffix('*') {
            Some(service) => self.services.insert(service.to_owned(), policy),
            None => self.methods.insert(path.to_owned(), policy),
        };
    }

    /// The policy of the call to `path`: its method's, else its service's.
    pub(crate) fn get(&self, path: &str) -> Option<&MethodPolicy> {
        if self.methods.is_empty() && self.services.is_empty() {
            return None;
        }
        self.methods.get(path).or_else(|| {
            let service = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            self.services.get(service)
        })
    }

    pub(crate) fn validate(&self) -> Result<(), OptionsError> {
        for (path, policy) in &self.methods {
            check_path(path, false)?;
            policy.validate(path)?;
        }
        for (service, policy) in &self.services {
            let path = format!("{service}*");
            check_path(&path, true)?;
            policy.validate(&path)?;
        }
        Ok(())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (String, &MethodPolicy)> {
        self.methods.iter().map(|(p, m)| (p.clone(), m)).chain(self.services.iter().map(|(s, m)| (format!("{s}*"), m)))
    }
}

/// `/<package>.<Service>/<Method>` or `/<package>.<Service>/*`.
fn check_path(path: &str, wildcard: bool) -> Result<(), OptionsError> {
    let parts: Vec<&str> = path.strip_prefix('/').map(|p| p.split('/').collect()).unwrap_or_default();
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let ok = match parts.as_slice() {
        [service, method] => word(service) && (if wildcard { *method == "*" } else { word(method) }),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(OptionsError::new(
            "methods",
            path,
            "expected a gRPC path /<package>.<Service>/<Method>, or /<package>.<Service>/* for every method of a \
             service",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_beats_its_service_and_unknown_methods_have_none() {
        let mut p = MethodPolicies::default();
        assert!(p.get("/a.B/C").is_none());
        p.insert("/org.x.Greeter/*", MethodPolicy::idempotent());
        p.insert("/org.x.Greeter/Create", MethodPolicy::at_most_once().with_retries(0));
        assert!(p.get("/org.x.Greeter/Say").is_some_and(|m| m.idempotent));
        assert!(p.get("/org.x.Greeter/Create").is_some_and(|m| !m.idempotent && m.retries == Some(0)));
        assert!(p.get("/org.x.Other/Say").is_none());
        assert!(p.validate().is_ok());
    }

    #[test]
    fn bad_paths_and_values_are_named() {
        for path in ["SayHello", "/org.x.Greeter", "/org.x.Greeter/", "/a/b/c", "/org x/Say"] {
            let mut p = MethodPolicies::default();
            p.insert(path, MethodPolicy::idempotent());
            let e = p.validate().expect_err(path).to_string();
            assert!(e.contains("gRPC path"), "{e}");
        }
        let mut p = MethodPolicies::default();
        p.insert("/a.B/C", MethodPolicy::at_most_once().with_attempt_timeout(Duration::from_millis(100)));
        assert!(p.validate().expect_err("not idempotent").to_string().contains("idempotent"));
        let mut p = MethodPolicies::default();
        p.insert("/a.B/C", MethodPolicy::idempotent().with_retries(11));
        assert!(p.validate().expect_err("too many").to_string().contains("0 to 10"));
    }
}
