use super::*;
use crate::config::{Config, Duration};
use crate::sla::{SlaConfig, SlaPolicy};
use crate::store::{Pause, Rating, Status, Ticket};
use jiff::tz::TimeZone;
use std::collections::BTreeMap;
use std::path::Path;

/// The shipped Estonian calendar: Mon–Fri 09–17, 23 Dec 2026 09–14,
/// 24 and 25 Dec holidays.
fn ee() -> Calendar {
    let p = format!("{}/config/calendars/ee.yaml", env!("CARGO_MANIFEST_DIR"));
    Calendar::load(Path::new(&p)).unwrap_or_else(|e| panic!("{e}"))
}

fn calendars() -> Calendars {
    Calendars::new(BTreeMap::from([("ee".to_string(), ee())]))
}

fn sla() -> SlaConfig {
    SlaConfig {
        policies: vec![
            SlaPolicy {
                id: "vip".into(),
                calendar: Some("ee".into()),
                first_response: Some(Duration::from_secs(4 * 3600)),
                resolution: Some(Duration::from_secs(24 * 3600)),
                ..Default::default()
            },
            SlaPolicy {
                id: "std".into(),
                calendar: None,
                first_response: Some(Duration::from_secs(2 * 3600)),
                resolution: None,
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// A Tallinn wall time.
fn tl(local: &str) -> Timestamp {
    let dt: jiff::civil::DateTime = local.parse().unwrap();
    dt.to_zoned(TimeZone::get("Europe/Tallinn").unwrap())
        .unwrap()
        .timestamp()
}

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn ticket(n: u64, started: Timestamp) -> Ticket {
    let mut t = crate::render::desk::view_less_ticket(&Config::default(), started);
    t.number = n;
    t.status = Status::Active;
    t
}

fn pause(from: Timestamp, until: Option<Timestamp>, status: Status) -> Pause {
    Pause {
        from,
        until,
        status,
    }
}

const H: i64 = 3600;

#[test]
fn nearest_rank_percentiles_of_known_lists() {
    let mut v = vec![5, 1, 9, 3, 7, 2, 8, 4, 6, 10];
    v.sort_unstable();
    // n = 10: p50 is rank 5, p90 rank 9.
    assert_eq!(nearest_rank(&v, 50), Some(5));
    assert_eq!(nearest_rank(&v, 90), Some(9));
    assert_eq!(nearest_rank(&v, 100), Some(10));
    // Even count: the lower middle value, never an average.
    assert_eq!(nearest_rank(&[1, 2, 3, 4], 50), Some(2));
    // n = 4, p90: rank ⌈3.6⌉ = 4.
    assert_eq!(nearest_rank(&[1, 2, 3, 4], 90), Some(4));
    // n = 3: p50 rank 2, p90 rank ⌈2.7⌉ = 3.
    assert_eq!(nearest_rank(&[10, 20, 30], 50), Some(20));
    assert_eq!(nearest_rank(&[10, 20, 30], 90), Some(30));
    assert_eq!(nearest_rank(&[7], 50), Some(7));
    assert_eq!(nearest_rank(&[7], 90), Some(7));
    assert_eq!(nearest_rank(&[], 50), None);
    // n = 20, p90: rank 18.
    let v: Vec<i64> = (1..=20).collect();
    assert_eq!(nearest_rank(&v, 90), Some(18));
}

/// Started Tue 22 Dec 2026 15:00 in Tallinn, first answer Mon 28 Dec 10:00:
/// open time 2h (Tue 15–17) + 5h (Wed 23 Dec, a 09–14 short day) + 0
/// (24/25 Dec holidays, 26/27 the weekend) + 1h (Mon 09–10) = 8h. It
/// waited Wed 10:00–12:00 and was snoozed Wed 11:00–13:00 (overlapping:
/// 3h of open time, removed once) and snoozed over the weekend (closed
/// anyway): first response 8h − 3h = 5h.
///
/// Done Mon 28 Dec 12:00, reopened 15:00 (a `done` pause of 3h), done for
/// good Tue 29 Dec 16:30: open time 2 + 5 + 8 (Mon) + 7.5 (Tue 09–16:30) =
/// 22.5h, minus 3h waiting/snoozed, minus 3h done = 16.5h.
#[test]
fn open_time_across_a_weekend_and_holidays_minus_pauses() {
    let mut t = ticket(1, tl("2026-12-22T15:00"));
    t.sla.policy = Some("VIP".into()); // ids compare without case
    t.sla.first_response_at = Some(tl("2026-12-28T10:00"));
    t.ended_at = Some(tl("2026-12-29T16:30"));
    t.status = Status::Done;
    t.reopen_count = 1;
    t.work_started_at = Some(tl("2026-12-22T15:30"));
    t.pauses = vec![
        pause(
            tl("2026-12-23T10:00"),
            Some(tl("2026-12-23T12:00")),
            Status::Waiting,
        ),
        pause(
            tl("2026-12-23T11:00"),
            Some(tl("2026-12-23T13:00")),
            Status::Snoozed,
        ),
        pause(
            tl("2026-12-26T10:00"),
            Some(tl("2026-12-27T18:00")),
            Status::Snoozed,
        ),
        pause(
            tl("2026-12-28T12:00"),
            Some(tl("2026-12-28T15:00")),
            Status::Done,
        ),
        pause(tl("2026-12-29T16:30"), None, Status::Done),
    ];
    let f = figures(&t, &sla(), &calendars());
    assert_eq!(f.first_response, Some(SignedDuration::from_hours(5)));
    assert_eq!(f.resolution, Some(SignedDuration::from_mins(16 * 60 + 30)));
    // vip: first response within 4h (5h: breached), resolution within 24h.
    assert_eq!(f.first_response_sla, Outcome::Breached);
    assert_eq!(f.resolution_sla, Outcome::Met);
    assert_eq!(f.reopen_count, 1);
    assert_eq!(f.work_started_at, Some(tl("2026-12-22T15:30")));

    // The same ticket without a policy is counted around the clock:
    // 22 Dec 15:00 → 28 Dec 10:00 is 139h; minus the merged pauses
    // Wed 10–13 (3h) and Sat 10:00 → Sun 18:00 (32h): 104h.
    t.sla.policy = None;
    let f = figures(&t, &sla(), &calendars());
    assert_eq!(f.first_response, Some(SignedDuration::from_hours(104)));
    assert_eq!(f.first_response_sla, Outcome::NoTarget);
    assert_eq!(f.resolution_sla, Outcome::NoTarget);
}

#[test]
fn outcomes_met_breached_pending_and_no_target() {
    let start = utc("2026-11-02T08:00:00Z");
    let mut t = ticket(1, start);
    t.sla.policy = Some("std".into());
    // std: first response within 2h around the clock, no resolution target.
    let f = figures(&t, &sla(), &calendars());
    assert_eq!(
        (f.first_response_sla, f.resolution_sla),
        (Outcome::Pending, Outcome::NoTarget)
    );
    // Exactly at the target is met.
    t.sla.first_response_at = Some(utc("2026-11-02T10:00:00Z"));
    assert_eq!(
        figures(&t, &sla(), &calendars()).first_response_sla,
        Outcome::Met
    );
    // One second late is breached.
    t.sla.first_response_at = Some(utc("2026-11-02T10:00:01Z"));
    assert_eq!(
        figures(&t, &sla(), &calendars()).first_response_sla,
        Outcome::Breached
    );
    // A breach the daemon recorded stands even when the time looks fine,
    // and even on a target the policy no longer has.
    t.sla.first_response_at = Some(utc("2026-11-02T08:10:00Z"));
    t.sla.breaches = vec![
        (SlaTarget::FirstResponse, utc("2026-11-02T10:00:00Z")),
        (SlaTarget::Resolution, utc("2026-11-03T08:00:00Z")),
    ];
    let f = figures(&t, &sla(), &calendars());
    assert_eq!(
        (f.first_response_sla, f.resolution_sla),
        (Outcome::Breached, Outcome::Breached)
    );
    // A policy no longer configured: no target, around the clock.
    let mut t = ticket(2, start);
    t.sla.policy = Some("gone".into());
    t.sla.first_response_at = Some(utc("2026-11-02T09:00:00Z"));
    let f = figures(&t, &sla(), &calendars());
    assert_eq!(f.first_response, Some(SignedDuration::from_hours(1)));
    assert_eq!(f.first_response_sla, Outcome::NoTarget);
}

/// Four tickets in the window, one before it, one deleted; grouped by agent.
#[test]
fn aggregator_groups_counts_and_compliance() {
    let from = utc("2026-11-01T00:00:00Z");
    let s = sla();
    let cals = calendars();
    let mut a = Aggregator::new(GroupBy::Agent, from, &s, &cals);

    // alice, std: answered in 30m (met), done after 4h, rated good.
    let mut t1 = ticket(1, utc("2026-11-02T08:00:00Z"));
    t1.assignee = Some("alice@example.com".into());
    t1.sla.policy = Some("std".into());
    t1.sla.first_response_at = Some(utc("2026-11-02T08:30:00Z"));
    t1.ended_at = Some(utc("2026-11-02T12:00:00Z"));
    t1.status = Status::Done;
    t1.work_started_at = Some(utc("2026-11-02T08:20:00Z"));
    t1.rating = Some(Rating {
        value: RatingValue::Good,
        at: utc("2026-11-02T13:00:00Z"),
        comment: None,
        resolution: 1,
    });
    // alice, std: answered after 3h wall, 30m of it waiting: 2h30m
    // (breached); reopened twice; still open.
    let mut t2 = ticket(2, utc("2026-11-03T08:00:00Z"));
    t2.assignee = Some("alice@example.com".into());
    t2.sla.policy = Some("std".into());
    t2.sla.first_response_at = Some(utc("2026-11-03T11:00:00Z"));
    t2.pauses = vec![pause(
        utc("2026-11-03T09:00:00Z"),
        Some(utc("2026-11-03T09:30:00Z")),
        Status::Waiting,
    )];
    t2.reopen_count = 2;
    t2.reopened = true;
    // Nobody's, no policy.
    let t3 = ticket(3, utc("2026-11-04T08:00:00Z"));
    // bob, std: answered in 1h (met); rated bad.
    let mut t4 = ticket(4, utc("2026-11-05T08:00:00Z"));
    t4.assignee = Some("bob@example.com".into());
    t4.sla.policy = Some("std".into());
    t4.sla.first_response_at = Some(utc("2026-11-05T09:00:00Z"));
    t4.rating = Some(Rating {
        value: RatingValue::Bad,
        at: utc("2026-11-05T13:00:00Z"),
        comment: Some("slow".into()),
        resolution: 1,
    });
    // bob, before the window, still open: only in OPEN.
    let mut t5 = ticket(5, utc("2026-10-01T08:00:00Z"));
    t5.assignee = Some("bob@example.com".into());
    t5.status = Status::Waiting;
    // alice, deleted: nowhere.
    let mut t6 = ticket(6, utc("2026-11-06T08:00:00Z"));
    t6.assignee = Some("alice@example.com".into());
    t6.status = Status::Deleted;

    for t in [&t1, &t2, &t3, &t4, &t5, &t6] {
        a.add(t);
    }
    let r = a.finish("30d");
    let groups: Vec<&str> = r.rows.iter().map(|x| x.group.as_str()).collect();
    assert_eq!(
        groups,
        ["(unassigned)", "alice@example.com", "bob@example.com"]
    );
    let alice = &r.rows[1];
    assert_eq!(
        (alice.tickets, alice.open, alice.resolved, alice.done),
        (2, 1, 1, 1)
    );
    assert_eq!(
        (alice.reopened_tickets, alice.reopens, alice.reopened),
        (1, 2, 1)
    );
    assert_eq!(alice.work_started, 1);
    // [1800, 9000]: median rank 1, p90 rank 2.
    assert_eq!(alice.first_response_median_seconds, Some(1800));
    assert_eq!(alice.first_response_p90_seconds, Some(9000));
    assert_eq!(alice.resolution_median_seconds, Some(4 * H));
    assert_eq!(alice.median_seconds_to_done, Some(4 * H));
    assert_eq!(
        (
            alice.first_response_sla_met,
            alice.first_response_sla_breached,
            alice.first_response_sla_pct
        ),
        (1, 1, Some(50.0))
    );
    // std has no resolution target.
    assert_eq!(alice.resolution_sla_pct, None);
    assert_eq!(
        (alice.rating_good, alice.rating_bad, alice.rating_good_pct),
        (1, 0, Some(100.0))
    );
    let bob = &r.rows[2];
    // t5 started before the window: open, but not one of the tickets.
    assert_eq!((bob.tickets, bob.started, bob.open), (1, 1, 2));
    assert_eq!(bob.first_response_sla_pct, Some(100.0));
    assert_eq!(bob.rating_good_pct, Some(0.0));
    let none = &r.rows[0];
    assert_eq!((none.tickets, none.open), (1, 1));
    assert_eq!(none.first_response_sla_pct, None);
    assert_eq!(none.first_response_median_seconds, None);

    let t = &r.total;
    assert_eq!(t.group, TOTAL);
    assert_eq!((t.tickets, t.open, t.resolved, t.reopens), (4, 4, 1, 2));
    // [1800, 3600, 9000]: median 3600, p90 rank 3.
    assert_eq!(t.first_response_median_seconds, Some(3600));
    assert_eq!(t.first_response_p90_seconds, Some(9000));
    // 2 met of 3 with an outcome; t3 has no target.
    assert_eq!(t.first_response_sla_pct, Some(66.7));
    assert_eq!(t.first_response_sla_pending, 0);
    assert_eq!(t.rating_good_pct, Some(50.0));
}

#[test]
fn group_by_customer_and_category() {
    let from = utc("2026-11-01T00:00:00Z");
    let s = sla();
    let cals = calendars();
    let mut t1 = ticket(1, utc("2026-11-02T08:00:00Z"));
    t1.customer = Some("ACME".into());
    t1.category = Some("billing".into());
    let mut t2 = ticket(2, utc("2026-11-02T09:00:00Z"));
    t2.customer = Some("ACME".into());
    let t3 = ticket(3, utc("2026-11-02T10:00:00Z"));
    let mut by_customer = Aggregator::new(GroupBy::Customer, from, &s, &cals);
    let mut by_category = Aggregator::new(GroupBy::Category, from, &s, &cals);
    for t in [&t1, &t2, &t3] {
        by_customer.add(t);
        by_category.add(t);
    }
    let rows = |r: Report| -> Vec<(String, u64)> {
        r.rows.into_iter().map(|x| (x.group, x.tickets)).collect()
    };
    assert_eq!(
        rows(by_customer.finish("30d")),
        [("(none)".to_string(), 1), ("ACME".to_string(), 2)]
    );
    assert_eq!(
        rows(by_category.finish("30d")),
        [("(none)".to_string(), 2), ("billing".to_string(), 1)]
    );
    assert_eq!(GroupBy::parse("Category"), Some(GroupBy::Category));
    assert_eq!(GroupBy::parse("team"), None);
}

#[test]
fn merged_tickets_are_not_conversations_of_their_own() {
    let from = utc("2026-11-01T00:00:00Z");
    let s = sla();
    let cals = calendars();
    let mut a = Aggregator::new(GroupBy::Agent, from, &s, &cals);
    let mut t = ticket(1, utc("2026-11-02T08:00:00Z"));
    t.status = Status::Closed;
    t.merged_into = Some(2);
    t.ended_at = Some(utc("2026-11-02T09:00:00Z"));
    a.add(&t);
    let r = a.finish("30d");
    assert_eq!((r.total.tickets, r.total.resolved), (0, 0));
    assert_eq!((r.total.started, r.total.done), (1, 1));
}

#[test]
fn csv_quotes_as_rfc_4180_and_json_keeps_the_group_key() {
    assert_eq!(csv_field("plain"), "plain");
    assert_eq!(csv_field("a,b"), "\"a,b\"");
    assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");

    let from = utc("2026-11-01T00:00:00Z");
    let s = sla();
    let cals = calendars();
    let mut a = Aggregator::new(GroupBy::Customer, from, &s, &cals);
    let mut t = ticket(1, utc("2026-11-02T08:00:00Z"));
    t.customer = Some("Acme, \"Ltd\"".into());
    a.add(&t);
    let r = a.finish("30d");
    let csv = r.to_csv();
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines.len(), 4, "{csv:?}"); // header, row, total, ""
    assert!(lines[0].starts_with("customer,started,done,open,"), "{csv}");
    assert!(
        lines[1].starts_with("\"Acme, \"\"Ltd\"\"\",1,0,1,0,,1,0,0,0,0,,,,,0,0,0,,"),
        "{csv}"
    );
    assert!(lines[2].starts_with("(total),1,"), "{csv}");
    let v = r.to_json().unwrap();
    assert_eq!(v["rows"][0]["customer"], "Acme, \"Ltd\"");
    assert_eq!(v["rows"][0]["group"], "Acme, \"Ltd\"");
    assert_eq!(v["total"]["tickets"], 1);
    // The CLI reads the JSON back into a report to print text or CSV.
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn durations_read_as_hours_and_minutes() {
    assert_eq!(duration_text(45), "45s");
    assert_eq!(duration_text(12 * 60), "12m");
    assert_eq!(duration_text(2 * H + 5 * 60), "2h 05m");
    assert_eq!(duration_text(3 * 86400 + 4 * H + 59), "3d 04h");
}
