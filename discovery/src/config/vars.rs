//! Settings read the way this crate reads its own, for applications that want theirs read alike:
//! defaults, then an optional file (`<PREFIX>_CONFIG_FILE`: TOML, YAML or JSON, keys in lowercase
//! without the prefix), then `<PREFIX>_*` environment variables, gathered by the `config` crate and
//! deserialized with serde into the application's typed struct. Each value is parsed by its type
//! ([`Var`] over a [`FromVar`] type: durations with a unit, booleans, numbers, addresses...), and
//! one that does not parse is a [`ConfigError`] naming the variable and what it accepts. Ranges and
//! relations between values are checked afterwards, on the typed struct.
//!
//! ```
//! use std::collections::HashMap;
//! use std::time::Duration;
//! use dubbo_k8s_discovery::config::vars::{self, Var};
//!
//! #[derive(Default, serde::Deserialize)]
//! #[serde(default)]
//! struct Raw {
//!     drain: Option<Var<Duration>>,
//!     listen: Option<Var<std::net::SocketAddr>>,
//! }
//!
//! let env: HashMap<String, String> = [("APP_DRAIN".to_owned(), "1m30s".to_owned())].into();
//! let raw: Raw = vars::load("APP", &env).expect("valid");
//! assert_eq!(raw.drain.map(|v| v.0), Some(Duration::from_secs(90)));
//!
//! let bad: HashMap<String, String> = [("APP_DRAIN".to_owned(), "90".to_owned())].into();
//! let err = vars::load::<Raw>("APP", &bad).err().expect("a unit is needed");
//! assert!(err.to_string().starts_with("invalid APP_DRAIN=\"90\": expected a duration with a unit"));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

use super::ConfigError;

/// Longest duration any variable accepts (a day): far below what `Instant` arithmetic can hold, so
/// that no configured duration can overflow a deadline.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A type a variable's text can be parsed into; the error says what is accepted.
pub trait FromVar: Sized {
    /// Parses the value's text (trimmed).
    fn from_var(text: &str) -> Result<Self, String>;
}

/// A value of `T` read from a variable's text (or a file's scalar), for typed settings structs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Var<T>(pub T);

impl<'de, T: FromVar> serde::Deserialize<'de> for Var<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text<T>(PhantomData<T>);
        impl<T: FromVar> Visitor<'_> for Text<T> {
            type Value = Var<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value as text")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Var<T>, E> {
                T::from_var(v.trim()).map(Var).map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Var<T>, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Var<T>, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Var<T>, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Var<T>, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(Text(PhantomData))
    }
}

/// Reads `T` from defaults, the file named by `<prefix>_CONFIG_FILE` among `vars`, then the
/// `<prefix>_*` variables among `vars` (empty ones count as unset; unrelated ones are never read).
pub fn load<T: serde::de::DeserializeOwned>(prefix: &str, vars: &HashMap<String, String>) -> Result<T, ConfigError> {
    let file_var = format!("{prefix}_CONFIG_FILE");
    let mut builder = config::Config::builder();
    if let Some(file) = vars.get(&file_var).filter(|f| !f.is_empty()) {
        builder = builder.add_source(config::File::from(PathBuf::from(file)).required(true));
    }
    let head = format!("{prefix}_");
    let ours: HashMap<String, String> = vars
        .iter()
        .filter(|(k, _)| k.starts_with(&head) && **k != file_var)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(config::Environment::with_prefix(prefix).ignore_empty(true).source(Some(ours)));
    let built = builder.build().map_err(|e| read_error(&file_var, vars, e))?;
    built.try_deserialize().map_err(|e| value_error(prefix, vars, e))
}

/// A failure to read the file (or the environment).
fn read_error(file_var: &str, vars: &HashMap<String, String>, e: config::ConfigError) -> ConfigError {
    let file = vars.get(file_var).cloned().unwrap_or_default();
    ConfigError::invalid(file_var, file, format!("cannot read the configuration file: {e}"))
}

/// A value that does not deserialize: the variable it came from, its text, and what is accepted.
fn value_error(prefix: &str, vars: &HashMap<String, String>, e: config::ConfigError) -> ConfigError {
    let (key, reason) = match e {
        config::ConfigError::At { error, key: Some(key), .. } => (key, error.to_string()),
        config::ConfigError::Type { key: Some(key), unexpected, expected, .. } => {
            (key, format!("expected {expected}, got {unexpected}"))
        }
        other => return ConfigError::Read(Box::new(other)),
    };
    let variable = format!("{prefix}_{}", key.to_ascii_uppercase());
    let value = vars.get(&variable).cloned().unwrap_or_else(|| "(from the configuration file)".to_owned());
    ConfigError::invalid(variable, value, reason)
}

impl FromVar for String {
    fn from_var(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl FromVar for PathBuf {
    fn from_var(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
}

/// `true/false`, `1/0`, `yes/no`, `on/off`.
impl FromVar for bool {
    fn from_var(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("expected true or false".to_owned()),
        }
    }
}

/// A duration with a unit: `250ms`, `5s`, `2m`, `1h`, or combinations such as `1m30s`; at most
/// [`MAX_DURATION`].
impl FromVar for Duration {
    fn from_var(v: &str) -> Result<Self, String> {
        const HINT: &str = "expected a duration with a unit, e.g. 500ms, 5s, 2m, 1h30m";
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
            let part = match &rest[..unit_len] {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                _ => return Err(HINT.to_owned()),
            };
            rest = &rest[unit_len..];
            total = total.saturating_add(part);
        }
        if total > MAX_DURATION {
            return Err("expected a duration of at most 24h".to_owned());
        }
        Ok(total)
    }
}

macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl FromVar for $t {
            fn from_var(text: &str) -> Result<Self, String> {
                text.parse().map_err(|_| "expected a whole number (0 or more)".to_owned())
            }
        }
    )*};
}
whole_numbers!(u8, u16, u32, u64, usize);

impl FromVar for f64 {
    fn from_var(text: &str) -> Result<Self, String> {
        text.parse::<f64>().ok().filter(|f| f.is_finite()).ok_or_else(|| "expected a number".to_owned())
    }
}

/// `ip:port` (IPv6 in brackets).
impl FromVar for SocketAddr {
    fn from_var(text: &str) -> Result<Self, String> {
        text.parse().map_err(|_| "expected ip:port, e.g. 0.0.0.0:8081 or [::]:8081".to_owned())
    }
}

impl FromVar for IpAddr {
    fn from_var(text: &str) -> Result<Self, String> {
        text.parse().map_err(|_| "expected an IP address".to_owned())
    }
}

/// Formats a duration the way it is read.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.is_zero() { format!("{}ms", d.as_millis()) } else { format!("{}s", d.as_secs()) }
}

/// A duration from a variable's text (for command lines that take the same format).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    Duration::from_var(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| Duration::from_var(s);
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("1h2m3s"), Ok(Duration::from_secs(3723)));
        for bad in ["5", "s", "5 days", "-5s", "99999999999999999999s"] {
            assert!(d(bad).is_err(), "{bad}");
        }
        assert!(d("9999999999999999h").expect_err("capped").contains("at most 24h"));
        assert_eq!(d("24h"), Ok(MAX_DURATION));
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn scalars_from_a_file_read_as_text() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default)]
        struct Raw {
            page_size: Option<Var<u32>>,
            failover: Option<Var<bool>>,
            drain: Option<Var<Duration>>,
        }
        let dir = std::env::temp_dir().join(format!("vars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("app.toml");
        std::fs::write(&file, "page_size = 50\nfailover = false\ndrain = \"2s\"\n").expect("write");
        let vars: HashMap<String, String> =
            [("APP_CONFIG_FILE".to_owned(), file.to_string_lossy().into_owned()), ("APP_DRAIN".into(), "3s".into())]
                .into();
        let raw: Raw = load("APP", &vars).expect("valid");
        assert_eq!(raw.page_size.map(|v| v.0), Some(50));
        assert_eq!(raw.failover.map(|v| v.0), Some(false));
        assert_eq!(raw.drain.map(|v| v.0), Some(Duration::from_secs(3)), "the environment beats the file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_variable_value_and_what_is_accepted() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default)]
        struct Raw {
            page_size: Option<Var<u32>>,
        }
        let vars: HashMap<String, String> = [("APP_PAGE_SIZE".to_owned(), "-1".to_owned())].into();
        let e = load::<Raw>("APP", &vars).expect_err("negative").to_string();
        assert_eq!(e, "invalid APP_PAGE_SIZE=\"-1\": expected a whole number (0 or more)");
        let vars: HashMap<String, String> = [("APP_CONFIG_FILE".to_owned(), "/nonexistent/app.toml".to_owned())].into();
        let e = load::<Raw>("APP", &vars).expect_err("missing file").to_string();
        assert!(e.contains("APP_CONFIG_FILE") && e.contains("/nonexistent/app.toml"), "{e}");
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
            let _ = bool::from_var(&v);
            let _ = Duration::from_var(&v);
            let _ = u32::from_var(&v);
            let _ = f64::from_var(&v);
            let _ = SocketAddr::from_var(&v);
            let _ = IpAddr::from_var(&v);
        }

        /// A duration written the documented way reads back as itself.
        #[test]
        fn durations_round_trip(ms in 0u64..=86_400_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(Duration::from_var(&format_duration(d)), Ok(d));
        }
    }
}
