//! Table tests on DST days in Europe/Berlin and America/New_York, and property tests of the
//! invariants every window must satisfy in any zone at any instant.

use super::*;
use chrono::{NaiveDate, TimeZone};
use proptest::prelude::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test instant")
        .with_timezone(&Utc)
}

fn w(day: &str, start: &str, dur: &str, tz: &str) -> WeeklyWindow {
    WeeklyWindow::parse(day, start, dur, tz).expect("test window")
}

/// What the tests ask of a window beyond `state_at` (the operator itself needs no more).
impl WeeklyWindow {
    /// Whether the window is open at `now`.
    fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.state_at(now).is_open()
    }

    /// The first occurrence that opens strictly after `now` (ignores a window open now).
    fn next_opening(&self, now: DateTime<Utc>) -> Occurrence {
        match self.state_at(now) {
            WindowState::Closed { next } => next,
            WindowState::Open { current } => match self.state_at(current.end) {
                WindowState::Closed { next } => next,
                // Back-to-back windows cannot happen with duration <= 24h and weekly repeat.
                WindowState::Open { current: c } => c,
            },
        }
    }
}

#[test]
fn parses_and_rejects() {
    assert_eq!(parse_duration("4h"), Ok(Duration::hours(4)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::minutes(90)));
    assert_eq!(parse_duration("90m"), Ok(Duration::minutes(90)));
    assert_eq!(parse_duration("24h"), Ok(Duration::hours(24)));
    for bad in ["", "4", "h", "25h", "0h", "4x", "-1h", "1.5h", "24h1s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
    assert_eq!(
        parse_start("22:00"),
        Ok(NaiveTime::from_hms_opt(22, 0, 0).expect("t"))
    );
    for bad in ["24:00", "2:00", "22:60", "2200", "aa:bb", "22:00:00"] {
        assert!(parse_start(bad).is_err(), "{bad:?} should be rejected");
    }
    assert_eq!(parse_day("Saturday"), Ok(Weekday::Sat));
    assert_eq!(parse_day("sun"), Ok(Weekday::Sun));
    assert!(parse_day("Caturday").is_err());
    assert_eq!(
        WeeklyWindow::parse("Saturday", "22:00", "4h", "Mars/Olympus"),
        Err(Error::TimeZone("Mars/Olympus".into()))
    );
}

/// Windows on DST days, one case a line: name | window (day, start, duration, zone) | now |
/// expected `open` or `closed` | expected start | expected end of the open-or-next occurrence.
/// Instants are UTC; local times in the names.
const TABLE: &str = "
utc: closed on a Wednesday, next is this Saturday          | Saturday 22:00 4h UTC              | 2026-11-25T09:00:00Z | closed | 2026-11-28T22:00:00Z | 2026-11-29T02:00:00Z
utc: crossing midnight, open on Sunday 01:00               | Saturday 22:00 4h UTC              | 2026-11-29T01:00:00Z | open   | 2026-11-28T22:00:00Z | 2026-11-29T02:00:00Z
utc: end is exclusive                                      | Saturday 22:00 4h UTC              | 2026-11-29T02:00:00Z | closed | 2026-12-05T22:00:00Z | 2026-12-06T02:00:00Z
utc: start is inclusive                                    | Saturday 22:00 4h UTC              | 2026-11-28T22:00:00Z | open   | 2026-11-28T22:00:00Z | 2026-11-29T02:00:00Z
week boundary: Sunday 23:00 for 3h is open Monday 01:00    | Sunday 23:00 3h UTC                | 2026-11-30T01:00:00Z | open   | 2026-11-29T23:00:00Z | 2026-11-30T02:00:00Z
berlin spring forward: 02:30 does not exist, opens 03:30   | Sunday 02:30 1h Europe/Berlin      | 2026-03-28T12:00:00Z | closed | 2026-03-29T01:30:00Z | 2026-03-29T02:30:00Z
berlin spring forward: 01:00 for 2h ends 04:00 CEST        | Sunday 01:00 2h Europe/Berlin      | 2026-03-29T01:30:00Z | open   | 2026-03-29T00:00:00Z | 2026-03-29T02:00:00Z
berlin fall back: 02:30 happens twice, the first wins      | Sunday 02:30 1h Europe/Berlin      | 2026-10-24T12:00:00Z | closed | 2026-10-25T00:30:00Z | 2026-10-25T01:30:00Z
berlin fall back: Saturday 22:00 for 6h ends 03:00 CET     | Saturday 22:00 6h Europe/Berlin    | 2026-10-25T01:59:59Z | open   | 2026-10-24T20:00:00Z | 2026-10-25T02:00:00Z
berlin winter week after fall back uses CET                | Saturday 22:00 4h Europe/Berlin    | 2026-10-25T02:00:00Z | closed | 2026-10-31T21:00:00Z | 2026-11-01T01:00:00Z
new york spring forward: 02:00 does not exist, opens 03:00 | Sunday 02:00 2h America/New_York   | 2026-03-07T12:00:00Z | closed | 2026-03-08T07:00:00Z | 2026-03-08T09:00:00Z
new york fall back: 01:30 happens twice, the first wins    | Sunday 01:30 1h America/New_York   | 2026-10-31T12:00:00Z | closed | 2026-11-01T05:30:00Z | 2026-11-01T06:30:00Z
new york: open at Sunday 00:30 EST, across midnight        | Saturday 23:00 2h America/New_York | 2026-11-29T05:30:00Z | open   | 2026-11-29T04:00:00Z | 2026-11-29T06:00:00Z
";

#[test]
fn table() {
    let rows: Vec<Vec<&str>> = TABLE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 13, "every case is read");
    for row in rows {
        let [name, window, now, open, start, end] = row[..] else {
            panic!("a case has six columns: {row:?}");
        };
        let window: Vec<&str> = window.split_whitespace().collect();
        let win = w(window[0], window[1], window[2], window[3]);
        let st = win.state_at(utc(now));
        assert_eq!(st.is_open(), open == "open", "{name}: open");
        assert_eq!(
            st.occurrence(),
            Occurrence {
                start: utc(start),
                end: utc(end)
            },
            "{name}: occurrence"
        );
    }
}

#[test]
fn next_opening_skips_the_open_window() {
    let win = w("Saturday", "22:00", "4h", "UTC");
    let now = utc("2026-11-29T01:00:00Z");
    assert_eq!(win.next_opening(now).start, utc("2026-12-05T22:00:00Z"));
}

#[test]
fn gap_resolution_in_half_hour_dst_zone() {
    // Lord Howe moves its clocks by 30 minutes: 02:00 → 02:30 on 2026-10-04.
    let tz: Tz = "Australia/Lord_Howe".parse().expect("tz");
    let local = NaiveDate::from_ymd_opt(2026, 10, 4)
        .and_then(|d| d.and_hms_opt(2, 15, 0))
        .expect("local");
    let t = resolve_local(tz, local);
    assert_eq!(t.with_timezone(&tz).format("%H:%M").to_string(), "02:45");
}

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "Pacific/Apia",
    "Asia/Tokyo",
    "America/St_Johns",
];

fn arb_window() -> impl Strategy<Value = WeeklyWindow> {
    (
        0u32..7,
        0u32..24,
        0u32..60,
        1i64..=24 * 60,
        0usize..ZONES.len(),
    )
        .prop_map(|(d, h, m, dur, z)| {
            WeeklyWindow::new(
                Weekday::try_from(u8::try_from(d).unwrap_or(0)).unwrap_or(Weekday::Mon),
                NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default(),
                Duration::minutes(dur),
                ZONES[z].parse().unwrap_or(Tz::UTC),
            )
            .expect("valid window")
        })
}

fn arb_instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 1990..2060: real DST history plus the zones' projected rules.
    (631_152_000i64..2_871_763_200i64)
        .prop_map(|s| Utc.timestamp_opt(s, 0).single().unwrap_or_default())
}

/// Real time between two weekly occurrences can differ from 7 days by a DST shift (≤ 1h), or by
/// a whole day when a zone skipped or repeated a date (Apia in 2011).
const SLACK: Duration = Duration::hours(25);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn open_iff_inside_the_reported_occurrence(win in arb_window(), now in arb_instant()) {
        match win.state_at(now) {
            WindowState::Open { current } => {
                prop_assert!(current.start <= now && now < current.end);
                prop_assert_eq!(current.end - current.start, win.duration);
            }
            WindowState::Closed { next } => {
                prop_assert!(next.start > now);
                prop_assert_eq!(next.end - next.start, win.duration);
                // The window is closed right up to its next start, and open at it.
                prop_assert!(!win.is_open(next.start - Duration::seconds(1)) || next.start - Duration::seconds(1) <= now);
                prop_assert!(win.is_open(next.start));
            }
        }
    }

    #[test]
    fn next_opening_is_in_the_future_and_within_a_week(win in arb_window(), now in arb_instant()) {
        let next = win.next_opening(now);
        prop_assert!(next.start > now);
        prop_assert!(next.start - now <= Duration::days(7) + SLACK, "{} → {:?}", now, next);
        // Consecutive occurrences are a week apart, give or take DST.
        let after = win.next_opening(next.start);
        let gap = after.start - next.start;
        prop_assert!(gap >= Duration::days(7) - SLACK && gap <= Duration::days(7) + SLACK, "gap {gap}");
    }

    #[test]
    fn open_window_closes_at_its_end(win in arb_window(), now in arb_instant()) {
        if let WindowState::Open { current } = win.state_at(now) {
            prop_assert!(win.is_open(current.end - Duration::seconds(1)));
            prop_assert!(!win.is_open(current.end));
        }
    }

    #[test]
    fn the_answer_is_stable_while_waiting(win in arb_window(), now in arb_instant(), frac in 0.0f64..1.0) {
        // Anywhere between now and the next opening, the next opening is the same: the
        // controller can requeue for it without it moving.
        if let WindowState::Closed { next } = win.state_at(now) {
            let wait = (next.start - now).num_seconds();
            let mid = now + Duration::seconds((wait as f64 * frac) as i64);
            if mid < next.start {
                prop_assert_eq!(win.state_at(mid), WindowState::Closed { next });
            }
        }
    }

    #[test]
    fn opens_on_the_configured_day_and_time_unless_shifted_by_dst(win in arb_window(), now in arb_instant()) {
        let occ = win.state_at(now).occurrence();
        let local = occ.start.with_timezone(&win.tz).naive_local();
        // The configured day is the local start date, or the day before when a gap pushed the
        // start past midnight (or a zone skipped the whole date, as Apia did in 2011).
        let day = [local.date(), local.date() - Duration::days(1)]
            .into_iter()
            .find(|d| d.weekday() == win.day);
        prop_assert!(day.is_some(), "{local} is not on or just after a {:?}", win.day);
        let configured = day.unwrap_or_default().and_time(win.start);
        let shift = local - configured;
        prop_assert!(shift >= Duration::zero() && shift <= Duration::hours(24), "{local} vs {configured}");
        // A shift means the configured wall-clock time did not exist that day.
        if shift > Duration::zero() {
            prop_assert!(matches!(win.tz.from_local_datetime(&configured), LocalResult::None));
        }
    }
}
