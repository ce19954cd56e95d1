//! Durations ("90s", "15m", "4h", "7d", "2w", "1h 30m") as used in the workload file: the
//! one strict grammar of `holdfast_core::duration`, case-sensitive.

use chrono::Duration;
use serde::{Deserialize, Deserializer};

/// Parse a duration. Bare numbers, unknown or wrongly cased units are refused with the list of
/// units.
pub fn parse(s: &str) -> Result<Duration, String> {
    holdfast_core::duration::parse_seconds(s).map(|secs| Duration::seconds(secs as i64))
}

/// Show a duration compactly ("1h 30m", "45s", "2d").
pub fn show(d: Duration) -> String {
    let secs = d.num_seconds();
    if secs < 0 {
        return format!("-{}", show(-d));
    }
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, rem) = (rem / 3600, rem % 3600);
    let (m, s) = (rem / 60, rem % 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 || parts.is_empty() {
        if secs < 60 && d.num_milliseconds() % 1000 != 0 {
            parts.push(format!("{:.1}s", d.num_milliseconds() as f64 / 1000.0));
        } else {
            parts.push(format!("{s}s"));
        }
    }
    parts.join(" ")
}

/// Serde helper: an optional human duration.
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (s, secs) in [
            ("15m", 900),
            ("4h", 14_400),
            ("7d", 604_800),
            ("90s", 90),
            ("1h 30m", 5400),
            ("2w", 1_209_600),
        ] {
            assert_eq!(parse(s).unwrap().num_seconds(), secs, "{s}");
        }
        for bad in ["", "15", "fast", "-3m", "5M", "5 min", "5 minutes", "15 m"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("units:"), "{bad}: {e}");
        }
        assert_eq!(show(Duration::seconds(5400)), "1h 30m");
        assert_eq!(show(Duration::seconds(0)), "0s");
        assert_eq!(show(Duration::milliseconds(1500)), "1.5s");
        assert_eq!(show(Duration::days(2)), "2d");
    }
}
