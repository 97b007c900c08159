//! Obligations: what a permit policy asks the gateway to enforce beyond "allowed".
//!
//! They are written as Cedar annotations on `permit` policies and parsed when the policy
//! is validated, so a malformed one is refused when it is stored rather than ignored when
//! a request is evaluated. The crate only parses them; the gateway counts rates and spend
//! atomically in SQL, keyed by the window bucket that [`Window::bucket_start`] gives.

use std::fmt;
use std::str::FromStr;

/// Annotation: number of approvals a request needs before it runs (`"2"`).
pub const ANN_REQUIRES_APPROVALS: &str = "requires_approvals";
/// Annotation: the group whose members may approve (`"treasury"`); needs
/// [`ANN_REQUIRES_APPROVALS`] on the same policy.
pub const ANN_APPROVER_GROUP: &str = "approver_group";
/// Annotation: at most N requests per window (`"10/hour"`).
pub const ANN_RATE_LIMIT: &str = "rate_limit";
/// Annotation: at most N wei of transaction value per window (`"1000000000000000000/day"`).
pub const ANN_SPEND_LIMIT_WEI: &str = "spend_limit_wei";
/// Annotation: whose usage the policy's limits count (`"key"`, `"principal"` or
/// `"key,principal"`; default `"key"`).
pub const ANN_LIMIT_PER: &str = "limit_per";
/// Annotation: the policy's id, required on every policy.
pub const ANN_ID: &str = "id";
/// Annotation: free text for people; ignored by the engine.
pub const ANN_DESCRIPTION: &str = "description";

/// Every annotation the engine accepts. Anything else is refused, so that a misspelt
/// obligation (`@rate_limits`) cannot silently lift a limit.
pub const KNOWN_ANNOTATIONS: [&str; 7] = [
    ANN_ID,
    ANN_DESCRIPTION,
    ANN_REQUIRES_APPROVALS,
    ANN_APPROVER_GROUP,
    ANN_RATE_LIMIT,
    ANN_SPEND_LIMIT_WEI,
    ANN_LIMIT_PER,
];

/// Most approvals one policy may ask for; more is surely a typo.
pub const MAX_APPROVALS: u32 = 32;

/// Longest window a limit may use (366 days), so a bucket always fits the counters.
pub const MAX_WINDOW_SECS: u64 = 366 * 86_400;

/// Something the gateway must do before (or while) carrying out an allowed request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Obligation {
    /// Hold the request in `PENDING_APPROVAL` until `count` distinct approvers agree.
    /// `group: None` means any principal allowed to `approve` the key.
    RequireApprovals { count: u32, group: Option<String> },
    /// Allow at most `max` such requests per `window` bucket, counted `per`.
    RateLimit {
        max: u32,
        window: Window,
        per: LimitScope,
    },
    /// Allow at most `max_wei` of summed transaction value per `window` bucket, counted
    /// `per`.
    SpendLimit {
        max_wei: u128,
        window: Window,
        per: LimitScope,
    },
}

/// Whose requests one limit counts together. A limit on a treasury wallet is about the
/// key, whoever signs; a limit on a bot is about the principal, whichever key it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LimitScope {
    /// One counter per key, shared by every principal (the default).
    #[default]
    Key,
    /// One counter per principal, across every key it uses.
    Principal,
    /// One counter per (key, principal) pair.
    KeyAndPrincipal,
}

impl LimitScope {
    /// The annotation spelling, which [`LimitScope::parse`] reads back.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Key => "key",
            LimitScope::Principal => "principal",
            LimitScope::KeyAndPrincipal => "key,principal",
        }
    }

    pub fn parse(s: &str) -> Option<LimitScope> {
        match s.replace(' ', "").as_str() {
            "key" => Some(LimitScope::Key),
            "principal" => Some(LimitScope::Principal),
            "key,principal" | "principal,key" => Some(LimitScope::KeyAndPrincipal),
            _ => None,
        }
    }
}

/// An obligation with the policy it came from, so the gateway can key its counters by
/// policy and show which rule held a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyObligation {
    pub policy: String,
    pub obligation: Obligation,
}

/// Why a window string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("window is empty; expected e.g. \"hour\", \"15m\" or \"1d\"")]
    Empty,
    #[error(
        "unknown window unit {0:?}; expected s, m, h, d, w (or second, minute, hour, day, week)"
    )]
    UnknownUnit(String),
    #[error("window length {0:?} is not a positive whole number")]
    BadCount(String),
    #[error("window must be between 1 second and 366 days")]
    OutOfRange,
}

/// A tumbling window of fixed length, aligned to the unix epoch (UTC), except that
/// windows of whole weeks start on Monday 00:00 UTC. Fixed buckets (rather than a
/// sliding window) let the gateway count with one row per bucket and one atomic
/// `UPDATE ... SET n = n + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    secs: u64,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
const WEEK: u64 = 604_800;
/// 1970-01-05, the first Monday after the epoch.
const FIRST_MONDAY: i64 = 4 * 86_400;

impl Window {
    pub const MINUTE: Window = Window { secs: MINUTE };
    pub const HOUR: Window = Window { secs: HOUR };
    pub const DAY: Window = Window { secs: DAY };
    pub const WEEK: Window = Window { secs: WEEK };

    /// A window of `secs` seconds (1 s to 366 days).
    pub fn from_secs(secs: u64) -> Result<Window, WindowError> {
        if secs == 0 || secs > MAX_WINDOW_SECS {
            return Err(WindowError::OutOfRange);
        }
        Ok(Window { secs })
    }

    /// Parses `"hour"`, `"day"`, `"15m"`, `"6hours"`, `"2d"`, `"1w"`: an optional
    /// positive count followed by a unit, no spaces.
    pub fn parse(s: &str) -> Result<Window, WindowError> {
        if s.is_empty() {
            return Err(WindowError::Empty);
        }
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| WindowError::UnknownUnit(String::new()))?;
        let (count, unit) = s.split_at(split);
        let count: u64 = if count.is_empty() {
            1
        } else {
            match count.parse() {
                Ok(n) if n > 0 => n,
                _ => return Err(WindowError::BadCount(count.to_owned())),
            }
        };
        let unit_secs = match unit {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
            "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
            "d" | "day" | "days" => DAY,
            "w" | "week" | "weeks" => WEEK,
            other => return Err(WindowError::UnknownUnit(other.to_owned())),
        };
        let secs = count
            .checked_mul(unit_secs)
            .ok_or(WindowError::OutOfRange)?;
        Window::from_secs(secs)
    }

    /// The window's length in seconds.
    pub fn secs(self) -> u64 {
        self.secs
    }

    /// The start (unix seconds) of the bucket that contains `now`. Works for times
    /// before 1970 too; the next bucket starts at `bucket_start(now) + secs()`.
    pub fn bucket_start(self, now: i64) -> i64 {
        // secs <= MAX_WINDOW_SECS, far below i64::MAX.
        let len = i64::try_from(self.secs).unwrap_or(i64::MAX);
        let origin = if self.secs.is_multiple_of(WEEK) {
            FIRST_MONDAY
        } else {
            0
        };
        now - now.wrapping_sub(origin).rem_euclid(len)
    }
}

/// Free-function form of [`Window::bucket_start`], for callers that hold the window and
/// the clock separately.
pub fn bucket_start(window: Window, now: i64) -> i64 {
    window.bucket_start(now)
}

impl FromStr for Window {
    type Err = WindowError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Window::parse(s)
    }
}

/// Canonical short form that [`Window::parse`] reads back: `1h`, `15m`, `2w`.
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (len, unit) in [(WEEK, "w"), (DAY, "d"), (HOUR, "h"), (MINUTE, "m")] {
            if self.secs.is_multiple_of(len) {
                return write!(f, "{}{unit}", self.secs / len);
            }
        }
        write!(f, "{}s", self.secs)
    }
}

/// Parses `"<max>/<window>"` where max is a decimal integer (underscores allowed
/// between digits, as in `1_000`).
fn parse_limit(value: &str) -> Result<(u128, Window), String> {
    let (max, window) = value
        .split_once('/')
        .ok_or_else(|| "expected \"<max>/<window>\", e.g. \"10/hour\"".to_owned())?;
    let window = Window::parse(window).map_err(|e| e.to_string())?;
    let max = parse_decimal(max)?;
    Ok((max, window))
}

fn parse_decimal(s: &str) -> Result<u128, String> {
    let well_formed = !s.is_empty()
        && !s.starts_with('_')
        && !s.ends_with('_')
        && !s.contains("__")
        && s.chars().all(|c| c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(format!("{s:?} is not a whole decimal number"));
    }
    s.replace('_', "")
        .parse::<u128>()
        .map_err(|_| format!("{s:?} is too large"))
}

/// What is wrong with one annotation of one policy; [`crate::PolicyError::Annotation`]
/// adds the policy id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnnotationProblem {
    pub annotation: String,
    pub value: String,
    pub reason: String,
}

impl AnnotationProblem {
    fn new(annotation: &str, value: &str, reason: impl Into<String>) -> Self {
        AnnotationProblem {
            annotation: annotation.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Reads the obligations of one policy from its annotations. `is_permit` is false for
/// `forbid` policies, which may not carry obligations: a forbid never allows anything,
/// so there is nothing to attach them to.
pub(crate) fn obligations_from_annotations<'a>(
    annotations: impl Iterator<Item = (&'a str, &'a str)>,
    is_permit: bool,
) -> Result<Vec<Obligation>, AnnotationProblem> {
    let mut approvals: Option<u32> = None;
    let mut group: Option<String> = None;
    let mut per: Option<LimitScope> = None;
    let mut out = Vec::new();
    for (key, value) in annotations {
        if !KNOWN_ANNOTATIONS.contains(&key) {
            return Err(AnnotationProblem::new(
                key,
                value,
                format!(
                    "unknown annotation; known ones are @{}",
                    KNOWN_ANNOTATIONS.join(", @")
                ),
            ));
        }
        let is_obligation = key != ANN_ID && key != ANN_DESCRIPTION;
        if is_obligation && !is_permit {
            return Err(AnnotationProblem::new(
                key,
                value,
                "obligations belong on permit policies; a forbid never allows anything",
            ));
        }
        match key {
            ANN_REQUIRES_APPROVALS => {
                let count = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_APPROVALS).contains(n))
                    .ok_or_else(|| {
                        AnnotationProblem::new(
                            key,
                            value,
                            format!("expected a whole number from 1 to {MAX_APPROVALS}"),
                        )
                    })?;
                approvals = Some(count);
            }
            ANN_APPROVER_GROUP => {
                if !is_valid_name(value) {
                    return Err(AnnotationProblem::new(
                        key,
                        value,
                        "expected a group name of 1 to 128 characters without spaces or quotes",
                    ));
                }
                group = Some(value.to_owned());
            }
            ANN_RATE_LIMIT => {
                let (max, window) =
                    parse_limit(value).map_err(|r| AnnotationProblem::new(key, value, r))?;
                let max = u32::try_from(max).ok().filter(|m| *m > 0).ok_or_else(|| {
                    AnnotationProblem::new(
                        key,
                        value,
                        "the maximum must be from 1 to 4294967295 (use a forbid policy to block)",
                    )
                })?;
                out.push(Obligation::RateLimit {
                    max,
                    window,
                    per: LimitScope::Key,
                });
            }
            ANN_SPEND_LIMIT_WEI => {
                let (max_wei, window) =
                    parse_limit(value).map_err(|r| AnnotationProblem::new(key, value, r))?;
                out.push(Obligation::SpendLimit {
                    max_wei,
                    window,
                    per: LimitScope::Key,
                });
            }
            ANN_LIMIT_PER => {
                per = Some(LimitScope::parse(value).ok_or_else(|| {
                    AnnotationProblem::new(
                        key,
                        value,
                        "expected \"key\", \"principal\" or \"key,principal\"",
                    )
                })?);
            }
            _ => {}
        }
    }
    if let Some(scope) = per {
        let mut limited = false;
        for o in &mut out {
            if let Obligation::RateLimit { per, .. } | Obligation::SpendLimit { per, .. } = o {
                *per = scope;
                limited = true;
            }
        }
        if !limited {
            return Err(AnnotationProblem::new(
                ANN_LIMIT_PER,
                scope.as_str(),
                "needs @rate_limit or @spend_limit_wei on the same policy",
            ));
        }
    }
    match (approvals, group) {
        (Some(count), group) => out.insert(0, Obligation::RequireApprovals { count, group }),
        (None, Some(value)) => {
            return Err(AnnotationProblem::new(
                ANN_APPROVER_GROUP,
                &value,
                "needs @requires_approvals(\"N\") on the same policy",
            ));
        }
        (None, None) => {}
    }
    Ok(out)
}

/// Names of groups, roles and policies: printable, no spaces or quotes, at most 128.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\'' && c != '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(anns: &[(&str, &str)]) -> Result<Vec<Obligation>, AnnotationProblem> {
        obligations_from_annotations(anns.iter().copied(), true)
    }

    #[test]
    fn window_parses_names_and_counts() {
        assert_eq!(Window::parse("hour"), Ok(Window::HOUR));
        assert_eq!(Window::parse("day"), Ok(Window::DAY));
        assert_eq!(Window::parse("minute"), Ok(Window::MINUTE));
        assert_eq!(Window::parse("week"), Ok(Window::WEEK));
        assert_eq!(Window::parse("1h").map(Window::secs), Ok(3600));
        assert_eq!(Window::parse("15m").map(Window::secs), Ok(900));
        assert_eq!(Window::parse("6hours").map(Window::secs), Ok(21_600));
        assert_eq!(Window::parse("30s").map(Window::secs), Ok(30));
        assert_eq!(Window::parse("2w").map(Window::secs), Ok(1_209_600));
        assert_eq!("1d".parse::<Window>(), Ok(Window::DAY));
    }

    #[test]
    fn window_rejects_garbage() {
        assert_eq!(Window::parse(""), Err(WindowError::Empty));
        assert_eq!(
            Window::parse("fortnight"),
            Err(WindowError::UnknownUnit("fortnight".into()))
        );
        assert_eq!(
            Window::parse("10"),
            Err(WindowError::UnknownUnit("".into()))
        );
        assert_eq!(Window::parse("0h"), Err(WindowError::BadCount("0".into())));
        assert_eq!(
            Window::parse("1 h"),
            Err(WindowError::UnknownUnit(" h".into()))
        );
        assert_eq!(Window::parse("367d"), Err(WindowError::OutOfRange));
        assert_eq!(
            Window::parse("99999999999999999999h"),
            Err(WindowError::BadCount("99999999999999999999".into()))
        );
        assert_eq!(Window::from_secs(0), Err(WindowError::OutOfRange));
    }

    #[test]
    fn window_display_round_trips() {
        for s in ["1h", "15m", "1d", "2w", "45s", "90m", "36h"] {
            let w = Window::parse(s).unwrap();
            assert_eq!(w.to_string(), s);
            assert_eq!(Window::parse(&w.to_string()), Ok(w));
        }
        assert_eq!(Window::parse("60m").unwrap().to_string(), "1h");
    }

    #[test]
    fn bucket_start_aligns_to_utc_boundaries() {
        // 2024-03-14T15:09:26Z is a Thursday.
        let now = 1_710_428_966;
        assert_eq!(Window::HOUR.bucket_start(now), 1_710_428_400); // 15:00:00
        assert_eq!(Window::DAY.bucket_start(now), 1_710_374_400); // 00:00:00
        assert_eq!(Window::MINUTE.bucket_start(now), 1_710_428_940);
        // The Monday of that week, 2024-03-11T00:00:00Z.
        assert_eq!(Window::WEEK.bucket_start(now), 1_710_115_200);
        assert_eq!(
            bucket_start(Window::parse("15m").unwrap(), now),
            1_710_428_400
        );
        // A boundary starts its own bucket.
        assert_eq!(Window::HOUR.bucket_start(1_710_428_400), 1_710_428_400);
        assert_eq!(Window::HOUR.bucket_start(1_710_428_399), 1_710_424_800);
    }

    #[test]
    fn bucket_start_is_consistent_for_any_time() {
        for w in ["1s", "7m", "1h", "5h", "1d", "1w", "3w", "366d"] {
            let w = Window::parse(w).unwrap();
            let len = i64::try_from(w.secs()).unwrap();
            for now in [
                -10_000_000_i64,
                -1,
                0,
                1,
                345_600,
                1_710_428_966,
                4_102_444_800,
            ] {
                let start = w.bucket_start(now);
                assert!(start <= now && now < start + len, "{w} at {now}");
                assert_eq!(w.bucket_start(start), start);
                assert_eq!(w.bucket_start(start + len), start + len);
            }
        }
        // Epoch Thursday belongs to the week that began Monday 1969-12-29.
        assert_eq!(Window::WEEK.bucket_start(0), -3 * 86_400);
    }

    #[test]
    fn limit_scope_applies_to_the_policys_limits() {
        let got = parse(&[
            ("rate_limit", "10/hour"),
            ("spend_limit_wei", "5/day"),
            ("limit_per", "key, principal"),
        ])
        .unwrap();
        assert_eq!(
            got,
            vec![
                Obligation::RateLimit {
                    max: 10,
                    window: Window::HOUR,
                    per: LimitScope::KeyAndPrincipal
                },
                Obligation::SpendLimit {
                    max_wei: 5,
                    window: Window::DAY,
                    per: LimitScope::KeyAndPrincipal
                },
            ]
        );
        let got = parse(&[("limit_per", "principal"), ("rate_limit", "1/m")]).unwrap();
        assert!(
            matches!(
                got[..],
                [Obligation::RateLimit {
                    per: LimitScope::Principal,
                    ..
                }]
            ),
            "{got:?}"
        );
        let e = parse(&[("limit_per", "key")]).unwrap_err();
        assert!(e.reason.contains("needs @rate_limit"), "{e:?}");
        let e = parse(&[("rate_limit", "1/m"), ("limit_per", "everyone")]).unwrap_err();
        assert_eq!(e.annotation, "limit_per");
        for s in [
            LimitScope::Key,
            LimitScope::Principal,
            LimitScope::KeyAndPrincipal,
        ] {
            assert_eq!(LimitScope::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn good_annotations_become_obligations() {
        let got = parse(&[
            ("id", "treasury-tx"),
            ("description", "big transfers need two treasury approvals"),
            ("rate_limit", "10/hour"),
            ("spend_limit_wei", "1_000_000_000_000_000_000/day"),
            ("approver_group", "treasury"),
            ("requires_approvals", "2"),
        ])
        .unwrap();
        assert_eq!(
            got,
            vec![
                Obligation::RequireApprovals {
                    count: 2,
                    group: Some("treasury".into())
                },
                Obligation::RateLimit {
                    max: 10,
                    window: Window::HOUR,
                    per: LimitScope::Key
                },
                Obligation::SpendLimit {
                    max_wei: 1_000_000_000_000_000_000,
                    window: Window::DAY,
                    per: LimitScope::Key
                },
            ]
        );
        assert_eq!(
            parse(&[("requires_approvals", "1")]).unwrap(),
            vec![Obligation::RequireApprovals {
                count: 1,
                group: None
            }]
        );
        // Spend limits go beyond u64.
        assert_eq!(
            parse(&[("spend_limit_wei", "100000000000000000000000/1w")]).unwrap(),
            vec![Obligation::SpendLimit {
                max_wei: 100_000_000_000_000_000_000_000,
                window: Window::WEEK,
                per: LimitScope::Key
            }]
        );
        assert_eq!(parse(&[("id", "x")]).unwrap(), vec![]);
    }

    #[test]
    fn malformed_annotations_are_refused_with_a_reason() {
        let cases: &[(&str, &str, &str)] = &[
            ("requires_approvals", "two", "whole number from 1 to 32"),
            ("requires_approvals", "0", "whole number from 1 to 32"),
            ("requires_approvals", "33", "whole number from 1 to 32"),
            ("requires_approvals", "", "whole number"),
            ("approver_group", "", "group name"),
            ("approver_group", "tre asury", "group name"),
            ("rate_limit", "10", "expected \"<max>/<window>\""),
            (
                "rate_limit",
                "10/fortnight",
                "unknown window unit \"fortnight\"",
            ),
            ("rate_limit", "ten/hour", "not a whole decimal number"),
            ("rate_limit", "0/hour", "from 1 to"),
            ("rate_limit", "-1/hour", "not a whole decimal number"),
            ("rate_limit", "5000000000/hour", "from 1 to"),
            ("rate_limit", "10/0h", "not a positive whole number"),
            ("spend_limit_wei", "1e18/day", "not a whole decimal number"),
            ("spend_limit_wei", "1_/day", "not a whole decimal number"),
            (
                "spend_limit_wei",
                "999999999999999999999999999999999999999999/day",
                "too large",
            ),
            (
                "spend_limit_wei",
                "100/400d",
                "between 1 second and 366 days",
            ),
            ("rate_limits", "10/hour", "unknown annotation"),
        ];
        for (key, value, reason) in cases {
            let err = parse(&[(key, value)]).unwrap_err();
            assert_eq!(&err.annotation, key, "{key}={value}");
            assert_eq!(&err.value, value);
            assert!(
                err.reason.contains(reason),
                "{key}={value}: {:?} lacks {reason:?}",
                err.reason
            );
        }
        let err = parse(&[("approver_group", "treasury")]).unwrap_err();
        assert!(err.reason.contains("needs @requires_approvals"));
        let err = obligations_from_annotations([("rate_limit", "10/hour")].into_iter(), false)
            .unwrap_err();
        assert!(err.reason.contains("permit policies"));
        // id and description are fine on a forbid.
        assert_eq!(
            obligations_from_annotations([("id", "f"), ("description", "d")].into_iter(), false),
            Ok(vec![])
        );
    }
}
