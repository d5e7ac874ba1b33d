//! Durations as the contract writes them: whole or decimal seconds (`30`, `1.5`) or humantime
//! (`500ms`, `30s`, `2m`, `1m30s`).

use std::time::Duration;

/// Parses a duration; a bare number is seconds. Negative, NaN and non-finite values are errors.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        let secs: f64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds"))?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("{text:?} must be a non-negative number of seconds"));
        }
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is too large"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}); use seconds (30) or a unit (500ms, 30s, 2m)")
    })
}

/// Formats a duration the way [`parse_duration`] reads it back, e.g. `1m 30s` or `500ms`.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_seconds_and_units() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "-1", "abc", "1e999", "NaN", "10 parsecs", "--1"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
