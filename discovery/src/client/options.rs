//! [`ClientOptions`]: call policy (deadline, retries, budget, per-method policies, connect timeout),
//! set by the application, and balancing (subset, slow start, outlier detection, zones), also read
//! from `DISCOVERY_*` variables so every service using the client is tuned the same way. Options
//! are checked when a client is built: a value that would panic, overflow or spin is an
//! [`OptionsError`] naming the field, never a surprise at call time.

use std::collections::HashMap;
use std::time::Duration;

use super::health::OutlierOptions;
use super::metrics::ClientMetrics;
use super::policy::{MethodPolicies, MethodPolicy};
use crate::config::ConfigError;
use crate::config::set;
use crate::config::vars::{self, Var};

/// Most retries a call may make after its first attempt.
pub(crate) const MAX_RETRIES: u32 = 10;
/// Longest duration any option accepts (a day): far below what `Instant` arithmetic can hold.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// An option that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client option {field} = {value}: {reason}")]
pub struct OptionsError {
    field: String,
    value: String,
    reason: String,
}

impl OptionsError {
    pub(crate) fn new(field: impl Into<String>, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        OptionsError { field: field.into(), value: value.to_string(), reason: reason.into() }
    }

    /// The option, e.g. `retries` or `methods["/a.B/C"].attempt_timeout`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The value given.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What is accepted.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A duration above zero and at most a day.
pub(crate) fn check_duration(field: &str, d: Duration) -> Result<(), OptionsError> {
    if d.is_zero() || d > MAX_DURATION {
        return Err(OptionsError::new(field, format!("{d:?}"), "expected above zero and at most 24h"));
    }
    Ok(())
}

/// How a [`super::Balanced`] client calls and balances. Build it from [`ClientOptions::default`]
/// or [`ClientOptions::from_env`] and change what you need (fields, or the `with_*` methods);
/// [`super::Balanced::new`] checks it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// For a call with no deadline of its own (no `grpc-timeout`, no [`MethodPolicy::deadline`]):
    /// how long to wait for the response to start, retries included. Not sent to the provider and
    /// not applied to the response body, so server streams run as long as they run.
    pub default_deadline: Duration,
    /// Retries after the first attempt (0 to 10), each to an endpoint not tried yet; per method in
    /// [`MethodPolicy::retries`].
    pub retries: u32,
    /// Retries allowed as a share of calls (0 to 1000) ...
    pub retry_budget: f64,
    /// ... plus this many per second (at most 100000).
    pub retry_min_per_sec: u32,
    /// Connect timeout of one endpoint.
    pub connect_timeout: Duration,
    /// Largest request kept for replay (unary and server-streaming requests are one message); at
    /// most 64 MiB.
    pub max_replay_bytes: usize,
    /// Endpoints each client connects to at most (`DISCOVERY_SUBSET_SIZE`; 0: all). Above it, a
    /// deterministic subset by rendezvous hashing of [`ClientOptions::client_id`].
    pub subset_size: usize,
    /// This client's identity for subsetting (`DISCOVERY_CLIENT_ID`, else the host name when read
    /// by [`ClientOptions::from_env`]). `None`: a random identity per client (subsets are still
    /// even across clients, but change when the process restarts).
    pub client_id: Option<String>,
    /// Ramp a new endpoint's share up over this window (`DISCOVERY_SLOW_START`; zero: off).
    pub slow_start: Duration,
    /// The share a new endpoint starts at, relative to the others, in (0, 1].
    pub slow_start_min_weight: f64,
    /// Outlier detection (`DISCOVERY_OUTLIER_*`).
    pub outlier: OutlierOptions,
    /// Prefer endpoints of this client's zone when the Service asks for it (`DISCOVERY_ZONE_AWARE`).
    pub zone_aware: bool,
    /// This client's zone; `None`: from the hub (`DISCOVERY_ZONE`, or the node's label, followed).
    pub zone: Option<String>,
    /// This client's node, for Services that prefer the same node (`trafficDistribution:
    /// PreferSameNode`); `None`: the hub's `DISCOVERY_NODE_NAME`.
    pub node: Option<String>,
    /// A local pick with at least this many calls in flight spills to another zone when a pick
    /// there is less loaded (`DISCOVERY_ZONE_SPILL_IN_FLIGHT`, at least 1).
    pub zone_spill_in_flight: usize,
    /// How long an endpoint that left the routable set keeps its connection, ejection history and
    /// slow-start state (`DISCOVERY_DEPARTED_GRACE`): a readiness flap shorter than this finds its
    /// connection warm and is not slow-started again. Zero: forgotten at once.
    pub departed_grace: Duration,
    /// Send a request id (`dubbo-k8s-request-id`, the same on every attempt of one call) so that
    /// providers can count calls executed more than once. A caller's own header is kept.
    pub request_ids: bool,
    /// TLS to the providers (feature `tls`; `None`: plaintext). Read from `DISCOVERY_TLS_CA`,
    /// `DISCOVERY_TLS_CERT`, `DISCOVERY_TLS_KEY`, `DISCOVERY_TLS_SERVER_NAME`,
    /// `DISCOVERY_TLS_RELOAD_INTERVAL` by [`ClientOptions::from_env`]; the files are loaded (and an
    /// unusable one refused) when the client is built.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ClientTlsOptions>,
    /// Per-method policies (see [`ClientOptions::method`]).
    methods: MethodPolicies,
    /// Where metrics go.
    pub metrics: ClientMetrics,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            default_deadline: Duration::from_secs(2),
            retries: 2,
            retry_budget: 0.2,
            retry_min_per_sec: 10,
            connect_timeout: Duration::from_secs(1),
            max_replay_bytes: 1 << 20,
            subset_size: 100,
            client_id: None,
            slow_start: Duration::from_secs(5),
            slow_start_min_weight: 0.1,
            outlier: OutlierOptions::default(),
            zone_aware: true,
            zone: None,
            node: None,
            zone_spill_in_flight: 32,
            departed_grace: Duration::from_secs(10),
            request_ids: true,
            #[cfg(feature = "tls")]
            tls: None,
            methods: MethodPolicies::default(),
            metrics: ClientMetrics::default(),
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Raw {
    subset_size: Option<Var<usize>>,
    client_id: Option<Var<String>>,
    slow_start: Option<Var<Duration>>,
    outlier_failures: Option<Var<u32>>,
    outlier_ejection: Option<Var<Duration>>,
    outlier_max_ejection: Option<Var<Duration>>,
    outlier_max_ejected_percent: Option<Var<u8>>,
    zone_aware: Option<Var<bool>>,
    zone_spill_in_flight: Option<Var<usize>>,
    departed_grace: Option<Var<Duration>>,
    #[cfg(feature = "tls")]
    tls_ca: Option<Var<std::path::PathBuf>>,
    #[cfg(feature = "tls")]
    tls_cert: Option<Var<std::path::PathBuf>>,
    #[cfg(feature = "tls")]
    tls_key: Option<Var<std::path::PathBuf>>,
    #[cfg(feature = "tls")]
    tls_server_name: Option<Var<String>>,
    #[cfg(feature = "tls")]
    tls_reload_interval: Option<Var<Duration>>,
}

/// TLS options from the `DISCOVERY_TLS_*` variables: none set is plaintext; a certificate or a
/// server name without a CA bundle is an error naming `DISCOVERY_TLS_CA`.
#[cfg(feature = "tls")]
fn tls_from_raw(
    ca: Option<Var<std::path::PathBuf>>,
    cert: Option<Var<std::path::PathBuf>>,
    key: Option<Var<std::path::PathBuf>>,
    server_name: Option<Var<String>>,
    reload: Option<Var<Duration>>,
) -> Result<Option<crate::tls::ClientTlsOptions>, ConfigError> {
    use crate::tls::{ClientTlsOptions, FileRef, ServerIdentity, TlsFiles};
    let Some(Var(ca)) = ca else {
        if cert.is_some() || key.is_some() || server_name.is_some() {
            return Err(ConfigError::invalid(
                "DISCOVERY_TLS_CA",
                "",
                "is required with DISCOVERY_TLS_CERT, DISCOVERY_TLS_KEY or DISCOVERY_TLS_SERVER_NAME: the CA bundle \
                 (ca.crt) that signs the providers' certificates",
            ));
        }
        return Ok(None);
    };
    let mut files = TlsFiles::new().with_ca(FileRef::new("DISCOVERY_TLS_CA", ca));
    match (cert, key) {
        (Some(Var(c)), Some(Var(k))) => {
            files = files.with_pair(FileRef::new("DISCOVERY_TLS_CERT", c), FileRef::new("DISCOVERY_TLS_KEY", k));
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(ConfigError::invalid("DISCOVERY_TLS_KEY", "", "is required with DISCOVERY_TLS_CERT (tls.key)"));
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid("DISCOVERY_TLS_CERT", "", "is required with DISCOVERY_TLS_KEY (tls.crt)"));
        }
    }
    if let Some(Var(every)) = reload {
        if !crate::tls::reload_interval_ok(every) {
            let reason = format!("expected a duration {}", crate::tls::RELOAD_INTERVAL_RANGE);
            return Err(ConfigError::invalid("DISCOVERY_TLS_RELOAD_INTERVAL", format!("{every:?}"), reason));
        }
        files = files.with_reload_interval(every);
    }
    let server = match server_name {
        Some(Var(name)) => ServerIdentity::parse(&name)
            .map_err(|reason| ConfigError::invalid("DISCOVERY_TLS_SERVER_NAME", &name, reason))?,
        None => ServerIdentity::ServiceDns,
    };
    // Unreadable or unusable files are refused now, naming the variable and the file.
    files.check_files().map_err(|e| match e.file() {
        Some(f) => ConfigError::invalid(&f.named_by, f.path.display().to_string(), e.to_string()),
        None => ConfigError::invalid("DISCOVERY_TLS_CA", "", e.to_string()),
    })?;
    Ok(Some(ClientTlsOptions::new(files).with_server(server)))
}

/// The `DISCOVERY_*` variable that sets each checked field, for messages about values read from
/// the environment.
const VARIABLES: &[(&str, &str)] = &[
    ("subset_size", "DISCOVERY_SUBSET_SIZE"),
    ("client_id", "DISCOVERY_CLIENT_ID"),
    ("slow_start / departed_grace", "DISCOVERY_SLOW_START / DISCOVERY_DEPARTED_GRACE"),
    ("outlier.consecutive_failures", "DISCOVERY_OUTLIER_FAILURES"),
    ("outlier.base_ejection", "DISCOVERY_OUTLIER_EJECTION"),
    ("outlier.max_ejection", "DISCOVERY_OUTLIER_MAX_EJECTION"),
    ("outlier.max_ejected_percent", "DISCOVERY_OUTLIER_MAX_EJECTED_PERCENT"),
    ("zone_spill_in_flight", "DISCOVERY_ZONE_SPILL_IN_FLIGHT"),
];

impl ClientOptions {
    /// The defaults, with the balancing variables of the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// The defaults, with the balancing variables among `vars`: `DISCOVERY_SUBSET_SIZE`,
    /// `DISCOVERY_CLIENT_ID` (else `HOSTNAME`, else `/etc/hostname`), `DISCOVERY_SLOW_START`,
    /// `DISCOVERY_OUTLIER_FAILURES`, `DISCOVERY_OUTLIER_EJECTION`, `DISCOVERY_OUTLIER_MAX_EJECTION`,
    /// `DISCOVERY_OUTLIER_MAX_EJECTED_PERCENT`, `DISCOVERY_ZONE_AWARE`,
    /// `DISCOVERY_ZONE_SPILL_IN_FLIGHT`, `DISCOVERY_DEPARTED_GRACE`; checked as
    /// [`ClientOptions::validate`] checks, with errors naming the variable.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let raw: Raw = vars::load(crate::config::ENV_PREFIX, vars)?;
        let mut o = ClientOptions::default();
        set(&mut o.subset_size, raw.subset_size);
        set(&mut o.slow_start, raw.slow_start);
        set(&mut o.zone_spill_in_flight, raw.zone_spill_in_flight);
        set(&mut o.departed_grace, raw.departed_grace);
        set(&mut o.zone_aware, raw.zone_aware);
        set(&mut o.outlier.consecutive_failures, raw.outlier_failures);
        set(&mut o.outlier.base_ejection, raw.outlier_ejection);
        set(&mut o.outlier.max_ejection, raw.outlier_max_ejection);
        set(&mut o.outlier.max_ejected_percent, raw.outlier_max_ejected_percent);
        o.client_id = raw.client_id.map(|v| v.0).or_else(|| host_name(vars));
        #[cfg(feature = "tls")]
        {
            o.tls = tls_from_raw(raw.tls_ca, raw.tls_cert, raw.tls_key, raw.tls_server_name, raw.tls_reload_interval)?;
        }
        o.validate().map_err(|e| {
            let variable = VARIABLES
                .iter()
                .find(|(f, _)| *f == e.field())
                .map_or_else(|| e.field().to_owned(), |(_, v)| (*v).to_owned());
            let reason = e.reason().replace("outlier.base_ejection", "DISCOVERY_OUTLIER_EJECTION");
            ConfigError::invalid(variable, e.value(), reason)
        })?;
        Ok(o)
    }

    /// Sets [`ClientOptions::tls`].
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: crate::tls::ClientTlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Declares the policy of one method (`/<package>.<Service>/<Method>`) or of every method of a
    /// service (`/<package>.<Service>/*`); a method's own policy beats its service's.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dubbo_k8s_discovery::client::{ClientOptions, MethodPolicy};
    /// let opts = ClientOptions::default()
    ///     .method("/org.apache.dubbo.demo.GreeterService/SayHello", MethodPolicy::idempotent().with_deadline(Duration::from_secs(2)))
    ///     .method("/com.example.OrderService/*", MethodPolicy::at_most_once());
    /// # let _ = opts;
    /// ```
    pub fn method(mut self, path: &str, policy: MethodPolicy) -> Self {
        self.methods.insert(path, policy);
        self
    }

    /// The declared per-method policies, by path.
    pub fn methods(&self) -> impl Iterator<Item = (String, &MethodPolicy)> {
        self.methods.iter()
    }

    pub(crate) fn policy(&self, path: &str) -> Option<&MethodPolicy> {
        self.methods.get(path)
    }

    /// Sets [`ClientOptions::default_deadline`].
    pub fn with_default_deadline(mut self, d: Duration) -> Self {
        self.default_deadline = d;
        self
    }

    /// Sets [`ClientOptions::retries`].
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets [`ClientOptions::connect_timeout`].
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets [`ClientOptions::client_id`].
    pub fn with_client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Sets [`ClientOptions::zone`].
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets [`ClientOptions::metrics`].
    pub fn with_metrics(mut self, metrics: ClientMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Checks every option; [`super::Balanced::new`] calls it. An error names the field and what it
    /// accepts.
    pub fn validate(&self) -> Result<(), OptionsError> {
        check_duration("default_deadline", self.default_deadline)?;
        check_duration("connect_timeout", self.connect_timeout)?;
        if self.retries > MAX_RETRIES {
            return Err(OptionsError::new("retries", self.retries, "expected 0 to 10"));
        }
        if !(self.retry_budget.is_finite() && (0.0..=1000.0).contains(&self.retry_budget)) {
            return Err(OptionsError::new("retry_budget", self.retry_budget, "expected a share of calls, 0 to 1000"));
        }
        if self.retry_min_per_sec > 100_000 {
            return Err(OptionsError::new("retry_min_per_sec", self.retry_min_per_sec, "expected 0 to 100000"));
        }
        if self.max_replay_bytes > 64 << 20 {
            return Err(OptionsError::new("max_replay_bytes", self.max_replay_bytes, "expected at most 64 MiB"));
        }
        if self.subset_size > 1_000_000 {
            return Err(OptionsError::new("subset_size", self.subset_size, "expected 0 (all) to 1000000"));
        }
        if self.slow_start > MAX_DURATION || self.departed_grace > MAX_DURATION {
            return Err(OptionsError::new(
                "slow_start / departed_grace",
                format!("{:?} / {:?}", self.slow_start, self.departed_grace),
                "expected at most 24h",
            ));
        }
        if !(self.slow_start_min_weight.is_finite()
            && self.slow_start_min_weight > 0.0
            && self.slow_start_min_weight <= 1.0)
        {
            return Err(OptionsError::new("slow_start_min_weight", self.slow_start_min_weight, "expected (0, 1]"));
        }
        if self.zone_spill_in_flight == 0 {
            return Err(OptionsError::new("zone_spill_in_flight", 0, "expected at least 1"));
        }
        let o = &self.outlier;
        if o.consecutive_failures > 1000 {
            return Err(OptionsError::new(
                "outlier.consecutive_failures",
                o.consecutive_failures,
                "expected 0 to 1000",
            ));
        }
        check_duration("outlier.base_ejection", o.base_ejection)?;
        check_duration("outlier.max_ejection", o.max_ejection)?;
        if o.max_ejection < o.base_ejection {
            return Err(OptionsError::new(
                "outlier.max_ejection",
                format!("{:?}", o.max_ejection),
                "must not be below outlier.base_ejection",
            ));
        }
        if o.max_ejected_percent > 100 {
            return Err(OptionsError::new("outlier.max_ejected_percent", o.max_ejected_percent, "expected 0 to 100"));
        }
        if let Some(id) = &self.client_id
            && id.len() > 253
        {
            return Err(OptionsError::new("client_id", id, "expected at most 253 characters"));
        }
        self.methods.validate()
    }
}

/// The host name (the pod name in Kubernetes): `HOSTNAME`, else `/etc/hostname`.
fn host_name(vars: &HashMap<String, String>) -> Option<String> {
    vars.get("HOSTNAME")
        .cloned()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 253)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(p: &[(&str, &str)]) -> HashMap<String, String> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_the_balancing_variables() {
        let o = ClientOptions::from_vars(&vars(&[
            ("DISCOVERY_SUBSET_SIZE", "0"),
            ("DISCOVERY_SLOW_START", "0s"),
            ("DISCOVERY_OUTLIER_FAILURES", "3"),
            ("DISCOVERY_OUTLIER_EJECTION", "2s"),
            ("DISCOVERY_ZONE_AWARE", "false"),
            ("DISCOVERY_CLIENT_ID", "consumer-7"),
            ("DISCOVERY_DEPARTED_GRACE", "3s"),
        ]))
        .expect("valid");
        assert_eq!((o.subset_size, o.slow_start, o.outlier.consecutive_failures), (0, Duration::ZERO, 3));
        assert_eq!(o.outlier.base_ejection, Duration::from_secs(2));
        assert!(!o.zone_aware);
        assert_eq!(o.client_id.as_deref(), Some("consumer-7"));
        assert_eq!(o.departed_grace, Duration::from_secs(3));
        assert!(o.validate().is_ok());
        for (var, val, hint) in [
            ("DISCOVERY_SUBSET_SIZE", "-1", "whole number"),
            ("DISCOVERY_SUBSET_SIZE", "2000000", "0 (all) to 1000000"),
            ("DISCOVERY_OUTLIER_MAX_EJECTED_PERCENT", "150", "0 to 100"),
            ("DISCOVERY_OUTLIER_EJECTION", "5", "unit"),
            ("DISCOVERY_OUTLIER_EJECTION", "9999999999999999h", "at most"),
            ("DISCOVERY_ZONE_AWARE", "sometimes", "true or false"),
            ("DISCOVERY_ZONE_SPILL_IN_FLIGHT", "0", "at least 1"),
            ("DISCOVERY_OUTLIER_MAX_EJECTION", "1s", "DISCOVERY_OUTLIER_EJECTION"),
        ] {
            let e = ClientOptions::from_vars(&vars(&[(var, val)])).expect_err(var).to_string();
            assert!(e.contains(var) && e.contains(hint), "{e}");
        }
    }

    #[test]
    fn the_host_name_is_the_default_identity_but_default_reads_nothing() {
        let o = ClientOptions::from_vars(&vars(&[("HOSTNAME", "consumer-5d9f")])).expect("valid");
        assert_eq!(o.client_id.as_deref(), Some("consumer-5d9f"));
        assert_eq!(ClientOptions::default().client_id, None);
    }

    #[test]
    fn values_that_would_panic_or_spin_are_refused_by_name() {
        let cases: Vec<(ClientOptions, &str)> = vec![
            (ClientOptions { retries: 11, ..ClientOptions::default() }, "retries"),
            (ClientOptions { retries: u32::MAX, ..ClientOptions::default() }, "retries"),
            (ClientOptions { slow_start_min_weight: 0.0, ..ClientOptions::default() }, "slow_start_min_weight"),
            (ClientOptions { slow_start_min_weight: f64::NAN, ..ClientOptions::default() }, "slow_start_min_weight"),
            (ClientOptions { default_deadline: Duration::ZERO, ..ClientOptions::default() }, "default_deadline"),
            (ClientOptions { default_deadline: Duration::MAX, ..ClientOptions::default() }, "default_deadline"),
            (ClientOptions { retry_budget: f64::INFINITY, ..ClientOptions::default() }, "retry_budget"),
            (ClientOptions { zone_spill_in_flight: 0, ..ClientOptions::default() }, "zone_spill_in_flight"),
            (
                ClientOptions {
                    outlier: OutlierOptions { base_ejection: Duration::ZERO, ..OutlierOptions::default() },
                    ..ClientOptions::default()
                },
                "outlier.base_ejection",
            ),
        ];
        for (o, field) in cases {
            let e = o.validate().expect_err(field);
            assert_eq!(e.field(), field, "{e}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            (0u64..100_000_000_000).prop_map(Duration::from_nanos),
            any::<u64>().prop_map(Duration::from_secs),
        ]
    }

    proptest! {
        /// Whatever the options, checking them answers; and options that pass can be used: retries
        /// index a bounded list, durations add to an Instant without overflow, weights divide.
        #[test]
        fn any_options_validate_or_are_refused_never_panic(
            retries in any::<u32>(),
            budget in any::<f64>(),
            min_weight in any::<f64>(),
            deadline in any_duration(),
            connect in any_duration(),
            slow in any_duration(),
            grace in any_duration(),
            base in any_duration(),
            max in any_duration(),
            percent in any::<u8>(),
            spill in any::<usize>(),
            subset in any::<usize>(),
        ) {
            let mut o = ClientOptions {
                retries,
                retry_budget: budget,
                slow_start_min_weight: min_weight,
                default_deadline: deadline,
                connect_timeout: connect,
                slow_start: slow,
                departed_grace: grace,
                zone_spill_in_flight: spill,
                subset_size: subset,
                ..ClientOptions::default()
            };
            o.outlier.base_ejection = base;
            o.outlier.max_ejection = max;
            o.outlier.max_ejected_percent = percent;
            if o.validate().is_ok() {
                prop_assert!(o.retries <= MAX_RETRIES);
                let now = std::time::Instant::now();
                for d in [o.default_deadline, o.connect_timeout, o.slow_start, o.departed_grace, o.outlier.max_ejection] {
                    prop_assert!(now.checked_add(d).is_some());
                }
                prop_assert!(o.slow_start_min_weight > 0.0 && o.slow_start_min_weight <= 1.0);
                prop_assert!(o.zone_spill_in_flight >= 1 && !o.default_deadline.is_zero());
            }
        }
    }
}
