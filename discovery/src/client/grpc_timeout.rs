//! The `grpc-timeout` header: how a call's deadline travels to the provider.

use std::time::Duration;

/// Parses a `grpc-timeout` header value (`<digits><H|M|S|m|u|n>`).
pub(crate) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-timeout` is sent in whole milliseconds, rounded down (never more time than is left), so a
/// provider's deadline may fall up to this much before the caller's.
pub(crate) const GRPC_TIMEOUT_RESOLUTION: Duration = Duration::from_millis(1);

/// Formats a `grpc-timeout` value: whole milliseconds rounded down (at least 1), or whole seconds
/// once milliseconds would need more than 8 digits.
pub(crate) fn format_grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms < 100_000_000 { format!("{ms}m") } else { format!("{}S", d.as_secs().min(99_999_999)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("100u"), Some(Duration::from_micros(100)));
        for bad in ["", "m", "5", "123456789S", "5x", "-5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(format_grpc_timeout(Duration::from_micros(10)), "1m", "rounded up, never 0");
        assert_eq!(parse_grpc_timeout(&format_grpc_timeout(Duration::from_secs(3))), Some(Duration::from_secs(3)));
    }
}
