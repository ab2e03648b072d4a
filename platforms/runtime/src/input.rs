//! Parsing of user-supplied times and durations (CLI flags, HTTP fields).
//!
//! Exists so "2023-05-08", "2023-05-08T13:56:00Z", "1683553000000" and
//! "30d" mean the same thing everywhere, and a typo is a clear error.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use memkern_core::time::Timestamp;

use super::RuntimeError;

/// Parses a point in time: RFC 3339 (`2023-05-08T13:56:00Z`,
/// `…+02:00`), a date-time without zone taken as UTC
/// (`2023-05-08T13:56:00`, `2023-05-08 13:56`), a date (`2023-05-08`,
/// midnight UTC), or milliseconds since the Unix epoch.
pub fn parse_time(s: &str) -> Result<Timestamp, RuntimeError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Timestamp(ms));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Timestamp(t.timestamp_millis()));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(Timestamp(t.and_utc().timestamp_millis()));
        }
    }
    if let Some(t) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(Timestamp(t.and_utc().timestamp_millis()));
    }
    Err(RuntimeError::Invalid(format!(
        "{s:?} is not a time: use 2023-05-08, 2023-05-08T13:56:00Z or epoch milliseconds"
    )))
}

/// Parses a duration: a positive whole number with a unit `s`, `m`, `h`,
/// `d` or `w` (`90s`, `30m`, `12h`, `30d`, `2w`); milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, RuntimeError> {
    let s = s.trim();
    let bad = || {
        RuntimeError::Invalid(format!(
            "{s:?} is not a duration: use a number and s, m, h, d or w (e.g. 30d)"
        ))
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let per: u64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 604_800_000,
        _ => return Err(bad()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    n.checked_mul(per).ok_or_else(bad)
}

/// Longest piece of a caller's input an error message repeats.
pub const SHOWN_INPUT_CHARS: usize = 48;

/// `input` as error messages show it: quoted, cut to
/// [`SHOWN_INPUT_CHARS`] characters with `…` and the full length, so a
/// 5000-character id is not echoed back whole.
pub fn shown(input: &str) -> String {
    let n = input.chars().count();
    if n <= SHOWN_INPUT_CHARS {
        return format!("{input:?}");
    }
    let head: String = input.chars().take(SHOWN_INPUT_CHARS).collect();
    format!("{head:?}… ({n} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let day = Timestamp(1_683_504_000_000); // 2023-05-08T00:00:00Z
        assert_eq!(parse_time("2023-05-08").ok(), Some(day));
        assert_eq!(parse_time("1683504000000").ok(), Some(day));
        let t = Timestamp(day.0 + (13 * 60 + 56) * 60_000);
        assert_eq!(parse_time("2023-05-08T13:56:00Z").ok(), Some(t));
        assert_eq!(parse_time("2023-05-08T15:56:00+02:00").ok(), Some(t));
        assert_eq!(parse_time("2023-05-08 13:56").ok(), Some(t));
        for bad in ["", "yesterday", "2023-13-01", "8 May 2023"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("90s").ok(), Some(90_000));
        assert_eq!(parse_duration_ms("30d").ok(), Some(30 * 86_400_000));
        assert_eq!(parse_duration_ms("2w").ok(), Some(2 * 604_800_000));
        for bad in ["", "d", "0d", "-1d", "5", "5y", "99999999999999999999d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
