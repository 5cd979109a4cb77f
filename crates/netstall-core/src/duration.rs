//! Durations on the command line always carry a unit: `10ms`, `2s`, `1m`, `500us`.

use std::time::Duration;

/// The longest duration any argument takes: a year. Far beyond any real
/// use, and small enough that `Instant::now() + d`, `d * n` for a count
/// and `d.as_nanos() as u64` cannot overflow anywhere it goes.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration with a unit (`10ms`, `2s`, `1m30s`, `250us`), at most [`MAX`].
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
    let d =
        humantime::parse_duration(text).map_err(|e| format!("invalid duration '{text}': {e}"))?;
    if d > MAX {
        return Err(format!("duration '{text}' is too long: at most 365 days"));
    }
    Ok(d)
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

    #[test]
    fn durations_that_would_overflow_a_clock_are_refused() {
        assert_eq!(
            parse("18446744073709551615s").unwrap_err(),
            "duration '18446744073709551615s' is too long: at most 365 days"
        );
        assert!(parse("366d").is_err());
        assert_eq!(parse("365d").unwrap(), MAX);
        // The largest accepted still fits every clock the tools add it to.
        assert!(std::time::Instant::now().checked_add(MAX).is_some());
        assert!(u64::try_from(MAX.as_nanos()).is_ok());
    }
}
