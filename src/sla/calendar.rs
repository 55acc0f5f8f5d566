//! Service calendars: when the SLA clock runs (issue #9, docs/sla.md).
//!
//! Owns: the calendar file format, its checks, and the arithmetic of open
//! time (`add_business`, `business_between`, `is_open`, `due_with_pauses`).
//! PURE: no clock, no I/O except `Calendar::load`.
//!
//! Open time is real elapsed time inside the day's intervals, each interval
//! turned into two instants in the calendar's zone. So a DST change inside
//! an interval makes it an hour shorter or longer, and one outside the
//! intervals (Tallinn changes at 03:00/04:00) changes nothing. The walk goes
//! day by day, never minute by minute, so a 30-day target costs a few dozen
//! time-zone look-ups.

use crate::config::Error;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One opening of a day, local wall-clock times, start included. `end`
/// `None` is midnight at the end of the day (`24:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: Time,
    pub end: Option<Time>,
}

/// A checked calendar. Build one with `Calendar::load`, `Calendar::parse`
/// or `Calendar::always_open`.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    tz_name: String,
    tz: TimeZone,
    /// Indexed by `Weekday::to_monday_zero_offset`; empty = closed.
    week: [Vec<Interval>; 7],
    holidays: BTreeSet<Date>,
    /// Replaces the weekday's hours on that date (shorter, or opening a
    /// day that is normally closed).
    special: BTreeMap<Date, Vec<Interval>>,
}

/// Where a ticket's clock stands once pauses are taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The target falls due at this instant.
    Due(Timestamp),
    /// A pause with no end is running: no due time exists. `remaining` is
    /// the open time still left; on resume at `r` the due time is
    /// `add_business(r, remaining)`.
    Paused {
        since: Timestamp,
        remaining: SignedDuration,
    },
}

/// The file as written. Dates are parsed by serde so a bad one gets its
/// line from serde_yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    timezone: String,
    #[serde(default)]
    hours: WeekFile,
    #[serde(default)]
    holidays: Vec<Date>,
    #[serde(default)]
    half_days: BTreeMap<Date, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeekFile {
    mon: Option<String>,
    tue: Option<String>,
    wed: Option<String>,
    thu: Option<String>,
    fri: Option<String>,
    sat: Option<String>,
    sun: Option<String>,
}

/// Past this many days a walk gives up and saturates: only reachable with
/// absurd targets, and it keeps a bad input from looping for minutes.
const MAX_DAYS: usize = 100 * 366;

impl Calendar {
    /// Every instant open, in UTC: for policies without a calendar.
    pub fn always_open() -> Calendar {
        let all = vec![Interval {
            start: Time::midnight(),
            end: None,
        }];
        Calendar {
            tz_name: "UTC".into(),
            tz: TimeZone::UTC,
            week: std::array::from_fn(|_| all.clone()),
            holidays: BTreeSet::new(),
            special: BTreeMap::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Calendar, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses calendar YAML; `file` only names the source in errors, which
    /// read `file:line: key: why`.
    pub fn parse(text: &str, file: &str) -> Result<Calendar, Error> {
        let raw: CalendarFile = serde_yaml::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(0);
            Error::Invalid {
                file: file.to_string(),
                line,
                message: crate::config::name_the_key(
                    &crate::config::tidy_serde_message(&e.to_string()),
                    text,
                    line,
                ),
            }
        })?;
        let bad = |key: String, message: String| match crate::config::line_of_path(text, &key) {
            Some(line) => Error::Invalid {
                file: file.to_string(),
                line,
                message: format!("{key}: {message}"),
            },
            None => Error::Semantic {
                file: file.to_string(),
                key,
                message,
            },
        };
        let tz = TimeZone::get(&raw.timezone).map_err(|e| {
            bad(
                "timezone".into(),
                format!(
                    "{:?} is not a time zone (e.g. Europe/Tallinn): {e}",
                    raw.timezone
                ),
            )
        })?;
        let w = &raw.hours;
        let days = [
            ("mon", &w.mon),
            ("tue", &w.tue),
            ("wed", &w.wed),
            ("thu", &w.thu),
            ("fri", &w.fri),
            ("sat", &w.sat),
            ("sun", &w.sun),
        ];
        let mut week: [Vec<Interval>; 7] = Default::default();
        for (i, (name, spec)) in days.into_iter().enumerate() {
            if let Some(spec) = spec {
                week[i] = parse_intervals(spec).map_err(|m| bad(format!("hours.{name}"), m))?;
            }
        }
        // Holidays are finite, so a week with some opening guarantees that
        // every walk ends.
        if week.iter().all(Vec::is_empty) {
            return Err(bad(
                "hours".into(),
                "no day has working hours (e.g. mon: \"09:00-17:00\")".into(),
            ));
        }
        let holidays: BTreeSet<Date> = raw.holidays.iter().copied().collect();
        let mut special = BTreeMap::new();
        for (date, spec) in &raw.half_days {
            let key = format!("half_days.{date}");
            if holidays.contains(date) {
                return Err(bad(
                    key,
                    "is also in holidays; a date is either closed or has its own hours".into(),
                ));
            }
            special.insert(*date, parse_intervals(spec).map_err(|m| bad(key, m))?);
        }
        Ok(Calendar {
            tz_name: raw.timezone,
            tz,
            week,
            holidays,
            special,
        })
    }

    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }

    pub fn timezone_name(&self) -> &str {
        &self.tz_name
    }

    pub fn is_holiday(&self, date: Date) -> bool {
        self.holidays.contains(&date)
    }

    /// The local hours of `date`: its `half_days` entry, else none on a
    /// holiday, else its weekday's.
    pub fn hours_on(&self, date: Date) -> &[Interval] {
        if let Some(s) = self.special.get(&date) {
            return s;
        }
        if self.holidays.contains(&date) {
            return &[];
        }
        &self.week[weekday_index(date.weekday())]
    }

    /// The day's openings as instants, in order, each non-empty. A wall
    /// time in a DST gap moves forward and one in a fold takes its first
    /// occurrence (jiff's `compatible`), so both ends move alike.
    fn open_on(&self, date: Date) -> Vec<(Timestamp, Timestamp)> {
        let mut out = Vec::new();
        for iv in self.hours_on(date) {
            let Some(a) = self.instant(date, iv.start) else {
                continue;
            };
            let b = match iv.end {
                Some(t) => self.instant(date, t),
                None => date
                    .tomorrow()
                    .ok()
                    .and_then(|d| self.instant(d, Time::midnight())),
            };
            if let Some(b) = b {
                if b > a {
                    out.push((a, b));
                }
            }
        }
        out
    }

    fn instant(&self, date: Date, t: Time) -> Option<Timestamp> {
        self.tz
            .to_ambiguous_timestamp(date.to_datetime(t))
            .compatible()
            .ok()
    }

    fn local_date(&self, t: Timestamp) -> Date {
        self.tz.to_datetime(t).date()
    }

    /// Inside an opening: start included, end excluded.
    pub fn is_open(&self, t: Timestamp) -> bool {
        self.open_on(self.local_date(t))
            .iter()
            .any(|&(a, b)| a <= t && t < b)
    }

    /// The instant by which `work` of open time has passed since `start`:
    /// the due time of a target. Zero or negative work is due at `start`.
    /// With positive work the result lies inside an opening or at its end.
    /// Saturates at `Timestamp::MAX` past the supported range.
    pub fn add_business(&self, start: Timestamp, work: SignedDuration) -> Timestamp {
        if work <= SignedDuration::ZERO {
            return start;
        }
        let mut left = work;
        let mut date = self.local_date(start);
        for _ in 0..MAX_DAYS {
            for (a, b) in self.open_on(date) {
                let from = a.max(start);
                if from >= b {
                    continue;
                }
                let avail = b.duration_since(from);
                if avail >= left {
                    return from.checked_add(left).unwrap_or(Timestamp::MAX);
                }
                left -= avail;
            }
            match date.tomorrow() {
                Ok(d) => date = d,
                Err(_) => break,
            }
        }
        Timestamp::MAX
    }

    /// Open time between two instants; zero when `b` is not after `a`.
    pub fn business_between(&self, a: Timestamp, b: Timestamp) -> SignedDuration {
        let mut total = SignedDuration::ZERO;
        if b <= a {
            return total;
        }
        let mut date = self.local_date(a);
        let last = self.local_date(b);
        for _ in 0..MAX_DAYS {
            for (x, y) in self.open_on(date) {
                let from = x.max(a);
                let to = y.min(b);
                if to > from {
                    total += to.duration_since(from);
                }
            }
            if date >= last {
                break;
            }
            match date.tomorrow() {
                Ok(d) => date = d,
                Err(_) => break,
            }
        }
        total
    }

    /// The due time of `target` counted from `start`, not counting the
    /// open time inside `pauses` (`(from, until)`; `until: None` = still
    /// paused). Pauses may overlap, come in any order, or begin before
    /// `start`; the part before `start` does not matter. A target reached
    /// exactly when a pause begins is due then.
    pub fn due_with_pauses(
        &self,
        start: Timestamp,
        target: SignedDuration,
        pauses: &[(Timestamp, Option<Timestamp>)],
    ) -> Clock {
        let mut sorted: Vec<(Timestamp, Option<Timestamp>)> = pauses
            .iter()
            .copied()
            .filter(|&(_, until)| until.is_none_or(|u| u > start))
            .collect();
        sorted.sort_by_key(|&(from, _)| from);
        let mut cursor = start;
        let mut left = target.max(SignedDuration::ZERO);
        for (from, until) in sorted {
            if until.is_some_and(|u| u <= cursor) {
                continue;
            }
            if from > cursor {
                let due = self.add_business(cursor, left);
                if due <= from {
                    return Clock::Due(due);
                }
                left -= self.business_between(cursor, from);
                cursor = from;
            }
            match until {
                Some(u) => cursor = cursor.max(u),
                None => {
                    return Clock::Paused {
                        since: cursor,
                        remaining: left.max(SignedDuration::ZERO),
                    }
                }
            }
        }
        Clock::Due(self.add_business(cursor, left))
    }
}

fn weekday_index(w: Weekday) -> usize {
    usize::try_from(w.to_monday_zero_offset()).unwrap_or(0)
}

/// `"09:00-12:00,13:00-17:00"`: in order, not overlapping, each start
/// before its end; `24:00` ends at midnight; `closed` or empty = none.
pub fn parse_intervals(spec: &str) -> Result<Vec<Interval>, String> {
    let s = spec.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("closed") {
        return Ok(Vec::new());
    }
    let bad = || {
        format!(
            "{spec:?} is not working hours like \"09:00-17:00\" or \"09:00-12:00,13:00-17:00\" (each start before its end, in order, not overlapping; or \"closed\")"
        )
    };
    let mut out: Vec<Interval> = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').ok_or_else(bad)?;
        let start: Time = a.trim().parse().map_err(|_| bad())?;
        let end = match b.trim() {
            "24:00" => None,
            b => Some(b.parse::<Time>().map_err(|_| bad())?),
        };
        if end.is_some_and(|e| e <= start) {
            return Err(bad());
        }
        if let Some(prev) = out.last() {
            // After a 24:00 end nothing can follow; otherwise the next one
            // must start at or after the previous end.
            match prev.end {
                None => return Err(bad()),
                Some(pe) if start < pe => return Err(bad()),
                Some(_) => {}
            }
        }
        out.push(Interval { start, end });
    }
    Ok(out)
}

#[cfg(test)]
#[path = "calendar_tests.rs"]
mod tests;
