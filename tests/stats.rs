//! `postdesk stats` on a scripted history whose answers are worked out by
//! hand below: tickets with chosen timestamps are committed into a real
//! store (sled, or the desk's PostgreSQL database) through the library's
//! `Store`, then the real binary reports on it, once opening the store
//! itself and once through a running daemon.

mod common;

use common::*;
use postdesk::store::{Pause, Rating, RatingValue, SlaTarget, Status, Ticket, Timestamp};
use serde_json::Value;
use std::path::Path;

const H: i64 = 3600;

fn utc(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// The test desk plus the shipped Estonian calendar and two policies:
/// `std` around the clock (first response 2h, resolution 8h) and `vip` on
/// the calendar (Mon–Fri 09–17 Tallinn; 4h and 24h).
fn yaml(port: u16, data: &Path) -> String {
    let ee = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendars/ee.yaml");
    config_yaml(
        port,
        data,
        free_port(),
        &format!(
            "calendars:\n  ee: {}\nsla:\n  policies:\n    - {{id: vip, if: {{priority: high}}, calendar: ee, first_response: 4h, resolution: 24h}}\n    - {{id: std, first_response: 2h, resolution: 8h}}\n",
            ee.display()
        ),
    )
}

struct T {
    started: &'static str,
    status: Status,
    assignee: Option<&'static str>,
    customer: Option<&'static str>,
    category: Option<&'static str>,
    policy: Option<&'static str>,
    first_response: Option<&'static str>,
    ended: Option<&'static str>,
    pauses: Vec<(&'static str, Option<&'static str>, Status)>,
    reopens: u32,
    rating: Option<RatingValue>,
    breaches: Vec<SlaTarget>,
}

fn base(started: &'static str) -> T {
    T {
        started,
        status: Status::Active,
        assignee: None,
        customer: None,
        category: None,
        policy: None,
        first_response: None,
        ended: None,
        pauses: vec![],
        reopens: 0,
        rating: None,
        breaches: vec![],
    }
}

/// The history (times UTC; Tallinn is UTC+2 in November):
///
/// 1. alice, ACME, billing, std. Arrived Mon 2 Nov 08:00, taken 08:10,
///    answered 08:30 (30m: met), done 12:00 (4h: met). Rated good.
/// 2. alice, ACME, billing, std. Arrived Tue 3 Nov 08:00, answered 11:00,
///    waiting 09:00–09:30: first response 2h30m (breached, and the daemon
///    recorded it). Done 14:00, reopened 15:00, done 20:00: resolution
///    12h − 30m − 1h = 10h30m (breached). One reopen. Rated bad.
/// 3. bob, no customer, no category, std. Arrived Wed 4 Nov 10:00,
///    answered 10:45 (45m: met), still active: resolution pending.
/// 4. bob, BETA, tech, vip on the calendar. Arrived Fri 6 Nov 15:00
///    Tallinn, answered Mon 9 Nov 10:00 Tallinn: Fri 15–17 + Mon 09–10 =
///    3h (met, ≤ 4h); done Mon 16:00 Tallinn: 2h + 7h = 9h (met, ≤ 24h);
///    73h on the wall clock. Closed. Rated neutral.
/// 5. nobody, BETA, no category, no policy. Arrived Tue 10 Nov, open.
/// 6. alice, ACME, billing: from 2010, done then: outside the window.
/// 7. alice, spam (deleted) in the window: never counted.
/// 8. bob, no customer, no category: from 2010, still waiting: counts in
///    OPEN (the backlog) only.
fn history() -> Vec<T> {
    vec![
        T {
            status: Status::Done,
            assignee: Some("alice@example.com"),
            customer: Some("ACME"),
            category: Some("billing"),
            policy: Some("std"),
            first_response: Some("2026-11-02T08:30:00Z"),
            ended: Some("2026-11-02T12:00:00Z"),
            pauses: vec![("2026-11-02T12:00:00Z", None, Status::Done)],
            rating: Some(RatingValue::Good),
            ..base("2026-11-02T08:00:00Z")
        },
        T {
            status: Status::Done,
            assignee: Some("alice@example.com"),
            customer: Some("ACME"),
            category: Some("billing"),
            policy: Some("std"),
            first_response: Some("2026-11-03T11:00:00Z"),
            ended: Some("2026-11-03T20:00:00Z"),
            pauses: vec![
                (
                    "2026-11-03T09:00:00Z",
                    Some("2026-11-03T09:30:00Z"),
                    Status::Waiting,
                ),
                (
                    "2026-11-03T14:00:00Z",
                    Some("2026-11-03T15:00:00Z"),
                    Status::Done,
                ),
                ("2026-11-03T20:00:00Z", None, Status::Done),
            ],
            reopens: 1,
            rating: Some(RatingValue::Bad),
            breaches: vec![SlaTarget::FirstResponse],
            ..base("2026-11-03T08:00:00Z")
        },
        T {
            assignee: Some("bob@example.com"),
            policy: Some("std"),
            first_response: Some("2026-11-04T10:45:00Z"),
            ..base("2026-11-04T10:00:00Z")
        },
        T {
            status: Status::Closed,
            assignee: Some("bob@example.com"),
            customer: Some("BETA"),
            category: Some("tech"),
            policy: Some("vip"),
            first_response: Some("2026-11-09T08:00:00Z"),
            ended: Some("2026-11-09T14:00:00Z"),
            pauses: vec![("2026-11-09T14:00:00Z", None, Status::Done)],
            rating: Some(RatingValue::Neutral),
            ..base("2026-11-06T13:00:00Z")
        },
        T {
            status: Status::Unassigned,
            customer: Some("BETA"),
            ..base("2026-11-10T09:00:00Z")
        },
        T {
            status: Status::Done,
            assignee: Some("alice@example.com"),
            customer: Some("ACME"),
            category: Some("billing"),
            ended: Some("2010-01-02T09:00:00Z"),
            ..base("2010-01-01T09:00:00Z")
        },
        T {
            status: Status::Deleted,
            assignee: Some("alice@example.com"),
            customer: Some("ACME"),
            ..base("2026-11-05T09:00:00Z")
        },
        T {
            status: Status::Waiting,
            assignee: Some("bob@example.com"),
            ..base("2010-03-01T09:00:00Z")
        },
    ]
}

fn to_ticket(s: &T) -> Ticket {
    let started = utc(s.started);
    let mut t =
        postdesk::render::desk::view_less_ticket(&postdesk::config::Config::default(), started);
    t.status = s.status;
    t.subject = format!("scripted {}", s.started);
    t.contact = "someone@cust.test".into();
    t.assignee = s.assignee.map(String::from);
    t.customer = s.customer.map(String::from);
    t.category = s.category.map(String::from);
    t.sla.policy = s.policy.map(String::from);
    t.sla.first_response_at = s.first_response.map(utc);
    t.sla.breached = !s.breaches.is_empty();
    t.sla.breaches = s.breaches.iter().map(|k| (*k, started)).collect();
    t.ended_at = s.ended.map(utc);
    t.work_started_at = s.assignee.map(|_| started);
    t.pauses = s
        .pauses
        .iter()
        .map(|(f, u, st)| Pause {
            from: utc(f),
            until: u.map(utc),
            status: *st,
        })
        .collect();
    t.reopen_count = s.reopens;
    t.reopened = s.reopens > 0;
    t.resolutions = u32::from(s.ended.is_some()) + s.reopens;
    t.rating = s.rating.map(|value| Rating {
        value,
        at: started,
        comment: None,
        resolution: t.resolutions,
    });
    if s.status == Status::Closed {
        t.closed_at = t.ended_at;
    }
    t
}

/// Commits the history into the store of the desk under `data` (sled, or
/// its database), numbered in order (SUP-1 … SUP-8), and closes it again.
fn write_history(data: &Path) {
    let store = common::open_store(data);
    let tickets: Vec<Ticket> = history().iter().map(to_ticket).collect();
    store
        .commit_blocking(None, move |tx, _| {
            for t in &tickets {
                let mut t = t.clone();
                t.number = tx.take_ticket_number()?;
                tx.put_ticket(&t)?;
            }
            Ok(())
        })
        .expect("commit history");
    store.close();
}

/// A desk with the history and no daemon: the CLI opens the store itself.
struct Desk {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Desk {
    fn new() -> Desk {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        write_history(&data);
        let config = dir.path().join("postdesk.yaml");
        std::fs::write(&config, yaml(free_port(), &data)).expect("config");
        Desk { dir, config }
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run postdesk")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "postdesk {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Wide enough to hold November 2026 for years, narrow enough to leave
/// out 2010.
const SINCE: &str = "3000d";

fn row<'a>(v: &'a Value, by: &str, group: &str) -> &'a Value {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r[by] == group)
        .unwrap_or_else(|| panic!("no row {by}={group} in {v:#}"))
}

fn groups(v: &Value, by: &str) -> Vec<String> {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[by].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn stats_by_agent_on_a_scripted_history() {
    let desk = Desk::new();
    let v: Value =
        serde_json::from_str(&desk.ok(&["stats", "--by", "agent", "--since", SINCE, "--json"]))
            .expect("json");
    assert_eq!(v["by"], "agent");
    assert_eq!(
        groups(&v, "agent"),
        ["(unassigned)", "alice@example.com", "bob@example.com"]
    );

    let a = row(&v, "agent", "alice@example.com");
    // Tickets 1 and 2; 6 is from 2010, 7 is spam.
    assert_eq!(a["tickets"], 2);
    assert_eq!(a["started"], 2);
    assert_eq!(a["done"], 2);
    assert_eq!(a["open"], 0);
    assert_eq!(a["resolved"], 2);
    assert_eq!(a["work_started"], 2);
    assert_eq!(a["reopened_tickets"], 1);
    assert_eq!(a["reopens"], 1);
    // First responses [30m, 2h30m]: nearest-rank median is the lower one.
    assert_eq!(a["first_response_median_seconds"], 1800);
    assert_eq!(a["first_response_p90_seconds"], 9000);
    // Resolutions [4h, 10h30m].
    assert_eq!(a["resolution_median_seconds"], 4 * H);
    assert_eq!(a["resolution_p90_seconds"], 10 * H + 1800);
    // Calendar time to done [4h, 12h]: pauses not subtracted here.
    assert_eq!(a["median_seconds_to_done"], 4 * H);
    assert_eq!(a["first_response_sla_met"], 1);
    assert_eq!(a["first_response_sla_breached"], 1);
    assert_eq!(a["first_response_sla_pct"], 50.0);
    assert_eq!(a["resolution_sla_met"], 1);
    assert_eq!(a["resolution_sla_breached"], 1);
    assert_eq!(a["resolution_sla_pct"], 50.0);
    assert_eq!(
        (&a["rating_good"], &a["rating_neutral"], &a["rating_bad"]),
        (&Value::from(1), &Value::from(0), &Value::from(1))
    );
    assert_eq!(a["rating_good_pct"], 50.0);

    let b = row(&v, "agent", "bob@example.com");
    // Tickets 3 and 4; 8 (2010, waiting) is in the backlog only.
    assert_eq!(
        (&b["tickets"], &b["open"]),
        (&Value::from(2), &Value::from(2))
    );
    assert_eq!(
        (&b["resolved"], &b["done"]),
        (&Value::from(1), &Value::from(1))
    );
    // First responses [45m, 3h (Fri 15–17 + Mon 09–10 in Tallinn)].
    assert_eq!(b["first_response_median_seconds"], 2700);
    assert_eq!(b["first_response_p90_seconds"], 3 * H);
    // Resolution of 4: 9h of open time, though 73h passed on the clock.
    assert_eq!(b["resolution_median_seconds"], 9 * H);
    assert_eq!(b["median_seconds_to_done"], 73 * H);
    assert_eq!(b["first_response_sla_pct"], 100.0);
    // 3 is still open: pending, not counted either way.
    assert_eq!(b["resolution_sla_pending"], 1);
    assert_eq!(b["resolution_sla_pct"], 100.0);
    assert_eq!(b["rating_good_pct"], 0.0);

    let u = row(&v, "agent", "(unassigned)");
    assert_eq!(
        (&u["tickets"], &u["open"]),
        (&Value::from(1), &Value::from(1))
    );
    // No policy: no target, so no compliance figure at all.
    assert!(u["first_response_sla_pct"].is_null(), "{u}");
    assert!(u["first_response_median_seconds"].is_null(), "{u}");
    assert!(u["rating_good_pct"].is_null(), "{u}");

    let t = &v["total"];
    assert_eq!(t["tickets"], 5);
    assert_eq!(t["open"], 3);
    assert_eq!(t["resolved"], 3);
    assert_eq!(t["reopens"], 1);
    // [30m, 45m, 2h30m, 3h]: median rank 2, p90 rank ⌈3.6⌉ = 4.
    assert_eq!(t["first_response_median_seconds"], 2700);
    assert_eq!(t["first_response_p90_seconds"], 3 * H);
    // [4h, 9h, 10h30m]: median rank 2, p90 rank 3.
    assert_eq!(t["resolution_median_seconds"], 9 * H);
    assert_eq!(t["resolution_p90_seconds"], 10 * H + 1800);
    // First response: 3 met (1, 3, 4), 1 breached (2). Resolution: 2 met
    // (1, 4), 1 breached (2): 66.7 %.
    assert_eq!(t["first_response_sla_pct"], 75.0);
    assert_eq!(t["resolution_sla_pct"], 66.7);
    assert_eq!(t["rating_good_pct"], 33.3);

    // A narrower window that ends before the history: no tickets, but the
    // backlog is still there.
    let none: Value =
        serde_json::from_str(&desk.ok(&["stats", "--by", "agent", "--since", "1s", "--json"]))
            .expect("json");
    assert_eq!(none["total"]["tickets"], 0, "{none}");
    assert_eq!(none["total"]["open"], 3, "{none}");
}

#[test]
fn stats_by_customer_and_category_as_json_and_csv() {
    let desk = Desk::new();
    let v: Value =
        serde_json::from_str(&desk.ok(&["stats", "--by", "customer", "--since", SINCE, "--json"]))
            .expect("json");
    assert_eq!(groups(&v, "customer"), ["(none)", "ACME", "BETA"]);
    let beta = row(&v, "customer", "BETA");
    // Tickets 4 and 5; 5 has no policy.
    assert_eq!(beta["tickets"], 2);
    assert_eq!(beta["first_response_median_seconds"], 3 * H);
    assert_eq!(beta["first_response_sla_met"], 1);
    assert_eq!(beta["first_response_sla_pending"], 0);

    let v: Value =
        serde_json::from_str(&desk.ok(&["stats", "--by", "category", "--since", SINCE, "--json"]))
            .expect("json");
    assert_eq!(groups(&v, "category"), ["(none)", "billing", "tech"]);
    assert_eq!(row(&v, "category", "billing")["resolution_sla_pct"], 50.0);
    assert_eq!(
        row(&v, "category", "tech")["resolution_median_seconds"],
        9 * H
    );

    // CSV: the same figures, a header first and the total last.
    let csv = desk.ok(&["stats", "--by", "category", "--since", SINCE, "--csv"]);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines.len(), 6, "{csv:?}"); // header, 3 groups, total, ""
    assert_eq!(
        lines[0],
        "category,started,done,open,reopened,median_seconds_to_done,tickets,resolved,\
         work_started,reopened_tickets,reopens,first_response_median_seconds,\
         first_response_p90_seconds,resolution_median_seconds,resolution_p90_seconds,\
         first_response_sla_met,first_response_sla_breached,first_response_sla_pending,\
         first_response_sla_pct,resolution_sla_met,resolution_sla_breached,\
         resolution_sla_pending,resolution_sla_pct,rating_good,rating_neutral,rating_bad,\
         rating_good_pct"
    );
    // billing = tickets 1 and 2 (6 is from 2010: done long ago, not open).
    assert_eq!(
        lines[2],
        "billing,2,2,0,1,14400,2,2,2,1,1,1800,9000,14400,37800,1,1,0,50.0,1,1,0,50.0,1,0,1,50.0"
    );
    // tech = ticket 4.
    assert_eq!(
        lines[3],
        "tech,1,1,0,0,262800,1,1,1,0,0,10800,10800,32400,32400,1,0,0,100.0,1,0,0,100.0,0,1,0,0.0"
    );
    assert!(lines[4].starts_with("(total),5,3,3,1,"), "{csv}");

    // The readable table says the same in hours and minutes.
    let text = desk.ok(&["stats", "--by", "category", "--since", SINCE]);
    let tech = text
        .lines()
        .find(|l| l.starts_with("tech"))
        .unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = tech.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "tech", "1", "0", "1", "0", "3h", "00m", "3h", "00m", "9h", "00m", "9h", "00m",
            "100.0%", "100.0%", "0.0%"
        ],
        "{text}"
    );

    // A grouping that does not exist is refused, saying which do.
    let out = desk.cli(&["stats", "--by", "team"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent, customer or category"), "{err}");
}

/// The same report through a running daemon's control socket, and the
/// ticket's own figures in `ticket show`.
#[test]
fn stats_and_ticket_show_through_the_daemon() {
    let d = Daemon::start_custom(|port, data| {
        write_history(data);
        yaml(port, data)
    });
    let v: Value =
        serde_json::from_str(&d.cli_ok(&["stats", "--by", "agent", "--since", SINCE, "--json"]))
            .expect("json");
    assert_eq!(v["total"]["tickets"], 5, "{v}");
    assert_eq!(v["total"]["first_response_sla_pct"], 75.0, "{v}");
    assert_eq!(
        row(&v, "agent", "bob@example.com")["resolution_median_seconds"],
        9 * H
    );

    let show = d.show("SUP-2");
    let f = &show["figures"];
    assert_eq!(f["first_response_seconds"], 9000, "{show:#}");
    assert_eq!(f["resolution_seconds"], 10 * H + 1800, "{show:#}");
    assert_eq!(f["reopen_count"], 1);
    assert_eq!(f["first_response_sla"], "breached");
    assert_eq!(f["resolution_sla"], "breached");
    let text = d.cli_ok(&["ticket", "show", "SUP-4"]);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "work started 2026-11-06T13:00:00Z",
        "1st response 3h 00m (SLA: met)",
        "resolution 9h 00m (SLA: met)",
        "reopens 0",
    ] {
        assert!(flat.contains(want), "{want:?} not in\n{text}");
    }
}

/// Nothing ever delivered: the report is there, empty, and asking does not
/// create a data directory.
#[test]
fn stats_on_a_desk_with_no_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("postdesk.yaml");
    std::fs::write(&config, yaml(free_port(), &data)).expect("config");
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["stats", "--by", "customer", "--csv"])
        .output()
        .expect("run postdesk");
    assert!(out.status.success(), "{out:?}");
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines.len(), 3, "{csv:?}"); // header, total, ""
    assert!(lines[0].starts_with("customer,started,"), "{csv}");
    assert!(lines[1].starts_with("(total),0,0,0,0,,0,"), "{csv}");
    assert!(!data.exists(), "stats created {}", data.display());
}
