//! Who sent it and what it is (SPEC §3.3). Pure: a decision value, no action.
//!
//! Every signal is evaluated and recorded in `reasons` (so `explain` and the
//! logs show all that fired), then the kind is chosen by precedence:
//! our own loop, then explicit auto-reply forms that travel as reports
//! (challenge-response, MDN), then bounces, then auto-replies. Bounces come
//! before auto-replies because MTAs mark their DSNs `Auto-Submitted:
//! auto-replied` too.

use super::{Envelope, Parsed};
use crate::config::Config;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    Ordinary,
    AutoReply,
    Bounce,
    /// Our own generated mail coming back (our `X-Postdesk-Loop`).
    Loop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// The sender (From, else Sender, else the envelope sender) is on the
    /// roster or in a team domain.
    pub staff: bool,
    /// The address we treat as the sender (lower-case), "" when none.
    pub sender: String,
    pub kind: MailKind,
    /// Bulk or list mail: ticketed, never acknowledged (RFC 3834 §2).
    pub bulk: bool,
    /// Do not answer automatically (X-Auto-Response-Suppress, null sender,
    /// bulk, auto-reply, bounce, loop, our own address …).
    pub suppress_ack: bool,
    /// Short human reasons, e.g. "Auto-Submitted: auto-replied".
    pub reasons: Vec<String>,
}

pub fn classify(p: &Parsed, env: &Envelope, cfg: &Config) -> Classification {
    let mut reasons = Vec::new();
    let support = cfg.support_address();

    let env_from = bare_address(&env.mail_from);
    let null_sender = env_from.is_empty();
    // SPEC §3.3: From, else Sender, else the envelope sender.
    let sender = p
        .from
        .as_ref()
        .or(p.sender.as_ref())
        .map(|a| a.email.as_str())
        .filter(|e| !e.is_empty())
        .unwrap_or(env_from.as_str())
        .to_string();
    let staff = !sender.is_empty() && cfg.is_staff(&sender);

    // --- loop ---------------------------------------------------------
    let loop_header = p.x_postdesk_loop.as_deref().map(bare_address);
    let is_loop = loop_header.as_deref() == Some(support.as_str());
    if is_loop {
        reasons.push(format!("X-Postdesk-Loop: {support} (our own mail)"));
    }

    // --- reports that are really auto-replies --------------------------
    let mut explicit_auto = false;
    if p.report_type.as_deref() == Some("disposition-notification") {
        reasons.push("read receipt (report-type=disposition-notification)".into());
        explicit_auto = true;
    }
    for m in p
        .ooo_markers
        .iter()
        .filter(|m| m.starts_with("challenge-response"))
    {
        reasons.push(m.clone());
        explicit_auto = true;
    }

    // --- bounces -------------------------------------------------------
    let mut bounce = false;
    let is_report = p.content_type == "multipart/report";
    match p.report_type.as_deref() {
        Some("delivery-status") if is_report => {
            reasons.push("multipart/report; report-type=delivery-status".into());
            bounce = true;
        }
        Some("feedback-report") if is_report => {
            // ARF (RFC 5965): a mail system reporting on our mail, like a DSN.
            reasons.push("multipart/report; report-type=feedback-report".into());
            bounce = true;
        }
        _ => {}
    }
    if p.content_type == "message/delivery-status" {
        reasons.push("bare message/delivery-status".into());
        bounce = true;
    }
    let mut daemon_senders = [p.from.as_ref(), p.sender.as_ref()]
        .into_iter()
        .flatten()
        .map(|a| a.email.as_str())
        .chain(std::iter::once(env_from.as_str()));
    if let Some(d) = daemon_senders.find(|a| is_daemon(a)) {
        reasons.push(format!("sender {d}"));
        bounce = true;
    }
    if null_sender && (is_report || p.bounce_text) {
        reasons.push("null envelope sender with a report".into());
        bounce = true;
    }
    if p.bounce_text {
        reasons.push("bounce text".into());
        bounce = true;
    }

    // --- auto-replies --------------------------------------------------
    let mut auto = false;
    if let Some(v) = p.auto_submitted.as_deref() {
        if first_token(v) != "no" && !first_token(v).is_empty() {
            reasons.push(format!("Auto-Submitted: {v}"));
            auto = true;
        }
    }
    if p.x_autoreply {
        reasons.push("X-Autoreply/X-Autorespond present".into());
        auto = true;
    }
    let precedence = p.precedence.as_deref().map(first_token);
    if precedence == Some("auto_reply") {
        reasons.push("Precedence: auto_reply".into());
        auto = true;
    }
    for m in p
        .ooo_markers
        .iter()
        .filter(|m| !m.starts_with("challenge-response"))
    {
        reasons.push(format!("out-of-office marker ({m})"));
        auto = true;
    }
    if null_sender && !(is_report || p.bounce_text) {
        // RFC 3834 §3.3 / RFC 5321 §4.5.5: only automatic mail is sent
        // with the null reverse-path; people's mail never is.
        reasons.push("null envelope sender".into());
        auto = true;
    }

    let kind = if is_loop {
        MailKind::Loop
    } else if explicit_auto {
        MailKind::AutoReply
    } else if bounce {
        MailKind::Bounce
    } else if auto {
        MailKind::AutoReply
    } else {
        MailKind::Ordinary
    };

    // --- bulk ------------------------------------------------------------
    let ours = cfg
        .support
        .list_id
        .as_deref()
        .map(|l| bare_id(l).to_ascii_lowercase());
    let our_list = ours.is_some() && p.list_id.as_deref().map(bare_id) == ours.as_deref();
    let mut bulk = false;
    if our_list {
        // The team's own list in front of postdesk stamps every customer
        // mail with its List-Id, List-Unsubscribe and Precedence: list
        // (Mailman) or bulk (mlmmj, vger): none of that makes it bulk.
        reasons.push("List-Id is the support list's own (list headers ignored)".into());
    } else if let Some(id) = p.list_id.as_deref() {
        reasons.push(format!("List-Id: {id}"));
        bulk = true;
    }
    match precedence {
        Some(pr @ ("bulk" | "list")) if !our_list => {
            reasons.push(format!("Precedence: {pr}"));
            bulk = true;
        }
        Some("junk") => {
            reasons.push("Precedence: junk".into());
            bulk = true;
        }
        _ => {}
    }
    if p.list_unsubscribe && !our_list {
        reasons.push("List-Unsubscribe present".into());
        bulk = true;
    }

    // --- ack suppression ---------------------------------------------------
    let mut suppress = kind != MailKind::Ordinary || bulk || null_sender;
    if let Some(v) = p.x_auto_response_suppress.as_deref() {
        let asks = v
            .split([',', ';', ' ', '\t'])
            .any(|t| ["all", "autoreply", "oof"].contains(&t.trim()));
        if asks {
            reasons.push(format!("X-Auto-Response-Suppress: {v}"));
            suppress = true;
        }
    }
    if let Some(ours) = [sender.as_str(), env_from.as_str()]
        .into_iter()
        .find(|a| !a.is_empty() && cfg.support_tag(a).is_some())
    {
        reasons.push(format!("sender {ours} is our own address"));
        suppress = true;
    }
    if staff {
        reasons.push(format!("sender {sender} is staff"));
        suppress = true;
    }
    if !is_loop && (loop_header.is_some() || p.x_postdesk_kind.is_some()) {
        // Another postdesk's generated mail: never answer it, or two desks
        // acknowledge each other forever.
        let kind = p.x_postdesk_kind.as_deref().unwrap_or("?");
        reasons.push(format!(
            "generated by another postdesk (X-Postdesk-Kind: {kind})"
        ));
        suppress = true;
    }

    Classification {
        staff,
        sender,
        kind,
        bulk,
        suppress_ack: suppress,
        reasons,
    }
}

/// `MAILER-DAEMON@host`, `postmaster@host` (or bare, as in `Return-Path:
/// <MAILER-DAEMON>`): the conventional bounce senders.
fn is_daemon(addr: &str) -> bool {
    let local = addr.split('@').next().unwrap_or("");
    local.eq_ignore_ascii_case("mailer-daemon") || local.eq_ignore_ascii_case("postmaster")
}

/// `<A@B>` → `a@b`; `Name <A@B>` → `a@b`; `<>` → "".
fn bare_address(s: &str) -> String {
    bare_id(s).to_ascii_lowercase()
}

/// `<list.example.com>` → `list.example.com` (case kept).
fn bare_id(s: &str) -> &str {
    let s = s.trim();
    match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].trim(),
        _ => s,
    }
}

/// `auto-replied; owner-email="x"` → `auto-replied`; `bulk (comment)` → `bulk`.
fn first_token(v: &str) -> &str {
    v.split([';', '(', ' ', '\t']).next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::parse::fixtures::{emls, index, name, read, read_in, return_path};
    use crate::ingest::parse::parse;

    fn cfg() -> Config {
        let mut c = Config::default();
        c.support.address = "support@desk.test".into();
        c.team.domains = vec!["desk.test".into()];
        c.team.agents = vec![crate::config::Agent {
            email: "alice@desk.test".into(),
            ..Default::default()
        }];
        c
    }

    /// The envelope a stored message records: its Return-Path, else its
    /// From (a delivery without Return-Path came from a normal sender).
    fn envelope_of(raw: &[u8], p: &Parsed) -> Envelope {
        let mail_from = return_path(raw)
            .or_else(|| p.from.as_ref().map(|a| a.email.clone()))
            .unwrap_or_default();
        Envelope {
            mail_from,
            rcpt_to: vec!["support@desk.test".into()],
        }
    }

    fn classify_raw(raw: &[u8], cfg: &Config) -> Classification {
        let p = parse(raw);
        classify(&p, &envelope_of(raw, &p), cfg)
    }

    fn env(from: &str) -> Envelope {
        Envelope {
            mail_from: from.into(),
            rcpt_to: vec!["support@desk.test".into()],
        }
    }

    const CUSTOMER: &str = "Return-Path: <jane@customer.test>\r
From: Jane Doe <Jane@Customer.test>\r
To: support@desk.test\r
Subject: Printer on fire\r
Message-ID: <p1@customer.test>\r
Date: Mon, 2 Jun 2025 09:59:58 +0300\r
\r
Hello, the printer is on fire again.\r
";

    #[test]
    fn every_autoreply_fixture_is_an_autoreply() {
        let idx = index("autoreplies");
        let files = emls("autoreplies");
        let flagged = idx
            .values()
            .filter(|v| v["is_autoreply"].as_bool() == Some(true))
            .count();
        assert_eq!(files.len(), 12);
        assert_eq!(files.len(), flagged);
        for f in files {
            let n = name(&f);
            assert_eq!(idx[&n]["is_autoreply"].as_bool(), Some(true), "{n}");
            let c = classify_raw(&read(&f), &cfg());
            assert_eq!(c.kind, MailKind::AutoReply, "{n}: {:?}", c.reasons);
            assert!(c.suppress_ack, "{n}");
            assert!(!c.reasons.is_empty(), "{n}");
        }
    }

    #[test]
    fn autoreply_look_alikes_are_what_they_are() {
        let idx = index("autoreplies");
        // The look-alikes carry auto-reply signs but are something else:
        // two are bounces (their Auto-Submitted is the MTA's), two are
        // people's mail.
        let expected = [
            ("bounceparser-non-autoreply.eml", MailKind::Bounce),
            ("sisimai-is-not-bounce-01.eml", MailKind::Ordinary),
            ("sisimai-is-not-bounce-02.eml", MailKind::Ordinary),
            ("sisimai-rb-issue-368-bug.eml", MailKind::Bounce),
        ];
        let files = emls("autoreplies/not-autoreply");
        assert_eq!(files.len(), expected.len());
        for (f, (want_name, want_kind)) in files.iter().zip(expected) {
            let n = name(f);
            assert_eq!(n, want_name);
            let key = format!("not-autoreply/{n}");
            assert_eq!(idx[&key]["is_autoreply"].as_bool(), Some(false), "{n}");
            let c = classify_raw(&read(f), &cfg());
            assert_eq!(c.kind, want_kind, "{n}: {:?}", c.reasons);
        }
    }

    #[test]
    fn every_bounce_fixture_is_a_bounce() {
        let files = emls("bounces");
        assert_eq!(files.len(), 88);
        // No exceptions needed: every file is recognised by a rule of
        // SPEC §3.3 (MAILER-DAEMON/postmaster sender, report-type
        // delivery-status or feedback-report, a bare message/delivery-status,
        // a null sender with a report, or the subject of a known bouncer).
        for f in files {
            let n = name(&f);
            let c = classify_raw(&read(&f), &cfg());
            assert_eq!(c.kind, MailKind::Bounce, "{n}: {:?}", c.reasons);
            assert!(c.suppress_ack, "{n}");
        }
    }

    #[test]
    fn a_customer_mail_is_ordinary() {
        let c = classify_raw(CUSTOMER.as_bytes(), &cfg());
        assert_eq!(c.kind, MailKind::Ordinary, "{:?}", c.reasons);
        assert_eq!(c.sender, "jane@customer.test");
        assert!(!c.staff && !c.bulk && !c.suppress_ack);
        assert!(c.reasons.is_empty(), "{:?}", c.reasons);
        // Real replies from people are ordinary too.
        for f in ["talon-gmail.eml", "talon-outlook.eml", "talon-iphone.eml"] {
            let c = classify_raw(&read_in("replies", f), &cfg());
            assert_eq!(c.kind, MailKind::Ordinary, "{f}: {:?}", c.reasons);
            assert!(!c.suppress_ack, "{f}: {:?}", c.reasons);
        }
    }

    #[test]
    fn list_mail_is_bulk_unless_it_is_our_list() {
        let raw = read_in("outlook", "usrp-users-Zimbra-9-0-0-GA-1337-Zimbra-736.eml");
        let c = classify_raw(&raw, &cfg());
        assert_eq!(c.kind, MailKind::Ordinary, "{:?}", c.reasons);
        assert!(c.bulk && c.suppress_ack);
        assert!(
            c.reasons
                .iter()
                .any(|r| r == "List-Id: usrp-users.lists.ettus.com"),
            "{:?}",
            c.reasons
        );

        let mut ours = cfg();
        ours.support.list_id = Some("<USRP-users.lists.ettus.com>".into());
        let c = classify_raw(&raw, &ours);
        assert!(!c.bulk, "{:?}", c.reasons);
        assert!(!c.suppress_ack, "{:?}", c.reasons);

        // vger stamps Precedence: bulk: also the list's, also ignored.
        let raw = read_in("outlook", "linux-can-aerc-0-14-0-10070.eml");
        assert!(classify_raw(&raw, &cfg()).bulk);
        let mut ours = cfg();
        ours.support.list_id = Some("linux-can.vger.kernel.org".into());
        assert!(!classify_raw(&raw, &ours).bulk);
    }

    #[test]
    fn bulk_headers_each_count() {
        for (header, reason) in [
            ("Precedence: bulk", "Precedence: bulk"),
            ("Precedence: list", "Precedence: list"),
            ("Precedence: junk", "Precedence: junk"),
            (
                "List-Unsubscribe: <mailto:x@lists.test>",
                "List-Unsubscribe present",
            ),
            ("List-Id: <news.shop.test>", "List-Id: news.shop.test"),
        ] {
            let raw = CUSTOMER.replace("Subject:", &format!("{header}\r\nSubject:"));
            let c = classify_raw(raw.as_bytes(), &cfg());
            assert!(c.bulk, "{header}");
            assert!(c.suppress_ack, "{header}");
            assert_eq!(c.kind, MailKind::Ordinary, "{header}");
            assert!(
                c.reasons.iter().any(|r| r == reason),
                "{header}: {:?}",
                c.reasons
            );
        }
        // Junk stays junk even through our own list.
        let raw = CUSTOMER.replace(
            "Subject:",
            "List-Id: <support.example.com>\r\nPrecedence: junk\r\nSubject:",
        );
        let mut ours = cfg();
        ours.support.list_id = Some("support.example.com".into());
        assert!(classify_raw(raw.as_bytes(), &ours).bulk);
    }

    #[test]
    fn our_own_mail_coming_back_is_a_loop() {
        let raw = CUSTOMER.replace(
            "Subject:",
            "X-Postdesk-Loop: <Support@Desk.test>\r\nX-Postdesk-Kind: ack\r\nAuto-Submitted: auto-replied\r\nSubject:",
        );
        let c = classify_raw(raw.as_bytes(), &cfg());
        assert_eq!(c.kind, MailKind::Loop, "{:?}", c.reasons);
        assert!(c.suppress_ack);
        // Written with a display name, still ours.
        let raw = CUSTOMER.replace(
            "Subject:",
            "X-Postdesk-Loop: Support <support@desk.test>\r\nSubject:",
        );
        assert_eq!(classify_raw(raw.as_bytes(), &cfg()).kind, MailKind::Loop);
        // Another desk's generated mail is an auto-reply we never answer.
        let raw = CUSTOMER.replace(
            "Subject:",
            "X-Postdesk-Loop: help@other.test\r\nX-Postdesk-Kind: ack\r\nSubject:",
        );
        let c = classify_raw(raw.as_bytes(), &cfg());
        assert_eq!(c.kind, MailKind::Ordinary);
        assert!(c.suppress_ack, "{:?}", c.reasons);
    }

    #[test]
    fn staff_and_our_own_addresses_get_no_ack() {
        let raw = CUSTOMER.replace("Jane Doe <Jane@Customer.test>", "Alice <Alice@Desk.test>");
        let c = classify_raw(raw.as_bytes(), &cfg());
        assert!(c.staff);
        assert_eq!(c.kind, MailKind::Ordinary);
        assert!(c.suppress_ack);
        assert!(
            c.reasons.iter().any(|r| r.contains("is staff")),
            "{:?}",
            c.reasons
        );

        // A team-domain address counts as staff too.
        let raw = CUSTOMER.replace("Jane@Customer.test", "bob@desk.test");
        assert!(classify_raw(raw.as_bytes(), &cfg()).staff);

        // Our support address, bare or plus-addressed, as sender.
        let mut c = cfg();
        c.team.domains.clear();
        for from in ["support@desk.test", "support+report@desk.test"] {
            let raw = CUSTOMER.replace("Jane@Customer.test", from);
            let got = classify_raw(raw.as_bytes(), &c);
            assert!(!got.staff);
            assert!(got.suppress_ack, "{from}");
            assert!(
                got.reasons.iter().any(|r| r.contains("our own address")),
                "{from}"
            );
        }
    }

    #[test]
    fn auto_response_suppress_is_a_request_not_a_kind() {
        let raw = CUSTOMER.replace("Subject:", "X-Auto-Response-Suppress: All\r\nSubject:");
        let c = classify_raw(raw.as_bytes(), &cfg());
        assert_eq!(c.kind, MailKind::Ordinary);
        assert!(c.suppress_ack);
        for v in ["OOF", "AutoReply", "DR, RN, NRN, OOF, AutoReply"] {
            let raw = CUSTOMER.replace(
                "Subject:",
                &format!("X-Auto-Response-Suppress: {v}\r\nSubject:"),
            );
            assert!(classify_raw(raw.as_bytes(), &cfg()).suppress_ack, "{v}");
        }
        // Suppressing only delivery/read receipts does not concern our ack.
        let raw = CUSTOMER.replace(
            "Subject:",
            "X-Auto-Response-Suppress: DR, RN, NRN\r\nSubject:",
        );
        assert!(!classify_raw(raw.as_bytes(), &cfg()).suppress_ack);
    }

    #[test]
    fn auto_reply_signals() {
        for header in [
            "Auto-Submitted: auto-replied",
            "Auto-Submitted: auto-generated; owner-email=\"x@y\"",
            "X-Autoreply: yes",
            "X-Autorespond: vacation",
            "Precedence: auto_reply",
            "X-Apple-Action: VACATION",
        ] {
            let raw = CUSTOMER.replace("Subject:", &format!("{header}\r\nSubject:"));
            let c = classify_raw(raw.as_bytes(), &cfg());
            assert_eq!(c.kind, MailKind::AutoReply, "{header}: {:?}", c.reasons);
            assert!(c.suppress_ack);
        }
        let raw = CUSTOMER.replace(
            "Subject: Printer on fire",
            "Subject: Automatic reply: Printer on fire",
        );
        assert_eq!(
            classify_raw(raw.as_bytes(), &cfg()).kind,
            MailKind::AutoReply
        );
        // `Auto-Submitted: no` is the explicit opposite.
        let raw = CUSTOMER.replace("Subject:", "Auto-Submitted: no\r\nSubject:");
        assert_eq!(
            classify_raw(raw.as_bytes(), &cfg()).kind,
            MailKind::Ordinary
        );
    }

    #[test]
    fn null_sender() {
        let p = parse(CUSTOMER.as_bytes());
        // With nothing else, only automatic mail uses the null sender.
        let c = classify(&p, &env(""), &cfg());
        assert_eq!(c.kind, MailKind::AutoReply, "{:?}", c.reasons);
        assert!(c.suppress_ack);
        assert_eq!(c.sender, "jane@customer.test");
        let c = classify(&p, &env("<>"), &cfg());
        assert_eq!(c.kind, MailKind::AutoReply);
        // With a bounce text it is a bounce.
        let raw = CUSTOMER.replace(
            "Subject: Printer on fire",
            "Subject: Undelivered Mail Returned to Sender",
        );
        let c = classify(&parse(raw.as_bytes()), &env(""), &cfg());
        assert_eq!(c.kind, MailKind::Bounce, "{:?}", c.reasons);
    }

    #[test]
    fn sender_falls_back_to_sender_header_then_envelope() {
        let no_from = CUSTOMER.replace("From: Jane Doe <Jane@Customer.test>\r\n", "");
        let p = parse(no_from.as_bytes());
        assert_eq!(
            classify(&p, &env("Env@Customer.test"), &cfg()).sender,
            "env@customer.test"
        );
        let with_sender = no_from.replace("To:", "Sender: relay@customer.test\r\nTo:");
        let p = parse(with_sender.as_bytes());
        assert_eq!(
            classify(&p, &env("env@customer.test"), &cfg()).sender,
            "relay@customer.test"
        );
        // Envelope-only staff still counts as staff.
        let p = parse(no_from.as_bytes());
        assert!(classify(&p, &env("alice@desk.test"), &cfg()).staff);
    }

    #[test]
    fn mailer_daemon_envelope_alone_is_a_bounce() {
        let p = parse(CUSTOMER.as_bytes());
        let c = classify(&p, &env("MAILER-DAEMON@mx.customer.test"), &cfg());
        assert_eq!(c.kind, MailKind::Bounce, "{:?}", c.reasons);
    }

    #[test]
    fn reasons_name_each_signal() {
        let c = classify_raw(&read_in("autoreplies", "sisimai-rfc3834-06.eml"), &cfg());
        assert_eq!(c.kind, MailKind::AutoReply);
        for want in [
            "Auto-Submitted: auto-replied",
            "Precedence: bulk",
            "X-Auto-Response-Suppress: oof, autoreply, dr, ndr, rn, nrn",
        ] {
            assert!(
                c.reasons.iter().any(|r| r == want),
                "{want}: {:?}",
                c.reasons
            );
        }
        let c = classify_raw(&read_in("bounces", "sisimai-lhost-postfix-60.eml"), &cfg());
        assert!(c
            .reasons
            .iter()
            .any(|r| r == "multipart/report; report-type=delivery-status"));
        assert!(
            c.reasons
                .iter()
                .any(|r| r.starts_with("sender mailer-daemon@")),
            "{:?}",
            c.reasons
        );
    }
}
