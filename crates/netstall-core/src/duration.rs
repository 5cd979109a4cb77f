//! Durations on the command line always carry a unit: `10ms`, `2s`, `1m`, `500us`.

use std::time::Duration;

/// Parses a duration with a unit (`10ms`, `2s`, `1m30s`, `250us`).
///
/// A bare number is refused on purpose: `-i 10` is ambiguous between the
/// hping3 habit (microseconds) and ping's (seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "duration '{text}' needs a unit, e.g. {text}ms or {text}s"
        ));
    }
    humantime::parse_duration(text).map_err(|e| format!("invalid duration '{text}': {e}"))
}

/// Like [`parse`], but zero is an error (intervals, windows, periods).
pub fn parse_nonzero(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err(format!("duration '{text}' must be greater than zero"));
    }
    Ok(d)
}

/// Milliseconds as a float, the unit stall durations are reported in.
pub fn as_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_understood() {
        assert_eq!(parse("10ms").unwrap(), Duration::from_millis(10));
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn bare_numbers_and_garbage_are_refused() {
        assert!(parse("10").unwrap_err().contains("needs a unit"));
        assert!(parse("fast").is_err());
        assert!(parse("").is_err());
        assert!(parse_nonzero("0ms")
            .unwrap_err()
            .contains("greater than zero"));
    }
}
