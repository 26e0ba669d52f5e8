//! Sizes and durations as users write them, parsed by well-kept crates: `bytesize`
//! (SI and IEC units: `16MiB` is 16 × 2²⁰ bytes, `16MB` 16 × 10⁶) and `humantime`
//! (`250ms`, `30s`, `5m`, `1h 30m`). One place for the command line's options and the
//! operator's configuration file.

use std::time::Duration;

/// The longest duration any setting takes: a year.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a size: `1048576` (bytes), `512KiB`, `16MiB`, `1GiB`, `64MB` (10⁶ bytes).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let size: bytesize::ByteSize =
        text.parse().map_err(|e| format!("{text:?} is not a size such as 16MiB or 64MB: {e}"))?;
    if size.as_u64() == u64::MAX {
        return Err(format!("{text} is too large"));
    }
    Ok(size.as_u64())
}

/// Parses a duration: `250ms`, `30s`, `5m`, `1h 30m`, or a plain number of seconds
/// (`30`, `1.5`). At most a year.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Duration::try_from_secs_f64(seconds.min(MAX_DURATION.as_secs_f64() * 2.0))
                .map_err(|e| format!("{text}: {e}"))?
        }
        Ok(_) => return Err(format!("{text:?} is not a duration such as 30s")),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration such as 30s, 250ms or 5m: {e}"))?,
    };
    if duration > MAX_DURATION {
        return Err(format!("{text} is too long (at most a year)"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_si_and_iec_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("512kib"), Ok(512 << 10), "units in any case");
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000), "GB is 10⁹ bytes");
        assert_eq!(parse_size("64 KB"), Ok(64_000));
        assert!(parse_size("12 parsecs").unwrap_err().contains("not a size"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1MiB").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("999999999999s").unwrap_err().contains("too long"));
        assert!(parse_duration("1e30").unwrap_err().contains("too long"));
    }
}
