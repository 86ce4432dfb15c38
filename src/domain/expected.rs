//! When a service is expected back, as precisely as anyone can honestly say: a day, a calendar
//! week, the first or second half of a month ("ab Mitte Dezember"), a month, or "noch nicht
//! absehbar". Stored as text in one canonical form per precision, so that the statement's
//! `expected_return` column, the journal and the API keep one string:
//!
//! | precision | stored | earliest – latest |
//! | --- | --- | --- |
//! | day | `2026-12-14` | that day |
//! | week | `2026-W51` (ISO 8601 week) | Monday – Sunday |
//! | first half of a month | `2026-12-H1` | 1st – 15th |
//! | second half of a month | `2026-12-H2` | 16th – last day |
//! | month | `2026-12` | 1st – last day |
//! | not foreseeable | `unknown` | none |

use chrono::{Datelike, Months, NaiveDate, Weekday};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    Day(NaiveDate),
    /// The Monday of the ISO week.
    Week(NaiveDate),
    /// The first of the month.
    FirstHalf(NaiveDate),
    /// The first of the month.
    SecondHalf(NaiveDate),
    /// The first of the month.
    Month(NaiveDate),
    NotForeseeable,
}

/// The stored form of "noch nicht absehbar".
pub const NOT_FORESEEABLE: &str = "unknown";

/// The precisions, as the desk's form and the API name them.
pub const PRECISIONS: [&str; 6] = ["day", "week", "first_half", "second_half", "month", "not_foreseeable"];

fn first_of_month(s: &str) -> Option<NaiveDate> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)
}

fn last_of_month(first: NaiveDate) -> NaiveDate {
    first.checked_add_months(Months::new(1)).and_then(|d| d.pred_opt()).unwrap_or(first)
}

impl Expected {
    /// Any of the stored forms; `None` for anything else (also for the empty "not stated").
    pub fn parse(s: &str) -> Option<Expected> {
        let s = s.trim();
        if s == NOT_FORESEEABLE {
            return Some(Expected::NotForeseeable);
        }
        if let Some(day) = crate::domain::time::parse_date(s).filter(|_| s.len() == 10) {
            return Some(Expected::Day(day));
        }
        if let Some((year, week)) = s.split_once("-W") {
            if year.len() != 4 || week.len() != 2 {
                return None;
            }
            return NaiveDate::from_isoywd_opt(year.parse().ok()?, week.parse().ok()?, Weekday::Mon)
                .map(Expected::Week);
        }
        if let Some(month) = s.strip_suffix("-H1") {
            return first_of_month(month).map(Expected::FirstHalf);
        }
        if let Some(month) = s.strip_suffix("-H2") {
            return first_of_month(month).map(Expected::SecondHalf);
        }
        first_of_month(s).map(Expected::Month)
    }

    /// The period of `precision` that holds `day` (the desk's form and the demo: a precision and
    /// a day). "Not foreseeable" needs no day; every other precision does.
    pub fn around(precision: &str, day: Option<NaiveDate>) -> Option<Expected> {
        if precision == "not_foreseeable" {
            return Some(Expected::NotForeseeable);
        }
        let day = day?;
        let first = day.with_day(1)?;
        Some(match precision {
            "day" => Expected::Day(day),
            "week" => {
                Expected::Week(NaiveDate::from_isoywd_opt(day.iso_week().year(), day.iso_week().week(), Weekday::Mon)?)
            }
            "first_half" => Expected::FirstHalf(first),
            "second_half" => Expected::SecondHalf(first),
            "month" => Expected::Month(first),
            _ => return None,
        })
    }

    /// The stored form.
    pub fn canonical(&self) -> String {
        match self {
            Expected::Day(d) => d.format("%Y-%m-%d").to_string(),
            Expected::Week(monday) => format!("{}-W{:02}", monday.iso_week().year(), monday.iso_week().week()),
            Expected::FirstHalf(d) => d.format("%Y-%m-H1").to_string(),
            Expected::SecondHalf(d) => d.format("%Y-%m-H2").to_string(),
            Expected::Month(d) => d.format("%Y-%m").to_string(),
            Expected::NotForeseeable => NOT_FORESEEABLE.to_string(),
        }
    }

    pub fn precision(&self) -> &'static str {
        match self {
            Expected::Day(_) => "day",
            Expected::Week(_) => "week",
            Expected::FirstHalf(_) => "first_half",
            Expected::SecondHalf(_) => "second_half",
            Expected::Month(_) => "month",
            Expected::NotForeseeable => "not_foreseeable",
        }
    }

    /// The first and the last day it may be, `None` when it is not foreseeable.
    pub fn span(&self) -> Option<(NaiveDate, NaiveDate)> {
        match *self {
            Expected::Day(d) => Some((d, d)),
            Expected::Week(monday) => Some((monday, monday + chrono::Days::new(6))),
            Expected::FirstHalf(first) => Some((first, first.with_day(15)?)),
            Expected::SecondHalf(first) => Some((first.with_day(16)?, last_of_month(first))),
            Expected::Month(first) => Some((first, last_of_month(first))),
            Expected::NotForeseeable => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn every_stored_form_parses_back_to_itself_with_its_span() {
        for (stored, span) in [
            ("2026-12-14", Some((d(2026, 12, 14), d(2026, 12, 14)))),
            ("2026-W51", Some((d(2026, 12, 14), d(2026, 12, 20)))),
            ("2026-W53", Some((d(2026, 12, 28), d(2027, 1, 3)))),
            ("2026-12-H1", Some((d(2026, 12, 1), d(2026, 12, 15)))),
            ("2027-02-H2", Some((d(2027, 2, 16), d(2027, 2, 28)))),
            ("2028-02", Some((d(2028, 2, 1), d(2028, 2, 29)))),
            ("unknown", None),
        ] {
            let e = Expected::parse(stored).unwrap_or_else(|| panic!("{stored}"));
            assert_eq!(e.canonical(), stored);
            assert_eq!(e.span(), span, "{stored}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "2026-13",
            "2026-12-32",
            "2026-W54",
            "2025-W53",
            "2026-W5",
            "26-12",
            "2026-12-H3",
            "Mitte Dezember",
            "2026-12-14T00:00:00Z",
        ] {
            assert_eq!(Expected::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_desk_picks_the_period_around_a_day() {
        let day = d(2026, 12, 17);
        let stored: Vec<String> =
            PRECISIONS.iter().map(|p| Expected::around(p, Some(day)).unwrap().canonical()).collect();
        assert_eq!(stored, ["2026-12-17", "2026-W51", "2026-12-H1", "2026-12-H2", "2026-12", "unknown"]);
        assert_eq!(Expected::around("week", Some(d(2027, 1, 1))).unwrap().canonical(), "2026-W53");
        assert_eq!(Expected::around("soon", Some(day)), None);
        assert_eq!(Expected::around("not_foreseeable", None), Some(Expected::NotForeseeable));
        assert_eq!(Expected::around("month", None), None, "a month needs a day in it");
    }
}
