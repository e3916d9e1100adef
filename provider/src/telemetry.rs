//! Tracing subscriber set-up for the binaries (libraries never install one).

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

impl discovery::config::vars::FromVar for LogFormat {
    fn from_var(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".to_owned()),
        }
    }
}

/// The filter when `RUST_LOG` is unset: `info`, without kube's per-request error lines (discovery
/// reports an API outage itself: one line when it starts, a summary a minute, one when it ends;
/// `RUST_LOG=info,kube_client=debug` brings kube's back).
pub const DEFAULT_FILTER: &str = "info,kube_client::client::builder=off";

/// Installs the global subscriber: `RUST_LOG` filter (default [`DEFAULT_FILTER`]), text or JSON, to
/// stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
