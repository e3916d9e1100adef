//! **Not part of the discovery API.** Environment-variable parsing shared by this workspace's
//! binaries (`provider`, `consumer`) and by [`DiscoveryConfig`](super::DiscoveryConfig); it may change
//! in any release. Libraries that embed discovery build [`DiscoveryConfig`](super::DiscoveryConfig)
//! directly or call [`DiscoveryConfig::from_env`](super::DiscoveryConfig::from_env).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use crate::model::PortSpec;

/// Gathers `<PREFIX>_*` variables as text into `T` (keys lowercased without the prefix), on top of the
/// file named by `<PREFIX>_CONFIG_FILE` if set: defaults (serde) → file → environment. Unrelated
/// variables are never read, so they cannot fail the parse.
pub fn load_raw<T: serde::de::DeserializeOwned>(
    vars: &HashMap<String, String>,
    prefix: &str,
) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder();
    let file_var = format!("{prefix}_CONFIG_FILE");
    if let Some(file) = vars.get(&file_var).filter(|f| !f.is_empty()) {
        builder = builder.add_source(config::File::from(PathBuf::from(file)).required(true));
    }
    let head = format!("{prefix}_");
    let ours: HashMap<String, String> = vars
        .iter()
        .filter(|(k, _)| k.starts_with(&head) && **k != file_var)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(config::Environment::with_prefix(prefix).source(Some(ours)));
    builder.build().and_then(|c| c.try_deserialize()).map_err(ConfigError::Read)
}

/// Parses one variable's raw text with `parse`: surrounding spaces trimmed, absent or empty gives
/// `None`, an error names `variable` (its full name) and the value.
pub fn parse_var<T>(
    raw: Option<String>,
    variable: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match raw.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(v) => parse(v).map(Some).map_err(|why| ConfigError::invalid(variable, v, why)),
        None => Ok(None),
    }
}

/// `true/false`, `1/0`, `yes/no`, `on/off`.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

/// Longest duration any variable accepts (a day): far below what `Instant` arithmetic can hold, so
/// that no configured duration can overflow a deadline.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration with a unit: `250ms`, `5s`, `2m`, `1h`, or combinations such as `1m30s`; at most
/// [`MAX_DURATION`].
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a duration with a unit, e.g. 500ms, 5s, 2m, 1h30m";
    let v = v.trim();
    if v.is_empty() {
        return Err(HINT.to_owned());
    }
    let mut total = Duration::ZERO;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(HINT.to_owned());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| HINT.to_owned())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(HINT.to_owned()),
        };
        total = total.saturating_add(part);
    }
    if total > MAX_DURATION {
        return Err("expected a duration of at most 24h".to_owned());
    }
    Ok(total)
}

/// A duration above zero.
pub fn parse_nonzero_duration(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d.is_zero() { Err("expected a duration above zero".to_owned()) } else { Ok(d) }
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.is_zero() { format!("{}ms", d.as_millis()) } else { format!("{}s", d.as_secs()) }
}

/// A whole number in `min..=max`.
pub fn parse_in_range<T>(v: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    v.parse::<T>()
        .ok()
        .filter(|n| *n >= min && *n <= max)
        .ok_or_else(|| format!("expected a whole number from {min} to {max}"))
}

/// A ratio in `min..=max` (e.g. `0.2`).
pub fn parse_ratio(v: &str, min: f64, max: f64) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r >= min && *r <= max)
        .ok_or_else(|| format!("expected a number from {min} to {max}"))
}

/// A TCP port number, 1–65535.
pub fn parse_port_number(v: &str) -> Result<u16, String> {
    match v.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(_) => Err("port out of range: expected 1-65535".to_owned()),
        Err(_) => Err("expected a port number 1-65535".to_owned()),
    }
}

/// A port name (IANA_SVC_NAME: ≤15 chars, lowercase letters, digits and '-', with a letter) or a number.
pub fn parse_port_spec(v: &str) -> Result<PortSpec, String> {
    if v.chars().all(|c| c.is_ascii_digit()) {
        return parse_port_number(v).map(PortSpec::Number);
    }
    let ok = v.len() <= 15
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && v.chars().any(|c| c.is_ascii_lowercase())
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    if ok {
        Ok(PortSpec::Name(v.to_owned()))
    } else {
        Err("expected a port number 1-65535 or a port name (up to 15 lowercase letters, digits, '-')".to_owned())
    }
}

/// An IP with an optional port (53 by default).
pub fn parse_dns_server(v: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err("expected an IP address with an optional port, e.g. 10.96.0.10 or 127.0.0.1:5353 or [::1]:53".to_owned())
}

/// `ip:port` (IPv6 in brackets).
pub fn parse_socket_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse().map_err(|_| "expected ip:port, e.g. 0.0.0.0:8081 or [::]:8081".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err(), "overflowing numbers are errors, not panics");
        assert!(parse_duration("9999999999999999h").expect_err("capped").contains("at most 24h"));
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(parse_nonzero_duration("0s"), Err("expected a duration above zero".to_owned()));
    }

    #[test]
    fn numbers_and_ports() {
        assert_eq!(parse_in_range::<u32>("7", 1, 10), Ok(7));
        assert!(parse_in_range::<u32>("11", 1, 10).expect_err("range").contains("1 to 10"));
        assert!(parse_ratio("NaN", 0.0, 1.0).is_err());
        assert_eq!(parse_port_spec("tri"), Ok(PortSpec::Name("tri".into())));
        assert!(parse_port_spec("0").is_err());
        assert!(parse_port_spec("has--dash").is_err());
        assert_eq!(parse_dns_server("10.96.0.10"), Ok("10.96.0.10:53".parse().expect("addr")));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every parser answers a value or a message for any text: never a panic.
        #[test]
        fn parsers_never_panic(v in ".{0,40}") {
            let _ = parse_bool(&v);
            let _ = parse_duration(&v);
            let _ = parse_nonzero_duration(&v);
            let _ = parse_in_range::<u32>(&v, 1, 10);
            let _ = parse_ratio(&v, 0.0, 1.0);
            let _ = parse_port_number(&v);
            let _ = parse_port_spec(&v);
            let _ = parse_dns_server(&v);
            let _ = parse_socket_addr(&v);
            let _ = crate::config::parse_static(&v, 50051);
        }

        /// A duration written the documented way reads back as itself.
        #[test]
        fn durations_round_trip(ms in 0u64..=86_400_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        /// Numbers are accepted exactly within their range.
        #[test]
        fn ranges_are_exact(n in any::<i64>()) {
            let parsed = parse_in_range::<u32>(&n.to_string(), 1, 10);
            prop_assert_eq!(parsed.is_ok(), (1..=10).contains(&n));
        }
    }
}
