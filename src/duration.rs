//! The one duration format of flags, chart values and CRD fields: `100ms`, `30s`, `10m`, `1h`,
//! or units together (`1h30m`), as jiff's friendly format reads them; a bare number is seconds.

use std::time::Duration;

/// The CRD pattern of a duration field (the same format, checked at admission).
pub const PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(seconds) = s.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let parsed: jiff::SignedDuration = s
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (use e.g. 500ms, 30s, 10m, 1h or 1h30m)"))?;
    Duration::try_from(parsed).map_err(|_| format!("a duration cannot be negative: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_unit_up_to_hours_and_refuses_the_rest() {
        let secs = Duration::from_secs;
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("30s"), Ok(secs(30)));
        assert_eq!(parse("30"), Ok(secs(30)));
        assert_eq!(parse("10m"), Ok(secs(600)));
        assert_eq!(parse("1h"), Ok(secs(3600)));
        assert_eq!(parse("1h30m"), Ok(secs(5400)));
        for bad in ["", "ten", "5 parsecs", "-1s", "1x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
