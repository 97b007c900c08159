//! Millisecond UTC timestamps with exactly one RFC 3339 spelling.

use std::fmt;
use std::str::FromStr;

/// 9999-12-31T23:59:59.999Z, the last instant with a four-digit year.
const MAX_MILLIS: i64 = 253_402_300_799_999;
const MILLIS_PER_DAY: i64 = 86_400_000;
/// Length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const RFC3339_LEN: usize = 24;

/// A point in time (UTC) in whole milliseconds since the Unix epoch.
///
/// The caller supplies it from its injected clock; this crate never reads the wall clock.
/// The range is 1970-01-01 to 9999-12-31 so that every value has one spelling,
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, and an exported log re-exports byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a time was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("time {0} ms since the epoch is outside 1970-01-01..=9999-12-31")]
    OutOfRange(i64),
    #[error("time is not RFC 3339 UTC with milliseconds (YYYY-MM-DDTHH:MM:SS.mmmZ)")]
    Malformed,
}

impl Timestamp {
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub fn from_unix_millis(millis: i64) -> Result<Self, TimeError> {
        if (0..=MAX_MILLIS).contains(&millis) {
            Ok(Self(millis))
        } else {
            Err(TimeError::OutOfRange(millis))
        }
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// Accepts only the spelling [`Display`](fmt::Display) produces, so a parsed time
    /// always re-exports to the same text (no offsets, no other precisions).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        let b = text.as_bytes();
        if b.len() != RFC3339_LEN {
            return Err(TimeError::Malformed);
        }
        let shape_ok = b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
        if !shape_ok {
            return Err(TimeError::Malformed);
        }
        let num = |from: usize, to: usize| {
            b[from..to]
                .iter()
                .fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0'))
        };
        let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
        let (hour, minute, second, milli) = (num(11, 13), num(14, 16), num(17, 19), num(20, 23));
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(TimeError::Malformed);
        }
        let millis = days_from_civil(year, month, day) * MILLIS_PER_DAY
            + ((hour * 60 + minute) * 60 + second) * 1000
            + milli;
        Self::from_unix_millis(millis)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.0.div_euclid(MILLIS_PER_DAY));
        let in_day = self.0.rem_euclid(MILLIS_PER_DAY);
        let hour = in_day / 3_600_000;
        let minute = in_day / 60_000 % 60;
        let second = in_day / 1000 % 60;
        let milli = in_day % 1000;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
        )
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(s)
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Proleptic Gregorian calendar arithmetic on a year that starts in March, so the leap day
// is the last day of its year. A 400-year cycle has 146 097 days; 1970-03-01 is day
// 719 468 counted from 0000-03-01.
const DAYS_0000_03_01_TO_EPOCH: i64 = 719_468;
const DAYS_PER_400_YEARS: i64 = 146_097;

/// Days since 1970-01-01 of a calendar date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let march_year = if month <= 2 { year - 1 } else { year };
    let cycle = march_year.div_euclid(400);
    let year_of_cycle = march_year - cycle * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_cycle = year_of_cycle * 365 + year_of_cycle / 4 - year_of_cycle / 100 + day_of_year;
    cycle * DAYS_PER_400_YEARS + day_of_cycle - DAYS_0000_03_01_TO_EPOCH
}

/// Calendar date of a count of days since 1970-01-01; the inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + DAYS_0000_03_01_TO_EPOCH;
    let cycle = shifted.div_euclid(DAYS_PER_400_YEARS);
    let day_of_cycle = shifted - cycle * DAYS_PER_400_YEARS;
    let year_of_cycle =
        (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365;
    let day_of_year =
        day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_cycle + cycle * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants_render_and_parse() {
        for (millis, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1, "1970-01-01T00:00:00.001Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (1_735_689_600_000, "2025-01-01T00:00:00.000Z"),
            (MAX_MILLIS, "9999-12-31T23:59:59.999Z"),
        ] {
            let t = Timestamp::from_unix_millis(millis).unwrap();
            assert_eq!(t.to_string(), text);
            assert_eq!(Timestamp::parse_rfc3339(text).unwrap(), t);
        }
    }

    #[test]
    fn out_of_range_millis_are_refused() {
        assert_eq!(
            Timestamp::from_unix_millis(-1),
            Err(TimeError::OutOfRange(-1))
        );
        assert!(Timestamp::from_unix_millis(MAX_MILLIS + 1).is_err());
        assert!(Timestamp::from_unix_millis(i64::MIN).is_err());
    }

    #[test]
    fn non_canonical_spellings_are_refused() {
        for text in [
            "",
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:00.0000Z",
            "1970-01-01t00:00:00.000Z",
            "1970-01-01T00:00:00.000z",
            "1970-01-01T00:00:00.000+00:00",
            "1970-01-01 00:00:00.000Z",
            "2001-02-29T00:00:00.000Z",
            "1900-02-29T00:00:00.000Z",
            "2024-13-01T00:00:00.000Z",
            "2024-00-01T00:00:00.000Z",
            "2024-04-31T00:00:00.000Z",
            "2024-01-00T00:00:00.000Z",
            "2024-01-01T24:00:00.000Z",
            "2024-01-01T00:60:00.000Z",
            "2016-12-31T23:59:60.000Z",
            "+024-01-01T00:00:00.000Z",
            "２024-01-01T00:00:00.000Z",
        ] {
            assert!(Timestamp::parse_rfc3339(text).is_err(), "{text}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("1969-12-31T23:59:59.999Z"),
            Err(TimeError::OutOfRange(-1))
        );
    }

    proptest! {
        #[test]
        fn every_instant_round_trips(millis in 0..=MAX_MILLIS) {
            let t = Timestamp::from_unix_millis(millis).unwrap();
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
        }

        #[test]
        fn calendar_agrees_with_the_time_crate(millis in 0..=MAX_MILLIS) {
            let ours = Timestamp::from_unix_millis(millis).unwrap().to_string();
            let theirs = time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(millis) * 1_000_000,
            )
            .unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                theirs.year(),
                u8::from(theirs.month()),
                theirs.day(),
                theirs.hour(),
                theirs.minute(),
                theirs.second(),
                theirs.millisecond(),
            );
            prop_assert_eq!(ours, expected);
        }
    }
}
