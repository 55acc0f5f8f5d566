//! PURE: the numbers behind the charts of the HTML report and digest:
//! tickets created and resolved per day over the last [`DAYS`] days, and
//! the open load per agent, with bar widths in pixels.
//!
//! The bars are table cells with a pixel `width`, because that is what
//! Gmail, Outlook and Thunderbird all draw the same way; so the widths are
//! computed here, proportional to the largest value of the chart, where a
//! test can check them, not in the template.

use crate::config::Config;
use crate::store::{Status, Ticket, Timestamp};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;
use std::collections::BTreeMap;

/// How many days the created/resolved chart covers, today included.
pub const DAYS: usize = 14;

/// The width of the longest bar of a chart, in pixels.
pub const BAR_PX: u32 = 240;

/// The desk's time zone for day boundaries: the zone of `policy.digest_at`
/// ("08:00 Europe/Tallinn"), else UTC. Not pure (jiff reads the system
/// tz database once), so callers look it up and hand it to [`Flow::new`].
pub fn desk_zone(cfg: &Config) -> TimeZone {
    cfg.policy
        .digest_at
        .as_deref()
        .and_then(|at| at.split_whitespace().nth(1))
        .and_then(|name| TimeZone::get(name).ok())
        .unwrap_or(TimeZone::UTC)
}

/// Width of a bar for `value` when `max` gets [`BAR_PX`]: proportional,
/// 0 for 0 (and for an empty chart), and at least 1 px for anything else
/// so a single ticket still shows.
pub fn bar_px(value: u32, max: u32) -> u32 {
    if value == 0 || max == 0 {
        return 0;
    }
    let px = (u64::from(value) * u64::from(BAR_PX) + u64::from(max) / 2) / u64::from(max);
    (px as u32).clamp(1, BAR_PX)
}

/// Tickets created and resolved per day, counted one ticket at a time while
/// the store is streamed (a million tickets are never held at once).
#[derive(Debug, Clone)]
pub struct Flow {
    zone: TimeZone,
    first: Date,
    /// Midnight starting `first`: older times skip the zone conversion,
    /// which is most tickets of a big store.
    start: Timestamp,
    category: Option<String>,
    created: [u32; DAYS],
    resolved: [u32; DAYS],
}

/// One day of the created/resolved chart, as templates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayBar {
    /// `2026-11-23`, in the desk's zone.
    pub date: String,
    /// `23.11`, short for the chart's label column.
    pub label: String,
    /// `Mon` … `Sun` (templates translate).
    pub weekday: &'static str,
    pub today: bool,
    pub created: u32,
    pub resolved: u32,
    pub created_px: u32,
    pub resolved_px: u32,
}

impl Flow {
    /// An empty chart of the [`DAYS`] days up to `now`'s day in `zone`,
    /// counting only tickets of `category` when one is given.
    pub fn new(now: Timestamp, zone: TimeZone, category: Option<&str>) -> Flow {
        let today = now.to_zoned(zone.clone()).date();
        let first = today
            .checked_sub(jiff::Span::new().days(DAYS as i64 - 1))
            .unwrap_or(today);
        let start = first
            .to_zoned(zone.clone())
            .map(|z| z.timestamp())
            .unwrap_or(now);
        Flow {
            zone,
            first,
            start,
            category: category.map(str::to_string),
            created: [0; DAYS],
            resolved: [0; DAYS],
        }
    }

    /// A flow over the given tickets at once (tests, and callers that
    /// already hold every ticket they want counted).
    pub fn of<'a>(
        now: Timestamp,
        zone: TimeZone,
        category: Option<&str>,
        tickets: impl IntoIterator<Item = &'a Ticket>,
    ) -> Flow {
        let mut f = Flow::new(now, zone, category);
        for t in tickets {
            f.add(t);
        }
        f
    }

    fn day(&self, at: Timestamp) -> Option<usize> {
        if at < self.start {
            return None;
        }
        let d = at.to_zoned(self.zone.clone()).date();
        let i = self.first.until(d).ok()?.get_days();
        usize::try_from(i).ok().filter(|i| *i < DAYS)
    }

    /// Counts one ticket: on the day it started, and on the day it was
    /// resolved if it is done or closed now. Spam (deleted) counts for
    /// neither; a ticket merged into another was not resolved, only moved.
    pub fn add(&mut self, t: &Ticket) {
        if t.status == Status::Deleted {
            return;
        }
        if let Some(c) = &self.category {
            if !t
                .category
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(c))
            {
                return;
            }
        }
        if let Some(i) = self.day(t.started_at) {
            self.created[i] = self.created[i].saturating_add(1);
        }
        if matches!(t.status, Status::Done | Status::Closed) && t.merged_into.is_none() {
            if let Some(i) = t.ended_at.and_then(|at| self.day(at)) {
                self.resolved[i] = self.resolved[i].saturating_add(1);
            }
        }
    }

    /// (created, resolved) today.
    pub fn today(&self) -> (u32, u32) {
        (self.created[DAYS - 1], self.resolved[DAYS - 1])
    }

    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The chart rows, oldest day first; both series share one scale.
    pub fn days(&self) -> Vec<DayBar> {
        let max = self
            .created
            .iter()
            .chain(self.resolved.iter())
            .copied()
            .max()
            .unwrap_or(0);
        (0..DAYS)
            .map(|i| {
                let d = self
                    .first
                    .checked_add(jiff::Span::new().days(i as i64))
                    .unwrap_or(self.first);
                DayBar {
                    date: d.strftime("%Y-%m-%d").to_string(),
                    label: d.strftime("%d.%m").to_string(),
                    weekday: weekday(d),
                    today: i == DAYS - 1,
                    created: self.created[i],
                    resolved: self.resolved[i],
                    created_px: bar_px(self.created[i], max),
                    resolved_px: bar_px(self.resolved[i], max),
                }
            })
            .collect()
    }
}

fn weekday(d: Date) -> &'static str {
    use jiff::civil::Weekday::*;
    match d.weekday() {
        Monday => "Mon",
        Tuesday => "Tue",
        Wednesday => "Wed",
        Thursday => "Thu",
        Friday => "Fri",
        Saturday => "Sat",
        Sunday => "Sun",
    }
}

/// One agent's open tickets, as a stacked bar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentLoad {
    pub agent: String,
    pub active: u32,
    pub waiting: u32,
    pub snoozed: u32,
    pub total: u32,
    pub active_px: u32,
    pub waiting_px: u32,
    pub snoozed_px: u32,
}

/// Open load per agent: every agent of `roster` (in its order, with zeros),
/// then any other assignee of an open ticket, sorted. Each segment's width
/// is proportional to the largest total.
pub fn load<'a>(
    roster: &[String],
    tickets: impl IntoIterator<Item = &'a Ticket>,
) -> Vec<AgentLoad> {
    let mut counts: BTreeMap<String, [u32; 3]> = BTreeMap::new();
    for t in tickets {
        let slot = match t.status {
            Status::Active => 0,
            Status::Waiting => 1,
            Status::Snoozed => 2,
            _ => continue,
        };
        let Some(a) = &t.assignee else { continue };
        let c = counts.entry(a.to_ascii_lowercase()).or_default();
        c[slot] = c[slot].saturating_add(1);
    }
    let mut order: Vec<String> = Vec::new();
    for a in roster {
        let a = a.to_ascii_lowercase();
        if !order.contains(&a) {
            order.push(a);
        }
    }
    for a in counts.keys() {
        if !order.contains(a) {
            order.push(a.clone());
        }
    }
    let rows: Vec<(String, [u32; 3])> = order
        .into_iter()
        .map(|a| {
            let c = counts.get(&a).copied().unwrap_or_default();
            (a, c)
        })
        .collect();
    let max = rows
        .iter()
        .map(|(_, c)| c.iter().fold(0u32, |s, x| s.saturating_add(*x)))
        .max()
        .unwrap_or(0);
    rows.into_iter()
        .map(|(agent, [active, waiting, snoozed])| {
            let total = active.saturating_add(waiting).saturating_add(snoozed);
            AgentLoad {
                agent,
                active,
                waiting,
                snoozed,
                total,
                active_px: bar_px(active, max),
                waiting_px: bar_px(waiting, max),
                snoozed_px: bar_px(snoozed, max),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::desk::view_less_ticket;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ticket(n: u64, started: &str, status: Status, ended: Option<&str>) -> Ticket {
        let cfg = Config::default();
        let mut t = view_less_ticket(&cfg, ts(started));
        t.number = n;
        t.status = status;
        t.ended_at = ended.map(ts);
        t
    }

    #[test]
    fn days_are_cut_at_midnight_in_the_desk_zone() {
        let tallinn = TimeZone::get("Europe/Tallinn").unwrap();
        // 23:30 UTC on the 22nd is already the 23rd in Tallinn (UTC+2).
        let now = ts("2026-11-23T10:00:00Z");
        let late = ticket(1, "2026-11-22T23:30:00Z", Status::Unassigned, None);
        let f = Flow::of(now, tallinn, None, [&late]);
        let days = f.days();
        assert_eq!(days.len(), DAYS);
        assert_eq!(days[DAYS - 1].date, "2026-11-23");
        assert!(days[DAYS - 1].today);
        assert_eq!(f.today(), (1, 0));
        let f = Flow::of(now, TimeZone::UTC, None, [&late]);
        assert_eq!(f.today(), (0, 0));
        let d = f.days();
        assert_eq!(
            (d[DAYS - 2].date.as_str(), d[DAYS - 2].created),
            ("2026-11-22", 1)
        );
        // The window opens at midnight in the zone, 13 days before today.
        let tallinn = TimeZone::get("Europe/Tallinn").unwrap();
        let edge = ticket(2, "2026-11-09T22:00:00Z", Status::Active, None);
        let before = ticket(3, "2026-11-09T21:59:59Z", Status::Active, None);
        let d = Flow::of(now, tallinn, None, [&edge, &before]).days();
        assert_eq!((d[0].date.as_str(), d[0].created), ("2026-11-10", 1));
        assert_eq!(d.iter().map(|x| x.created).sum::<u32>(), 1);
    }

    #[test]
    fn created_and_resolved_are_counted_on_their_own_days_inside_the_window() {
        let now = ts("2026-11-23T12:00:00Z");
        let ts_ = [
            ticket(
                1,
                "2026-11-20T09:00:00Z",
                Status::Done,
                Some("2026-11-23T08:00:00Z"),
            ),
            ticket(2, "2026-11-23T09:00:00Z", Status::Active, None),
            ticket(
                3,
                "2026-11-23T10:00:00Z",
                Status::Closed,
                Some("2026-11-23T11:00:00Z"),
            ),
            // Started before the window, resolved inside it.
            ticket(
                4,
                "2026-10-01T09:00:00Z",
                Status::Done,
                Some("2026-11-10T09:00:00Z"),
            ),
            // Spam counts for nothing.
            ticket(5, "2026-11-23T09:00:00Z", Status::Deleted, None),
            // Outside the window on both ends.
            ticket(
                6,
                "2026-11-09T23:59:59Z",
                Status::Done,
                Some("2026-11-09T23:59:59Z"),
            ),
        ];
        let f = Flow::of(now, TimeZone::UTC, None, &ts_);
        let d = f.days();
        assert_eq!(d[0].date, "2026-11-10");
        assert_eq!((d[0].created, d[0].resolved), (0, 1));
        assert_eq!((d[10].date.as_str(), d[10].created), ("2026-11-20", 1));
        assert_eq!(f.today(), (2, 2));
        let created: u32 = d.iter().map(|x| x.created).sum();
        let resolved: u32 = d.iter().map(|x| x.resolved).sum();
        assert_eq!((created, resolved), (3, 3));
        // A done ticket that was reopened has no end any more: not resolved.
        let mut reopened = ticket(7, "2026-11-23T09:00:00Z", Status::Active, None);
        reopened.resolutions = 1;
        assert_eq!(
            Flow::of(now, TimeZone::UTC, None, [&reopened]).today(),
            (1, 0)
        );
    }

    #[test]
    fn a_category_flow_counts_only_that_category() {
        let now = ts("2026-11-23T12:00:00Z");
        let mut a = ticket(1, "2026-11-23T09:00:00Z", Status::Active, None);
        a.category = Some("Billing".into());
        let b = ticket(2, "2026-11-23T09:00:00Z", Status::Active, None);
        assert_eq!(
            Flow::of(now, TimeZone::UTC, Some("billing"), [&a, &b]).today(),
            (1, 0)
        );
        assert_eq!(Flow::of(now, TimeZone::UTC, None, [&a, &b]).today(), (2, 0));
    }

    #[test]
    fn bars_are_proportional_to_the_largest_value_and_zero_safe() {
        assert_eq!(bar_px(0, 0), 0);
        assert_eq!(bar_px(0, 5), 0);
        assert_eq!(bar_px(5, 5), BAR_PX);
        assert_eq!(bar_px(1, 4), BAR_PX / 4);
        assert_eq!(bar_px(3, 4), BAR_PX * 3 / 4);
        // A single ticket beside a thousand still shows.
        assert_eq!(bar_px(1, 1000), 1);
        let now = ts("2026-11-23T12:00:00Z");
        let empty = Flow::new(now, TimeZone::UTC, None);
        assert!(empty
            .days()
            .iter()
            .all(|d| d.created_px == 0 && d.resolved_px == 0));
        let mut ts_ = Vec::new();
        for n in 0..4 {
            ts_.push(ticket(n, "2026-11-23T09:00:00Z", Status::Active, None));
        }
        ts_.push(ticket(
            9,
            "2026-11-22T09:00:00Z",
            Status::Done,
            Some("2026-11-23T09:00:00Z"),
        ));
        let d = Flow::of(now, TimeZone::UTC, None, &ts_).days();
        let today = &d[DAYS - 1];
        assert_eq!((today.created, today.resolved), (4, 1));
        assert_eq!((today.created_px, today.resolved_px), (BAR_PX, BAR_PX / 4));
        assert_eq!(
            (d[DAYS - 2].created, d[DAYS - 2].created_px),
            (1, BAR_PX / 4)
        );
    }

    #[test]
    fn load_lists_the_roster_then_other_assignees_with_stacked_widths() {
        let roster = vec![
            "Alice@example.com".to_string(),
            "bob@example.com".to_string(),
        ];
        let at = "2026-11-23T09:00:00Z";
        let mut ts_ = Vec::new();
        for (who, st) in [
            ("alice@example.com", Status::Active),
            ("alice@example.com", Status::Active),
            ("alice@example.com", Status::Waiting),
            ("alice@example.com", Status::Snoozed),
            ("carol@example.com", Status::Active),
            ("bob@example.com", Status::Done),
        ] {
            let mut t = ticket(1, at, st, None);
            t.assignee = Some(who.into());
            ts_.push(t);
        }
        ts_.push(ticket(2, at, Status::Unassigned, None));
        let l = load(&roster, &ts_);
        let names: Vec<&str> = l.iter().map(|a| a.agent.as_str()).collect();
        assert_eq!(
            names,
            ["alice@example.com", "bob@example.com", "carol@example.com"]
        );
        let a = &l[0];
        assert_eq!((a.active, a.waiting, a.snoozed, a.total), (2, 1, 1, 4));
        assert_eq!(
            (a.active_px, a.waiting_px, a.snoozed_px),
            (BAR_PX / 2, BAR_PX / 4, BAR_PX / 4)
        );
        assert_eq!((l[1].total, l[1].active_px), (0, 0), "done is not load");
        assert_eq!((l[2].total, l[2].active_px), (1, BAR_PX / 4));
        assert!(load(&[], &[]).is_empty());
    }

    #[test]
    fn the_zone_comes_from_digest_at() {
        let mut cfg = Config::default();
        assert_eq!(desk_zone(&cfg), TimeZone::UTC);
        cfg.policy.digest_at = Some("08:00 Europe/Tallinn".into());
        assert_eq!(desk_zone(&cfg).iana_name(), Some("Europe/Tallinn"));
        cfg.policy.digest_at = Some("08:00".into());
        assert_eq!(desk_zone(&cfg), TimeZone::UTC);
    }
}
