//! The one duration grammar of holdfast, for the workload file and the command line alike.
//!
//! ```text
//! duration = group (" "? group)*
//! group    = digits unit
//! unit     = "s" | "m" | "h" | "d" | "w"      (seconds, minutes, hours, days, weeks)
//! ```
//!
//! Case-sensitive and strict: `"15m"`, `"4h"`, `"1h 30m"`, `"7d"`, `"2w"` are durations;
//! `"5M"` (months? megabytes?), `"5 min"`, `"5 minutes"`, `"15"` and `"1.5h"` are refused with
//! the list of units, so a typo can never silently become a different objective. Months and
//! years are not units: their length varies (write `30d`, `365d`).

/// The units, for error messages.
pub const UNITS: &str = "s (seconds), m (minutes), h (hours), d (days), w (weeks)";

/// Parse a duration into seconds.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "{text:?} is not a duration ({why}): write a whole number followed by a unit, \
             e.g. \"15m\", \"4h\", \"1h 30m\", \"7d\"; units: {UNITS}"
        )
    };
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    let b = text.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < b.len() {
        if i > 0 && b[i] == b' ' {
            i += 1;
            if i == b.len() {
                return Err(bad("it ends with a space"));
            }
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad("a number is missing"));
        }
        let n: u64 = text[start..i]
            .parse()
            .map_err(|_| bad("the number is too large"))?;
        let unit = match b.get(i) {
            Some(b's') => 1,
            Some(b'm') => 60,
            Some(b'h') => 3_600,
            Some(b'd') => 86_400,
            Some(b'w') => 604_800,
            None if start == 0 => return Err(bad("the unit is missing")),
            None => return Err(bad("the last number has no unit")),
            Some(_) => return Err(bad("unknown unit")),
        };
        i += 1;
        if i < b.len() && b[i] != b' ' && !b[i].is_ascii_digit() {
            return Err(bad("unknown unit"));
        }
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .filter(|&x| x <= i64::MAX as u64 / 1_000_000)
            .ok_or_else(|| bad("it is too long"))?;
    }
    Ok(total)
}

/// Parse a duration.
pub fn parse(text: &str) -> Result<std::time::Duration, String> {
    parse_seconds(text).map(std::time::Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_table() {
        for (s, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("4h", 14_400),
            ("7d", 604_800),
            ("2w", 1_209_600),
            ("1h 30m", 5_400),
            ("1h30m", 5_400),
            ("1d 2h 3m 4s", 93_784),
            ("0s", 0),
        ] {
            assert_eq!(parse_seconds(s), Ok(secs), "{s}");
        }
        for bad in [
            "",
            "15",
            "5M",
            "5H",
            "5 min",
            "5 minutes",
            "5min",
            "1.5h",
            "-3m",
            " 5m",
            "5m ",
            "5m  3s",
            "m",
            "fast",
            "5y",
            "5mo",
            "99999999999999999999s",
            "300000000000000w",
        ] {
            let e = parse_seconds(bad).unwrap_err();
            assert!(e.contains("units: s (seconds)"), "{bad}: {e}");
        }
    }
}
