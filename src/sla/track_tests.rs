use super::*;
use crate::store::Ticket;
use proptest::prelude::*;

const CFG: &str = "\
support:
  address: support@desk.test
team:
  agents:
    - email: alice@desk.test
sla:
  warn_before: 30m
  policies:
    - {id: vip, if: {priority: high}, first_response: 1h, resolution: 2h}
    - {id: std, first_response: 4h, resolution: 8h}
";

fn cfg() -> Config {
    Config::parse(CFG, "postdesk.yaml").unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + secs).unwrap()
}

const H: i64 = 3600;

fn ticket() -> Ticket {
    let c = cfg();
    let mut t = crate::render::desk::view_less_ticket(&c, at(0));
    t.number = 7;
    t.status = Status::Unassigned;
    t
}

/// Writes a plan the way `deliver::write_jobs` does: ids assigned in
/// order, added jobs remembered on the ticket.
fn write(t: &mut Ticket, p: &SlaPlan, next_id: &mut u64) {
    for (due, kind) in &p.schedule {
        *next_id += 1;
        let r = ScheduledRef {
            id: *next_id,
            due: *due,
        };
        t.sla.jobs.push(job_ref(t, r, kind).unwrap());
    }
}

fn kinds(p: &SlaPlan) -> Vec<(Timestamp, &'static str, SlaTarget, Timestamp)> {
    p.schedule
        .iter()
        .map(|(at, k)| match k {
            JobKind::SlaWarn { target, due, .. } => (*at, "warn", *target, *due),
            JobKind::SlaBreach { target, due, .. } => (*at, "breach", *target, *due),
            _ => panic!("not an SLA job: {k:?}"),
        })
        .collect()
}

#[test]
fn a_new_ticket_gets_its_policy_due_times_and_four_jobs() {
    let c = cfg();
    let mut t = ticket();
    let p = track(&mut t, false, &c, at(0));
    assert_eq!(t.sla.policy.as_deref(), Some("std"));
    assert_eq!(t.sla.first_response_due, Some(at(4 * H)));
    assert_eq!(t.sla.resolution_due, Some(at(8 * H)));
    assert_eq!(
        kinds(&p),
        vec![
            (
                at(4 * H - 1800),
                "warn",
                SlaTarget::FirstResponse,
                at(4 * H)
            ),
            (at(4 * H), "breach", SlaTarget::FirstResponse, at(4 * H)),
            (at(8 * H - 1800), "warn", SlaTarget::Resolution, at(8 * H)),
            (at(8 * H), "breach", SlaTarget::Resolution, at(8 * H)),
        ]
    );
    assert!(p.cancel.is_empty());
    assert!(t.pauses.is_empty());
}

#[test]
fn tracking_twice_changes_nothing() {
    let c = cfg();
    let mut t = ticket();
    let mut id = 0;
    let p = track(&mut t, false, &c, at(0));
    write(&mut t, &p, &mut id);
    let snapshot = t.clone();
    // Same instant, and later: the jobs are matched by deadline, not time.
    assert!(track(&mut t, false, &c, at(0)).is_empty());
    assert!(track(&mut t, false, &c, at(2 * H)).is_empty());
    assert_eq!(t, snapshot);
    // A waiting ticket too: its pause is not opened twice.
    t.status = Status::Waiting;
    let p = track(&mut t, false, &c, at(H));
    assert_eq!(p.cancel.len(), 4);
    let snapshot = t.clone();
    assert!(track(&mut t, false, &c, at(H + 5)).is_empty());
    assert_eq!(t, snapshot);
}

#[test]
fn waiting_pauses_both_clocks_and_resuming_moves_them_by_the_pause() {
    let c = cfg();
    let mut t = ticket();
    let mut id = 0;
    let p = track(&mut t, false, &c, at(0));
    write(&mut t, &p, &mut id);
    t.status = Status::Waiting;
    let p = track(&mut t, false, &c, at(H));
    // Paused: no due time, no deadline to warn of or breach.
    assert_eq!(
        (t.sla.first_response_due, t.sla.resolution_due),
        (None, None)
    );
    assert!(p.schedule.is_empty());
    assert_eq!(
        p.cancel.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(t.sla.jobs.is_empty());
    assert_eq!(
        t.pauses,
        vec![Pause {
            from: at(H),
            until: None,
            status: Status::Waiting
        }]
    );
    // Snoozed from waiting: one pause closes, the next opens.
    t.status = Status::Snoozed;
    track(&mut t, false, &c, at(2 * H));
    assert_eq!(t.pauses.len(), 2);
    assert_eq!(t.pauses[0].until, Some(at(2 * H)));
    assert_eq!(t.pauses[1].status, Status::Snoozed);
    // Back to active after 2h paused: both due times 2h later.
    t.status = Status::Active;
    let p = track(&mut t, false, &c, at(3 * H));
    assert!(t.pauses.iter().all(|p| p.until.is_some()));
    assert_eq!(t.sla.first_response_due, Some(at(6 * H)));
    assert_eq!(t.sla.resolution_due, Some(at(10 * H)));
    assert_eq!(p.schedule.len(), 4);
}

#[test]
fn first_response_is_recorded_once_and_cancels_only_its_own_jobs() {
    let c = cfg();
    let mut t = ticket();
    let mut id = 0;
    let p = track(&mut t, false, &c, at(0));
    write(&mut t, &p, &mut id);
    // Not an agent's mail to the customer: nothing met.
    track(&mut t, false, &c, at(H));
    assert_eq!(t.sla.first_response_at, None);
    let p = track(&mut t, true, &c, at(2 * H));
    assert_eq!(t.sla.first_response_at, Some(at(2 * H)));
    assert_eq!(t.sla.first_response_due, None);
    assert_eq!(t.sla.resolution_due, Some(at(8 * H)));
    assert_eq!(
        p.cancel.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(p.schedule.is_empty());
    assert!(t.sla.jobs.iter().all(|j| j.target == SlaTarget::Resolution));
    // A second agent reply is no first response.
    track(&mut t, true, &c, at(3 * H));
    assert_eq!(t.sla.first_response_at, Some(at(2 * H)));
}

#[test]
fn priority_change_picks_the_stricter_policy_and_replaces_the_jobs() {
    let c = cfg();
    let mut t = ticket();
    let mut id = 0;
    let p = track(&mut t, false, &c, at(0));
    write(&mut t, &p, &mut id);
    t.priority = "high".into();
    let p = track(&mut t, false, &c, at(10 * 60));
    assert_eq!(t.sla.policy.as_deref(), Some("vip"));
    assert_eq!(t.sla.first_response_due, Some(at(H)));
    assert_eq!(t.sla.resolution_due, Some(at(2 * H)));
    assert_eq!(p.cancel.len(), 4);
    assert_eq!(
        kinds(&p),
        vec![
            (at(H - 1800), "warn", SlaTarget::FirstResponse, at(H)),
            (at(H), "breach", SlaTarget::FirstResponse, at(H)),
            (at(2 * H - 1800), "warn", SlaTarget::Resolution, at(2 * H)),
            (at(2 * H), "breach", SlaTarget::Resolution, at(2 * H)),
        ]
    );
}

#[test]
fn near_deadlines_warn_now_and_past_ones_only_breach() {
    let c = cfg();
    let mut t = ticket();
    t.priority = "high".into();
    // 50 minutes in: the first response (due at 1h) is warned of at once.
    let p = track(&mut t, false, &c, at(50 * 60));
    assert_eq!(
        kinds(&p)[0],
        (at(50 * 60), "warn", SlaTarget::FirstResponse, at(H))
    );
    let mut t = ticket();
    t.priority = "high".into();
    // 90 minutes in: first response overdue, only its breach (due in the past).
    let p = track(&mut t, false, &c, at(90 * 60));
    assert_eq!(
        kinds(&p)[0],
        (at(H), "breach", SlaTarget::FirstResponse, at(H))
    );
    assert_eq!(kinds(&p)[1].1, "warn");
}

#[test]
fn a_warned_or_breached_deadline_gets_no_new_job() {
    let c = cfg();
    let mut t = ticket();
    t.sla.warned.push((SlaTarget::FirstResponse, at(4 * H)));
    t.sla.breaches.push((SlaTarget::Resolution, at(8 * H)));
    let p = track(&mut t, false, &c, at(0));
    assert_eq!(
        kinds(&p),
        vec![(at(4 * H), "breach", SlaTarget::FirstResponse, at(4 * H))]
    );
    // The due time still shows, overdue.
    assert_eq!(t.sla.resolution_due, Some(at(8 * H)));
}

#[test]
fn done_meets_the_resolution_reopen_resumes_it_and_closed_ends_everything() {
    let c = cfg();
    let mut t = ticket();
    let mut id = 0;
    let p = track(&mut t, true, &c, at(0));
    write(&mut t, &p, &mut id);
    t.status = Status::Done;
    let p = track(&mut t, false, &c, at(2 * H));
    assert_eq!(t.sla.resolution_due, None);
    assert_eq!(p.cancel.len(), 2);
    t.status = Status::Active;
    let p = track(&mut t, false, &c, at(5 * H));
    // 2h used before done, 6h left from the reopen.
    assert_eq!(t.sla.resolution_due, Some(at(11 * H)));
    write(&mut t, &p, &mut id);
    t.status = Status::Closed;
    let p = track(&mut t, false, &c, at(6 * H));
    assert_eq!(
        (t.sla.first_response_due, t.sla.resolution_due),
        (None, None)
    );
    assert_eq!(p.cancel.len(), 2);
    assert!(t.sla.jobs.is_empty());
    assert_eq!(t.sla.policy.as_deref(), Some("std"));
}

#[test]
fn a_pause_after_the_deadline_leaves_it_overdue_and_its_breach_due() {
    let c = cfg();
    let mut t = ticket();
    let mut id = 0;
    let p = track(&mut t, false, &c, at(0));
    write(&mut t, &p, &mut id);
    // Waiting from exactly the first-response deadline: it ran out first.
    t.status = Status::Waiting;
    let p = track(&mut t, false, &c, at(4 * H));
    assert_eq!(t.sla.first_response_due, Some(at(4 * H)));
    assert_eq!(t.sla.resolution_due, None);
    // The first-response breach stays; the warning and the resolution
    // jobs go.
    assert_eq!(
        p.cancel.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 3, 4]
    );
    assert!(p.schedule.is_empty());
}

#[test]
fn no_matching_policy_no_clock() {
    let c = Config::parse(
        "support: {address: s@desk.test}\nsla:\n  policies:\n    - {id: vip, if: {priority: high}, resolution: 1h}\n",
        "postdesk.yaml",
    )
    .unwrap();
    let mut t = ticket();
    let p = track(&mut t, false, &c, at(0));
    assert!(p.is_empty());
    assert_eq!(t.sla.policy, None);
    assert_eq!(t.sla.resolution_due, None);
}

fn status_of(i: u8) -> Status {
    Status::ALL[usize::from(i) % 5]
}

proptest! {
    /// Whatever the status changes, a due time is never earlier than the
    /// unpaused one, a pausing status has none still ahead, and the jobs
    /// are exactly the ones the due times want.
    #[test]
    fn pauses_never_bring_a_due_time_forward(
        steps in proptest::collection::vec((1i64..4 * H, 0u8..5), 0..12),
    ) {
        let c = cfg();
        let mut t = ticket();
        let mut id = 0;
        let p = track(&mut t, false, &c, at(0));
        write(&mut t, &p, &mut id);
        let mut now = 0;
        for (gap, s) in steps {
            now += gap;
            t.status = status_of(s);
            let p = track(&mut t, false, &c, at(now));
            write(&mut t, &p, &mut id);
            // Paused: no due time, unless it ran out before the pause.
            if pausing(t.status) {
                prop_assert!(t.sla.resolution_due.is_none_or(|d| d <= at(now)));
                prop_assert!(t.sla.first_response_due.is_none_or(|d| d <= at(now)));
            }
            if let Some(d) = t.sla.first_response_due {
                prop_assert!(d >= at(4 * H));
            }
            if let Some(d) = t.sla.resolution_due {
                prop_assert!(d >= at(8 * H));
            }
            // Exactly the jobs the due times want, each once.
            let breach_jobs = t.sla.jobs.iter().filter(|j| j.breach).count();
            let dues = usize::from(t.sla.first_response_due.is_some())
                + usize::from(t.sla.resolution_due.is_some());
            prop_assert_eq!(breach_jobs, dues);
            prop_assert!(t.pauses.iter().filter(|p| p.until.is_none()).count() <= 1);
        }
    }
}

#[test]
fn work_starts_the_first_time_an_agent_holds_it_active_by_any_path() {
    let c = cfg();
    let mut t = ticket();
    track(&mut t, false, &c, at(0));
    assert_eq!(t.work_started_at, None, "unassigned is not work");
    // Given by a Reply-All or routing: no state-machine take involved.
    t.assignee = Some("alice@example.com".into());
    t.status = Status::Active;
    track(&mut t, false, &c, at(60));
    assert_eq!(t.work_started_at, Some(at(60)));
    // Later holders do not move the start of work.
    t.status = Status::Unassigned;
    t.assignee = None;
    track(&mut t, false, &c, at(90));
    t.assignee = Some("bob@example.com".into());
    t.status = Status::Active;
    track(&mut t, false, &c, at(120));
    assert_eq!(t.work_started_at, Some(at(60)));
}
