//! The decision core driven over an in-memory store: each follow-up and
//! threading rule of SPEC §3, as a desk would see it.

use super::*;
use crate::deliver::apply;
use crate::ingest::Addr;
use crate::render::{render_all, Templates};
use crate::store::mem::MemStore;
use crate::store::{SpoolRef, Writes};

fn cfg() -> Config {
    Config::parse(
        r#"
support: {address: support@example.com}
team:
  domains: [example.com]
  agents: [{email: alice@example.com}, {email: bob@example.com}]
policy: {reopen_within: 14d, ack_rate_limit: 3}
customers:
  - {id: ACME, domains: [acme.test]}
"#,
        "test.yaml",
    )
    .unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn addr(e: &str) -> Addr {
    Addr::new(e)
}

struct M(Parsed);

impl M {
    fn new(id: &str, from: &str, subject: &str) -> M {
        let mut p = Parsed {
            message_id: id.into(),
            subject: subject.into(),
            from: Some(addr(from)),
            to: vec![addr("support@example.com")],
            text: format!("text of {id}"),
            content_type: "text/plain".into(),
            ..Default::default()
        };
        p.content_hash = format!("hash-of-{id}");
        M(p)
    }
    fn reply_to(mut self, id: &str) -> M {
        self.0.in_reply_to = vec![id.into()];
        self
    }
    fn refs(mut self, ids: &[&str]) -> M {
        self.0.references = ids.iter().map(|s| s.to_string()).collect();
        self
    }
    fn to(mut self, to: &[&str]) -> M {
        self.0.to = to.iter().map(|a| addr(a)).collect();
        self
    }
    fn cc(mut self, cc: &[&str]) -> M {
        self.0.cc = cc.iter().map(|a| addr(a)).collect();
        self
    }
    fn thread_index(mut self, ti: &[u8]) -> M {
        self.0.thread_index = Some(ti.to_vec());
        self
    }
    fn auto(mut self) -> M {
        self.0.auto_submitted = Some("auto-replied".into());
        self
    }
    fn returned(mut self, id: &str) -> M {
        self.0.returned_message_ids = vec![id.into()];
        self
    }
    fn hash(mut self, h: &str) -> M {
        self.0.content_hash = h.into();
        self
    }
}

/// Decides and applies like `deliver` does, on the in-memory store.
fn deliver(s: &MemStore, cfg: &Config, m: &M, now: Timestamp) -> Decision {
    let env = Envelope {
        mail_from: m
            .0
            .from
            .as_ref()
            .map(|a| a.email.clone())
            .unwrap_or_default(),
        rcpt_to: vec!["support@example.com".into()],
    };
    let d = decide(&m.0, &env, cfg, s, now).unwrap();
    let mails = render_all(&d, &m.0, cfg, &Templates::builtin(), now);
    let raw = SpoolRef {
        file: 1,
        offset: 0,
        len: 1,
        check: 0,
    };
    apply(s, &d, &m.0, mails, raw, now).unwrap();
    d
}

fn kinds(d: &Decision) -> Vec<&'static str> {
    d.intents
        .iter()
        .map(|i| match i {
            Intent::Ack { .. } => "ack",
            Intent::Copy { .. } => "copy",
            Intent::Notice { .. } => "notice",
            Intent::Taken { .. } => "taken",
            Intent::Refusal { .. } => "refusal",
            Intent::Capacity { .. } => "capacity",
            Intent::Watchers { .. } => "watchers",
            Intent::Escalated { .. } => "escalated",
            Intent::Answer { .. } => "answer",
            Intent::Status { .. } => "status",
            Intent::Rated { .. } => "rated",
            Intent::LinkRefused { .. } => "link-refused",
        })
        .collect()
}

fn t(s: &MemStore, n: u64) -> Ticket {
    s.ticket(n).unwrap().unwrap()
}

#[test]
fn new_mail_opens_a_ticket_with_ack_and_copies() {
    let (s, c) = (MemStore::new(), cfg());
    let d = deliver(
        &s,
        &c,
        &M::new("a1@cust.test", "mari@cust.test", "Printer broken"),
        at(0),
    );
    assert_eq!(d.action, Action::New);
    assert_eq!(kinds(&d), vec!["ack", "copy"]);
    let tk = t(&s, 1);
    assert_eq!(tk.status, Status::Unassigned);
    assert_eq!(tk.contact, "mari@cust.test");
    assert_eq!(tk.subject, "Printer broken");
    assert_eq!(tk.message_ids, vec!["a1@cust.test"]);
    // The ack and the copy are indexed: answers to them thread back.
    let out = s.outbox();
    assert_eq!(out.len(), 2);
    for o in &out {
        assert_eq!(s.ticket_by_key(&o.message_id).unwrap(), Some(1));
        assert!(o.message_id.starts_with("SUP-1."), "{}", o.message_id);
    }
    let ack = String::from_utf8_lossy(&out[0].head).to_string();
    assert!(ack.contains("Subject: Re: Printer broken [SUP-1]"), "{ack}");
    assert!(ack.contains("Auto-Submitted: auto-replied"), "{ack}");
    assert!(ack.contains("In-Reply-To: <a1@cust.test>"), "{ack}");
    assert_eq!(out[1].rcpt_to, vec!["alice@example.com", "bob@example.com"]);
}

#[test]
fn replies_join_by_in_reply_to_references_and_reverse() {
    let (s, c) = (MemStore::new(), cfg());
    deliver(&s, &c, &M::new("r1@x.test", "a@x.test", "Q"), at(0));
    let d = deliver(
        &s,
        &c,
        &M::new("r2@x.test", "a@x.test", "Re: Q").reply_to("r1@x.test"),
        at(1),
    );
    assert_eq!((d.action, d.thread.rule), (Action::Append, Rule::InReplyTo));
    let d = deliver(
        &s,
        &c,
        &M::new("r3@x.test", "b@x.test", "Re: Q").refs(&["r1@x.test", "r2@x.test"]),
        at(2),
    );
    assert_eq!(
        (d.action, d.thread.rule),
        (Action::Append, Rule::References)
    );
    // A reply to a mail postdesk never saw, referenced by a ticket message.
    deliver(
        &s,
        &c,
        &M::new("r4@x.test", "a@x.test", "Re: Q").refs(&["r3@x.test", "unseen@x.test"]),
        at(3),
    );
    let d = deliver(&s, &c, &M::new("unseen@x.test", "c@x.test", "Q"), at(4));
    assert_eq!(d.thread.rule, Rule::ReverseReference);
    assert_eq!(s.tickets().len(), 1);
    assert_eq!(t(&s, 1).replies, 4);
}

#[test]
fn thread_index_joins_but_not_a_forward() {
    let (s, c) = (MemStore::new(), cfg());
    let root = [9u8; 22];
    let mut child = root.to_vec();
    child.extend_from_slice(&[1, 2, 3, 4, 5]);
    deliver(
        &s,
        &c,
        &M::new("o1@x.test", "a@x.test", "Outlook").thread_index(&root),
        at(0),
    );
    let d = deliver(
        &s,
        &c,
        &M::new("o2@x.test", "a@x.test", "RE: Outlook").thread_index(&child),
        at(1),
    );
    assert_eq!(
        (d.action, d.thread.rule),
        (Action::Append, Rule::ThreadIndex)
    );
    let d = deliver(
        &s,
        &c,
        &M::new("o3@x.test", "a@x.test", "FW: Outlook").thread_index(&child),
        at(2),
    );
    assert_eq!(d.action, Action::New);
}

#[test]
fn token_counts_only_for_participants() {
    let (s, c) = (MemStore::new(), cfg());
    deliver(
        &s,
        &c,
        &M::new("k1@x.test", "mari@x.test", "Help").cc(&["jaan@x.test"]),
        at(0),
    );
    let d = deliver(
        &s,
        &c,
        &M::new("k2@x.test", "jaan@x.test", "Re: Help [SUP-1]"),
        at(1),
    );
    assert_eq!((d.action, d.thread.rule), (Action::Append, Rule::Token));
    // A stranger quoting the token gets their own ticket, and nothing of
    // ticket 1 is sent to them.
    let d = deliver(
        &s,
        &c,
        &M::new("k3@evil.test", "eve@evil.test", "Re: Help [SUP-1]"),
        at(2),
    );
    assert_eq!(d.action, Action::New);
    assert_eq!(d.ticket.as_ref().unwrap().number, 2);
    assert_eq!(d.thread.ignored_tokens.len(), 1);
    // Staff may always use a token.
    let d = deliver(
        &s,
        &c,
        &M::new("k4@example.com", "bob@example.com", "[SUP-1]").to(&["support@example.com"]),
        at(3),
    );
    assert_eq!((d.action, d.thread.rule), (Action::Note, Rule::Token));
    // A colleague at the contact's own company domain may, too.
    let d = deliver(
        &s,
        &c,
        &M::new("k5@x.test", "boss@x.test", "[SUP-1] more"),
        at(4),
    );
    assert_eq!(d.thread.ticket, Some(1));
}

#[test]
fn public_provider_domain_is_not_a_participant_domain() {
    let (s, c) = (MemStore::new(), cfg());
    deliver(
        &s,
        &c,
        &M::new("g1@mail.gmail.com", "mari@gmail.com", "Help"),
        at(0),
    );
    let d = deliver(
        &s,
        &c,
        &M::new("g2@mail.gmail.com", "other@gmail.com", "Re: Help [SUP-1]"),
        at(1),
    );
    assert_eq!(d.action, Action::New);
}

#[test]
fn duplicate_changes_nothing_and_reused_id_is_kept_apart() {
    let (s, c) = (MemStore::new(), cfg());
    deliver(&s, &c, &M::new("d1@x.test", "a@x.test", "Dup"), at(0));
    let before = s.data.borrow().clone();
    let d = deliver(&s, &c, &M::new("d1@x.test", "a@x.test", "Dup"), at(1));
    assert_eq!(d.action, Action::Duplicate);
    assert!(d.intents.is_empty());
    let after = s.data.borrow().clone();
    assert_eq!(before.tickets, after.tickets);
    assert_eq!(before.outbox.len(), after.outbox.len());
    let d = deliver(
        &s,
        &c,
        &M::new("d1@x.test", "a@x.test", "Other").hash("different"),
        at(2),
    );
    assert_ne!(d.action, Action::Duplicate);
    assert!(d.internal_id.starts_with("d1@x.test#"), "{}", d.internal_id);
    assert_eq!(d.warnings.len(), 1);
}

#[test]
fn done_ticket_reopens_within_window_and_follows_up_after() {
    let (s, c) = (MemStore::new(), cfg());
    deliver(&s, &c, &M::new("f1@x.test", "a@x.test", "Old"), at(0));
    let mut tk = t(&s, 1);
    tk.status = Status::Done;
    tk.assignee = Some("alice@example.com".into());
    tk.ended_at = Some(at(100));
    s.put_ticket(&tk).unwrap();
    let d = deliver(
        &s,
        &c,
        &M::new("f2@x.test", "a@x.test", "Re: Old").reply_to("f1@x.test"),
        at(200),
    );
    assert_eq!(d.action, Action::Reopen);
    assert_eq!(
        kinds(&d),
        vec!["notice", "copy"],
        "the assignee hears of it"
    );
    let tk = t(&s, 1);
    assert_eq!(
        (tk.status, tk.reopened, tk.ended_at),
        (Status::Active, true, None)
    );
    // Done by nobody in particular: back to the unassigned queue, REOPENED.
    let mut tk = t(&s, 1);
    tk.status = Status::Done;
    tk.assignee = None;
    tk.ended_at = Some(at(150));
    s.put_ticket(&tk).unwrap();
    let d = deliver(
        &s,
        &c,
        &M::new("f2b@x.test", "a@x.test", "Re: Old").reply_to("f1@x.test"),
        at(210),
    );
    assert_eq!(d.action, Action::Reopen);
    assert_eq!(t(&s, 1).status, Status::Unassigned);
    assert!(t(&s, 1).reopened);

    let mut tk = t(&s, 1);
    tk.status = Status::Done;
    tk.ended_at = Some(at(300));
    s.put_ticket(&tk).unwrap();
    let day = 86_400;
    let d = deliver(
        &s,
        &c,
        &M::new("f3@x.test", "a@x.test", "Re: Old").reply_to("f2@x.test"),
        at(300 + 15 * day),
    );
    assert_eq!(d.action, Action::FollowUp);
    assert_eq!(kinds(&d), vec!["ack", "copy"]);
    let f = t(&s, 2);
    assert_eq!(f.follow_up_of, Some(1));
    assert_eq!(t(&s, 1).status, Status::Done);
    assert_eq!(t(&s, 1).followed_by, Some(2));
    // Later mail that still points at the old thread joins the follow-up.
    let d = deliver(
        &s,
        &c,
        &M::new("f4@x.test", "a@x.test", "Re: Old").reply_to("f1@x.test"),
        at(301 + 15 * day),
    );
    assert_eq!(
        (d.action, d.ticket.as_ref().unwrap().number),
        (Action::Append, 2)
    );
}

#[test]
fn waiting_or_snoozed_wakes_on_customer_mail() {
    let (s, c) = (MemStore::new(), cfg());
    deliver(&s, &c, &M::new("w1@x.test", "a@x.test", "W"), at(0));
    for st in [Status::Waiting, Status::Snoozed] {
        let mut tk = t(&s, 1);
        tk.status = st;
        s.put_ticket(&tk).unwrap();
        let id = format!("w-{st}@x.test");
        let d = deliver(
            &s,
            &c,
            &M::new(&id, "a@x.test", "Re: W").reply_to("w1@x.test"),
            at(1),
        );
        assert_eq!(d.action, Action::Wake);
        assert_eq!(t(&s, 1).status, Status::Active);
    }
}

#[test]
fn staff_reply_all_assigns_and_staff_without_contact_is_a_note() {
    let (s, c) = (MemStore::new(), cfg());
    deliver(&s, &c, &M::new("s1@x.test", "mari@x.test", "Help"), at(0));
    let d = deliver(
        &s,
        &c,
        &M::new("s2@example.com", "alice@example.com", "Re: Help [SUP-1]")
            .reply_to("s1@x.test")
            .to(&["mari@x.test"])
            .cc(&["support@example.com"]),
        at(1),
    );
    assert_eq!(d.action, Action::Assign);
    assert_eq!(
        kinds(&d),
        vec!["copy"],
        "no ack, no notices: only bob's copy"
    );
    let tk = t(&s, 1);
    assert_eq!(
        (tk.status, tk.assignee.as_deref()),
        (Status::Active, Some("alice@example.com"))
    );
    assert_eq!(tk.last_direction, Direction::Out);
    let d = deliver(
        &s,
        &c,
        &M::new("s3@example.com", "bob@example.com", "Re: Help [SUP-1]").reply_to("s2@example.com"),
        at(2),
    );
    assert_eq!((d.action, d.kind), (Action::Note, MessageKind::Note));
    assert_eq!(t(&s, 1).replies, 1, "a note is not a reply");
    match &d.intents[..] {
        [Intent::Copy { to }] => assert_eq!(to, &vec!["alice@example.com".to_string()]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn staff_started_thread_is_theirs_with_the_customer_as_contact() {
    let (s, c) = (MemStore::new(), cfg());
    let d = deliver(
        &s,
        &c,
        &M::new("n1@example.com", "bob@example.com", "Your order")
            .to(&["kalle@acme.test"])
            .cc(&["support@example.com"]),
        at(0),
    );
    assert_eq!(d.action, Action::New);
    assert_eq!(kinds(&d), vec!["copy"]);
    let tk = t(&s, 1);
    assert_eq!(tk.status, Status::Active);
    assert_eq!(tk.assignee.as_deref(), Some("bob@example.com"));
    assert_eq!(tk.contact, "kalle@acme.test");
    assert_eq!(tk.customer.as_deref(), Some("ACME"));
}

#[test]
fn auto_replies_and_bounces_never_open_tickets() {
    let (s, c) = (MemStore::new(), cfg());
    let d = deliver(
        &s,
        &c,
        &M::new("v1@x.test", "a@x.test", "Out of office").auto(),
        at(0),
    );
    assert_eq!((d.action, d.kind), (Action::Apart, MessageKind::AutoReply));
    assert!(d.intents.is_empty());
    assert!(s.tickets().is_empty());
    // An auto-reply to our ack lands on the ticket, changing nothing.
    deliver(&s, &c, &M::new("v2@x.test", "a@x.test", "Q"), at(1));
    let ack_id = s.outbox()[0].message_id.clone();
    let before = t(&s, 1);
    let d = deliver(
        &s,
        &c,
        &M::new("v3@x.test", "a@x.test", "Auto: Q")
            .auto()
            .returned(&ack_id),
        at(2),
    );
    assert_eq!((d.action, d.thread.rule), (Action::Attach, Rule::Returned));
    let after = t(&s, 1);
    assert_eq!(
        (after.status, after.replies),
        (before.status, before.replies)
    );
    assert_eq!(after.message_ids.len(), 2);
}

#[test]
fn ack_rate_limit_per_sender_per_hour() {
    let (s, c) = (MemStore::new(), cfg());
    let mut acks = 0;
    for i in 0..5 {
        let d = deliver(
            &s,
            &c,
            &M::new(&format!("rl{i}@x.test"), "loud@x.test", &format!("n{i}")),
            at(i),
        );
        acks += kinds(&d).iter().filter(|k| **k == "ack").count();
    }
    assert_eq!(acks, 3);
    let d = deliver(
        &s,
        &c,
        &M::new("rl9@x.test", "loud@x.test", "later"),
        at(3700),
    );
    assert_eq!(kinds(&d), vec!["ack", "copy"]);
}

#[test]
fn decide_is_deterministic() {
    let c = cfg();
    let run = || {
        let s = MemStore::new();
        deliver(&s, &c, &M::new("z1@x.test", "a@x.test", "Z"), at(0));
        let d = deliver(
            &s,
            &c,
            &M::new("z2@x.test", "a@x.test", "Re: Z").reply_to("z1@x.test"),
            at(1),
        );
        (format!("{d:?}"), s.outbox())
    };
    assert_eq!(run(), run());
}

// ---- desk policies (issue #8): routing on new tickets ----------------------

fn policy_cfg() -> Config {
    Config::parse(
        r#"
support: {address: support@example.com}
team:
  domains: [example.com]
  agents: [{email: alice@example.com}, {email: bob@example.com}]
policy: {reopen_within: 1d}
customers:
  - {id: ACME, domains: [acme.test], manager: alice@example.com}
categories:
  - {id: billing, default_owner: bob@example.com, distribution: {max_open: 5}}
  - {id: tech, distribution: {mode: least_loaded}}
routing:
  - if: {subject: "(?i)newsletter"}
    then: {drop: true}
  - if: {subject: "(?i)invoice"}
    then: {category: billing, priority: high}
  - if: {subject: "(?i)server"}
    then: {category: tech}
  - if: {subject: "(?i)boss"}
    then: {assignee: alice@example.com, tags: [boss]}
"#,
        "test.yaml",
    )
    .unwrap()
}

/// `deliver` with the compiled rules in the context, as the daemon runs.
fn routed(s: &MemStore, cfg: &Config, m: &M, now: Timestamp, history: bool) -> Decision {
    let rules = crate::policy::Rules::new(cfg).unwrap();
    let ctx = Context {
        rules: Some(&rules),
        history,
        ..Context::default()
    };
    let env = Envelope {
        mail_from: m
            .0
            .from
            .as_ref()
            .map(|a| a.email.clone())
            .unwrap_or_default(),
        rcpt_to: vec!["support@example.com".into()],
    };
    let d = decide_with(&m.0, &env, cfg, s, now, &ctx).unwrap();
    let mails = render_all(&d, &m.0, cfg, &Templates::builtin(), now);
    let raw = SpoolRef {
        file: 1,
        offset: 0,
        len: 1,
        check: 0,
    };
    apply(s, &d, &m.0, mails, raw, now).unwrap();
    d
}

#[test]
fn rules_route_new_tickets_only_and_a_reply_never_reroutes() {
    let (s, c) = (MemStore::new(), policy_cfg());
    let d = routed(
        &s,
        &c,
        &M::new("p1@x.test", "a@x.test", "Hello"),
        at(0),
        false,
    );
    assert!(d.routing.as_ref().is_some_and(|o| !o.matched()));
    assert_eq!(
        (t(&s, 1).category, t(&s, 1).priority.as_str()),
        (None, "normal")
    );
    let d = routed(
        &s,
        &c,
        &M::new("p2@x.test", "a@x.test", "Re: Hello invoice").reply_to("p1@x.test"),
        at(1),
        false,
    );
    assert_eq!(d.action, Action::Append);
    assert!(d.routing.is_none(), "rules do not run on a reply");
    assert_eq!(t(&s, 1).category, None);
    // Staff-started tickets are not routed either.
    let d = routed(
        &s,
        &c,
        &M::new("p3@example.com", "bob@example.com", "invoice")
            .to(&["cust@y.test"])
            .cc(&["support@example.com"]),
        at(2),
        false,
    );
    assert_eq!((d.action, d.routing.is_none()), (Action::New, true));
    assert_eq!(t(&s, 2).assignee.as_deref(), Some("bob@example.com"));
}

#[test]
fn default_owner_order_then_distribution() {
    let (s, c) = (MemStore::new(), policy_cfg());
    // The customer's manager wins over the category's default owner.
    routed(
        &s,
        &c,
        &M::new("o1@acme.test", "m@acme.test", "invoice"),
        at(0),
        false,
    );
    assert_eq!(t(&s, 1).assignee.as_deref(), Some("alice@example.com"));
    // No manager: the category's default owner (not its distribution).
    let d = routed(
        &s,
        &c,
        &M::new("o2@y.test", "m@y.test", "invoice"),
        at(1),
        false,
    );
    assert_eq!(t(&s, 2).assignee.as_deref(), Some("bob@example.com"));
    assert_eq!(kinds(&d), vec!["ack", "notice", "taken", "copy"]);
    assert_eq!(
        d.owner.as_deref(),
        Some("default owner (billing's default owner): bob@example.com")
    );
    // Neither: the category's distribution (least loaded: alice has 1,
    // bob 1; the tie goes to the first in rotation).
    let d = routed(
        &s,
        &c,
        &M::new("o3@y.test", "m@y.test", "server"),
        at(2),
        false,
    );
    assert_eq!(t(&s, 3).assignee.as_deref(), Some("alice@example.com"));
    assert_eq!(d.desk.dist.len(), 1);
    assert_eq!(
        s.dist_state("tech").unwrap().cursor.as_deref(),
        Some("alice@example.com")
    );
    routed(
        &s,
        &c,
        &M::new("o4@y.test", "m@y.test", "server"),
        at(3),
        false,
    );
    assert_eq!(t(&s, 4).assignee.as_deref(), Some("bob@example.com"));
    // No category and no owner: unassigned, nothing queued.
    let d = routed(&s, &c, &M::new("o5@y.test", "m@y.test", "hi"), at(4), false);
    assert_eq!((t(&s, 5).assignee.clone(), d.desk.dist.len()), (None, 0));
}

#[test]
fn drop_on_a_follow_up_stays_a_drop_and_sends_nothing() {
    let (s, c) = (MemStore::new(), policy_cfg());
    routed(&s, &c, &M::new("f1@y.test", "m@y.test", "Hi"), at(0), false);
    let mut tk = t(&s, 1);
    tk.status = Status::Done;
    tk.ended_at = Some(at(1));
    s.put_ticket(&tk).unwrap();
    let d = routed(
        &s,
        &c,
        &M::new("f2@y.test", "m@y.test", "Re: Hi newsletter").reply_to("f1@y.test"),
        at(3 * 86400),
        false,
    );
    assert_eq!(d.action, Action::Drop);
    assert!(d.intents.is_empty(), "{:?}", d.intents);
    assert_eq!(t(&s, 2).status, Status::Deleted);
    assert_eq!(t(&s, 2).follow_up_of, Some(1));
}

#[test]
fn importing_history_routes_but_gives_the_ticket_to_nobody() {
    let (s, c) = (MemStore::new(), policy_cfg());
    let d = routed(
        &s,
        &c,
        &M::new("h1@y.test", "m@y.test", "boss invoice"),
        at(0),
        true,
    );
    let tk = t(&s, 1);
    assert_eq!(
        (
            tk.category.as_deref(),
            tk.priority.as_str(),
            tk.assignee.clone()
        ),
        (Some("billing"), "high", None)
    );
    assert!(d.desk.dist.is_empty() && d.schedule.is_empty());
    assert_eq!(d.owner.as_deref(), Some("not assigned: importing history"));
}

#[test]
fn bulk_mail_routed_to_an_agent_tells_the_agent_but_not_the_sender() {
    let (s, c) = (MemStore::new(), policy_cfg());
    let mut m = M::new("bk1@y.test", "list@y.test", "boss news");
    m.0.precedence = Some("bulk".into());
    let d = routed(&s, &c, &m, at(0), false);
    assert_eq!(kinds(&d), vec!["notice", "copy"]);
    let tk = t(&s, 1);
    assert_eq!(
        (tk.assignee.as_deref(), tk.notified),
        (Some("alice@example.com"), false)
    );
    assert_eq!(tk.tags, vec!["boss"]);
}
