//! Time as Mailroom stores and shows it: integer milliseconds since the Unix epoch in the
//! database (the one type SQLite and PostgreSQL agree on), RFC 3339 UTC in JSON.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `2026-03-16T10:30:00Z` (second precision, as the seeds show it).
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Milliseconds at the start of the UTC day that contains `ms`. Daily quotas reset then.
pub fn utc_day_start_ms(ms: i64) -> i64 {
    ms - ms.rem_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_seeds() {
        assert_eq!(rfc3339(1_773_657_000_000), "2026-03-16T10:30:00Z");
    }

    #[test]
    fn day_start() {
        let ms = 1_773_657_000_123;
        let start = utc_day_start_ms(ms);
        assert_eq!(rfc3339(start), "2026-03-16T00:00:00Z");
    }
}
