//! [`DiscoveryConfig::validate`]: every value in its range, formats checked, and nothing that
//! would make a loop spin or a deadline overflow, however the configuration was made. Each error
//! names the variable that sets the value.

use std::time::Duration;

use super::vars::{MAX_DURATION, format_duration};
use super::{ConfigError, DiscoveryConfig, ENV_PREFIX, Mode};

fn invalid(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::invalid(format!("{ENV_PREFIX}_{name}"), value, reason)
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `d` within `[min, 24h]`.
fn within(name: &str, d: Duration, min: Duration) -> Result<(), ConfigError> {
    if d < min || d > MAX_DURATION {
        let accepted = format!("expected {} to 24h", format_duration(min));
        return Err(invalid(name, &format_duration(d), &accepted));
    }
    Ok(())
}

/// `n` within `[min, max]`.
fn between(name: &str, n: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if n < min || n > max {
        return Err(invalid(name, &n.to_string(), &format!("expected a whole number from {min} to {max}")));
    }
    Ok(())
}

impl DiscoveryConfig {
    /// Checks a configuration however it was made (environment, file, or code): every value in its
    /// range, and nothing that would make a loop spin or a deadline overflow. The error names the
    /// variable that sets the value. [`crate::Discovery::new`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_names()?;
        self.check_dns()?;
        self.check_api()?;
        self.check_backoff()
    }

    fn check_names(&self) -> Result<(), ConfigError> {
        crate::mapping::check_label(&self.namespace, 63, false)
            .map_err(|why| invalid("NAMESPACE", &self.namespace, &format!("{why} (DNS-1123 label)")))?;
        between("FALLBACK_PORT", self.fallback_port.into(), 1, 65535)?;
        if self.mode == Mode::Static && self.static_endpoints.is_empty() {
            return Err(invalid(
                "STATIC_ENDPOINTS",
                "",
                "static mode needs at least one endpoint: a comma-separated list of host:port",
            ));
        }
        let domain = &self.dns.cluster_domain;
        if domain.split('.').any(|l| crate::mapping::check_label(l, 63, false).is_err()) {
            return Err(invalid("CLUSTER_DOMAIN", domain, "expected dot-separated DNS labels, e.g. cluster.local"));
        }
        if let Some(z) = &self.locality.zone
            && (z.is_empty() || z.len() > 63 || z.chars().any(char::is_whitespace))
        {
            return Err(invalid("ZONE", z, "expected a zone name as in topology.kubernetes.io/zone, e.g. us-east-1a"));
        }
        if let Some(n) = &self.locality.node_name {
            crate::mapping::check_subdomain(n)
                .map_err(|why| invalid("NODE_NAME", n, &format!("{why} (a node name)")))?;
        }
        Ok(())
    }

    fn check_dns(&self) -> Result<(), ConfigError> {
        let dns = &self.dns;
        within("DNS_TTL_FLOOR", dns.ttl_floor, ms(100))?;
        within("DNS_TTL_CEILING", dns.ttl_ceiling, ms(100))?;
        if dns.ttl_ceiling < dns.ttl_floor {
            return Err(invalid(
                "DNS_TTL_CEILING",
                &format_duration(dns.ttl_ceiling),
                &format!("must not be below DISCOVERY_DNS_TTL_FLOOR ({})", format_duration(dns.ttl_floor)),
            ));
        }
        within("DNS_TIMEOUT", dns.timeout, ms(10))?;
        between("DNS_ATTEMPTS", dns.attempts as u64, 1, 10)
    }

    fn check_api(&self) -> Result<(), ConfigError> {
        let api = &self.api;
        if let Some(s) = &api.server
            && (!(s.starts_with("http://") || s.starts_with("https://")) || s.parse::<http::Uri>().is_err())
        {
            return Err(invalid("API_SERVER", s, "expected an http:// or https:// URL"));
        }
        within("WATCH_TIMEOUT", api.watch_timeout, Duration::from_secs(1))?;
        within("REQUEST_TIMEOUT", api.request_timeout, ms(10))?;
        within("WATCH_IDLE_TIMEOUT", api.watch_idle_timeout, ms(10))?;
        if api.watch_idle_timeout <= api.request_timeout {
            return Err(invalid(
                "WATCH_IDLE_TIMEOUT",
                &format_duration(api.watch_idle_timeout),
                &format!(
                    "must be above DISCOVERY_REQUEST_TIMEOUT ({}); the API server sends a bookmark about once a \
                     minute, so keep it well above 60s in a cluster",
                    format_duration(api.request_timeout)
                ),
            ));
        }
        if !api.probe_interval.is_zero() {
            within("API_PROBE_INTERVAL", api.probe_interval, ms(100))?;
        }
        between("PAGE_SIZE", api.page_size.into(), 1, 100_000)?;
        within("MAX_STALE", api.max_stale, Duration::ZERO)?;
        within("COLD_START_TIMEOUT", api.cold_start_timeout, Duration::ZERO)?;
        within("RECOVERY_HOLD", api.recovery_hold, Duration::ZERO)
    }

    fn check_backoff(&self) -> Result<(), ConfigError> {
        within("BACKOFF_MIN", self.backoff.min, ms(10))?;
        within("BACKOFF_MAX", self.backoff.max, ms(10))?;
        if self.backoff.max < self.backoff.min {
            return Err(invalid(
                "BACKOFF_MAX",
                &format_duration(self.backoff.max),
                "must not be below DISCOVERY_BACKOFF_MIN",
            ));
        }
        Ok(())
    }
}
