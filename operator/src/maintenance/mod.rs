//! Maintenance-window math: a pure module with no I/O and no clock of its own.
//!
//! A tenant declares one weekly window (`day`, `start` "HH:MM", `duration` ≤ 24h, IANA `timeZone`).
//! The reconciler asks two questions of it at an instant it supplies: is the window open now, and
//! when does the next one open and close. Everything here takes `now` as an argument so the
//! controller can inject a clock and tests never wait.
//!
//! Semantics, chosen to match what an admin reading the YAML expects:
//! - `start` is wall-clock time in `timeZone` on `day`. `duration` is *elapsed* time, so a 4h window
//!   that spans a DST change still lasts 4 real hours (a restart budget is about real time).
//! - Start in a DST gap (spring forward, local time does not exist): the window opens at the same
//!   instant the skipped wall-clock time would have had with the pre-transition offset, i.e. it is
//!   pushed forward by the length of the gap (02:30 in Berlin on the spring-forward Sunday opens at
//!   03:30 CEST). This is what `java.time` and RFC 5545 do, and it never skips a week.
//! - Start in a DST overlap (fall back, local time happens twice): the earlier instant wins, so
//!   the window opens as early as the admin could have meant.
//! - Windows may cross midnight and the week boundary (Sunday 23:00 for 3h closes Monday 02:00).
//! - The interval is half-open: open ⇔ `start <= now < end`.
//!
//! Prior art: Zalando's postgres-operator has weekly windows but compares "HH:MM" strings in the
//! pod's time zone and forbids crossing midnight; CloudNativePG has none (issues #14, #9330).

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use std::fmt;

/// Longest window we accept: longer windows would make consecutive weekly windows merge across DST.
pub(crate) const MAX_DURATION: Duration = Duration::hours(24);

/// Why a maintenance window could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The day is not an English weekday name.
    #[error("invalid day {0:?}: expected Monday..Sunday")]
    Day(String),
    /// The start is not a 24h "HH:MM" time.
    #[error("invalid start {0:?}: expected HH:MM (24h)")]
    Start(String),
    /// The duration does not parse or is out of range.
    #[error("invalid duration {0:?}: expected e.g. 4h, 90m, 1h30m, greater than 0 and at most 24h")]
    Duration(String),
    /// The time zone is not in the IANA database.
    #[error("invalid time zone {0:?}: expected an IANA name such as Europe/Berlin or UTC")]
    TimeZone(String),
}

/// One concrete occurrence of a window, as absolute instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Occurrence {
    /// First instant inside the window.
    pub start: DateTime<Utc>,
    /// First instant after the window (exclusive).
    pub end: DateTime<Utc>,
}

impl Occurrence {
    /// Whether `now` lies in `[start, end)`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.start <= now && now < self.end
    }
}

/// Where `now` stands relative to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// The window is open: changes may be applied until `current.end`.
    Open {
        /// The occurrence that contains `now`.
        current: Occurrence,
    },
    /// The window is closed; `next` is the first occurrence that opens after `now`.
    Closed {
        /// The next occurrence.
        next: Occurrence,
    },
}

impl WindowState {
    /// Whether the window is open.
    pub fn is_open(&self) -> bool {
        matches!(self, WindowState::Open { .. })
    }

    /// The occurrence that is open now, or else the next one.
    pub fn occurrence(&self) -> Occurrence {
        match *self {
            WindowState::Open { current } => current,
            WindowState::Closed { next } => next,
        }
    }
}

/// A validated weekly maintenance window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyWindow {
    day: Weekday,
    start: NaiveTime,
    duration: Duration,
    tz: Tz,
}

impl fmt::Display for WeeklyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {} for {}m ({})",
            self.day,
            self.start.format("%H:%M"),
            self.duration.num_minutes(),
            self.tz.name()
        )
    }
}

impl WeeklyWindow {
    /// Builds a window from already-typed parts.
    pub fn new(day: Weekday, start: NaiveTime, duration: Duration, tz: Tz) -> Result<Self, Error> {
        if duration <= Duration::zero() || duration > MAX_DURATION {
            return Err(Error::Duration(format!("{}s", duration.num_seconds())));
        }
        Ok(Self {
            day,
            start,
            duration,
            tz,
        })
    }

    /// Parses the four strings of the CRD (`day`, `start`, `duration`, `timeZone`).
    pub fn parse(day: &str, start: &str, duration: &str, time_zone: &str) -> Result<Self, Error> {
        let day = parse_day(day)?;
        let start = parse_start(start)?;
        let dur = parse_duration(duration)?;
        let tz: Tz = time_zone
            .parse()
            .map_err(|_| Error::TimeZone(time_zone.to_string()))?;
        Self::new(day, start, dur, tz).map_err(|_| Error::Duration(duration.to_string()))
    }

    /// The occurrence whose start is on local date `date` (which must be a `day`).
    fn occurrence_on(&self, date: NaiveDate) -> Occurrence {
        let start = resolve_local(self.tz, date.and_time(self.start));
        Occurrence {
            start,
            end: start + self.duration,
        }
    }

    /// Occurrences whose local start date is within ±8 days of `now`'s local date, in order.
    /// Windows last at most 24h and repeat weekly, so one of these contains `now` if any does,
    /// and the next one after `now` is among them.
    fn around(&self, now: DateTime<Utc>) -> impl Iterator<Item = Occurrence> + '_ {
        let today = now.with_timezone(&self.tz).date_naive();
        (-8..=8)
            .filter_map(move |d| today.checked_add_signed(Duration::days(d)))
            .filter(|d| d.weekday() == self.day)
            .map(|d| self.occurrence_on(d))
    }

    /// Where `now` stands: inside an occurrence, or before the next one.
    pub fn state_at(&self, now: DateTime<Utc>) -> WindowState {
        let mut next: Option<Occurrence> = None;
        for occ in self.around(now) {
            if occ.contains(now) {
                return WindowState::Open { current: occ };
            }
            if occ.start > now && next.is_none_or(|n| occ.start < n.start) {
                next = Some(occ);
            }
        }
        // Unreachable in practice (±8 days always holds two occurrences); fall back to a week on.
        let next = next.unwrap_or_else(|| {
            let d = now.with_timezone(&self.tz).date_naive() + Duration::days(7);
            self.occurrence_on(d)
        });
        WindowState::Closed { next }
    }
}

/// Maps a local wall-clock time to an instant, with the gap/overlap rules of the module docs.
pub(crate) fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earliest, _) => earliest.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: use the offset in force before the transition. A day earlier is always
            // before it (no zone changes offset twice in 24h), and `local - offset_before` lands
            // after the transition, shifted forward by exactly the gap.
            let before = tz
                .offset_from_utc_datetime(&(local - Duration::days(1)))
                .fix()
                .local_minus_utc();
            (local - Duration::seconds(i64::from(before))).and_utc()
        }
    }
}

/// Parses an English weekday name, case-insensitive, full or three-letter.
pub(crate) fn parse_day(s: &str) -> Result<Weekday, Error> {
    let l = s.trim().to_ascii_lowercase();
    let d = match l.as_str() {
        "monday" | "mon" => Weekday::Mon,
        "tuesday" | "tue" => Weekday::Tue,
        "wednesday" | "wed" => Weekday::Wed,
        "thursday" | "thu" => Weekday::Thu,
        "friday" | "fri" => Weekday::Fri,
        "saturday" | "sat" => Weekday::Sat,
        "sunday" | "sun" => Weekday::Sun,
        _ => return Err(Error::Day(s.to_string())),
    };
    Ok(d)
}

/// Parses a 24h "HH:MM" start time (exactly two digits each).
pub(crate) fn parse_start(s: &str) -> Result<NaiveTime, Error> {
    let bad = || Error::Start(s.to_string());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

/// Parses a duration such as `4h`, `90m`, `1h30m`, `3600s` (Go/Kubernetes style, no fractions).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, Error> {
    let bad = || Error::Duration(s.to_string());
    let mut total = Duration::zero();
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        if n > 100_000 {
            return Err(bad());
        }
        digits.clear();
        total += match c {
            'h' => Duration::hours(n),
            'm' => Duration::minutes(n),
            's' => Duration::seconds(n),
            _ => return Err(bad()),
        };
        saw_unit = true;
    }
    if !digits.is_empty() || !saw_unit || total <= Duration::zero() || total > MAX_DURATION {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
