//! Time: storage keeps UTC in RFC 3339; citizens read German local time.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};

tokio::task_local! {
    /// The story's time while the demo seeds its history; unset everywhere else.
    static CLOCK: std::cell::Cell<Option<DateTime<Utc>>>;
}

/// Now: the wall clock, or inside [`with_clock`] the time last set with [`set_clock`]. Every
/// write (its rows and its journal entries) takes its time from here, so the demo can replay a
/// month of history through the same write operations. The override is task-local: it cannot
/// leak into requests or other tasks.
pub fn now() -> DateTime<Utc> {
    CLOCK.try_with(|c| c.get()).ok().flatten().unwrap_or_else(Utc::now)
}

pub fn now_rfc3339() -> String {
    format_rfc3339(now())
}

/// Runs `f` with a settable clock (initially the wall clock).
pub async fn with_clock<F: std::future::Future>(f: F) -> F::Output {
    CLOCK.scope(std::cell::Cell::new(None), f).await
}

/// Sets the clock of the surrounding [`with_clock`]; outside one it does nothing.
pub fn set_clock(t: DateTime<Utc>) {
    let _ = CLOCK.try_with(|c| c.set(Some(t)));
}

pub fn format_rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Offset of German civil time (CET/CEST) at a UTC instant. The EU rule since 1996: summer time
/// from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of October.
/// Written out here because it is all we need of a time-zone database.
pub fn berlin_offset_hours(t: DateTime<Utc>) -> i64 {
    let year = t.year();
    let start = last_sunday(year, 3).and_hms_opt(1, 0, 0).unwrap().and_utc();
    let end = last_sunday(year, 10).and_hms_opt(1, 0, 0).unwrap().and_utc();
    if t >= start && t < end { 2 } else { 1 }
}

fn last_sunday(year: i32, month: u32) -> NaiveDate {
    let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap() - Duration::days(1);
    while d.weekday() != Weekday::Sun {
        d -= Duration::days(1);
    }
    d
}

/// "29.11.2026, 09:15 Uhr" style German local time (the words come from the catalogue).
pub fn berlin_local(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    (t + Duration::hours(berlin_offset_hours(t))).naive_utc()
}

/// An RFC 3339 time as German local time in a chrono `format` (a language's, from its catalogue).
pub fn local_datetime(rfc3339: &str, format: &str) -> String {
    match parse_rfc3339(rfc3339) {
        Some(t) => berlin_local(t).format(format).to_string(),
        None => rfc3339.to_string(),
    }
}

/// A date, or the German local date of an RFC 3339 time, in a chrono `format`.
pub fn local_date(date: &str, format: &str) -> String {
    match parse_date(date) {
        Some(d) => d.format(format).to_string(),
        None => match parse_rfc3339(date) {
            Some(t) => berlin_local(t).format(format).to_string(),
            None => date.to_string(),
        },
    }
}

pub fn today_utc() -> NaiveDate {
    Utc::now().date_naive()
}

#[cfg(test)]
pub fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    chrono::TimeZone::with_ymd_and_hms(&Utc, y, m, d, h, min, 0).unwrap()
}

/// How long to wait before the next try after `failures` failures: `first`, doubling with every
/// further failure up to `max`, and up to a fifth more at random, so that what failed together
/// (mails to one server, webhooks, mirrors) does not retry together.
pub fn backoff(first: std::time::Duration, failures: u32, max: std::time::Duration) -> std::time::Duration {
    let base = first.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(max);
    // A fresh RandomState is seeded at random: enough randomness for spreading retries.
    let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), failures);
    base.mul_f64(1.0 + (random % 1000) as f64 / 1000.0 * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summer_and_winter_time() {
        assert_eq!(berlin_offset_hours(utc(2026, 1, 15, 12, 0)), 1);
        assert_eq!(berlin_offset_hours(utc(2026, 7, 15, 12, 0)), 2);
        // 2026: summer time starts 29 March 01:00 UTC and ends 25 October 01:00 UTC.
        assert_eq!(berlin_offset_hours(utc(2026, 3, 29, 0, 59)), 1);
        assert_eq!(berlin_offset_hours(utc(2026, 3, 29, 1, 0)), 2);
        assert_eq!(berlin_offset_hours(utc(2026, 10, 25, 0, 59)), 2);
        assert_eq!(berlin_offset_hours(utc(2026, 10, 25, 1, 0)), 1);
    }

    #[test]
    fn german_formats() {
        assert_eq!(local_datetime("2023-12-12T08:30:00Z", "%d.%m.%Y, %H:%M"), "12.12.2023, 09:30");
        assert_eq!(local_date("2024-01-03", "%d.%m.%Y"), "03.01.2024");
        assert_eq!(local_date("2023-12-12T23:30:00Z", "%d.%m.%Y"), "13.12.2023");
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_with_at_most_a_fifth_more() {
        use std::time::Duration;
        let (first, max) = (Duration::from_secs(10), Duration::from_secs(3600));
        for (failures, base) in [(1, 10), (2, 20), (3, 40), (9, 2560), (10, 3600), (30, 3600)] {
            let wait = backoff(first, failures, max);
            let base = Duration::from_secs(base);
            assert!(wait >= base && wait <= base.mul_f64(1.2), "{failures}: {wait:?}");
        }
    }
}
