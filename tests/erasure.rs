//! Data protection (issue #10 item 6) through the real binary: `forget`
//! followed by a byte scan of every file under the data dir, `export
//! --person`, and the `policy.retention` sweep erasing exactly the expired
//! tickets' raw messages.

mod common;

use base64::Engine;
use common::sink::Sink;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MARI: &str = "mari.tamm@cust.test";
const JAAN: &str = "jaan.kask@other.test";

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

fn me() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            files_under(&p, out);
        } else if ft.is_file() {
            out.push(p);
        }
    }
}

/// The forms of Mari's address (and name) a byte scan looks for: case
/// variants, quoted-printable and URL forms, the local part alone, the
/// display name, and the address inside base64 at each of the three
/// alignments.
fn needles() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        MARI.into(),
        MARI.to_uppercase().into(),
        b"Mari.Tamm@Cust.Test".to_vec(),
        MARI.replace('@', "=40").into(),
        MARI.replace('@', "%40").into(),
        b"mari.tamm".to_vec(),
        b"Mari Tamm".to_vec(),
    ];
    let b64 = base64::engine::general_purpose::STANDARD;
    for k in 0..3usize {
        let mut plain = vec![b'x'; k];
        plain.extend_from_slice(MARI.as_bytes());
        let enc = b64.encode(&plain);
        let from = (8 * k).div_ceil(6);
        let to = (8 * plain.len()) / 6;
        v.push(enc.as_bytes()[from..to].to_vec());
    }
    v
}

/// Files under `dir` holding any needle (case-insensitively for the
/// plain ones), with what was found.
fn scan(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    assert!(!files.is_empty(), "nothing under {}", dir.display());
    let mut hits = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        for n in needles {
            let found = bytes
                .windows(n.len())
                .any(|w| w.eq_ignore_ascii_case(n) || w == &n[..]);
            if found {
                hits.push(format!(
                    "{} holds {:?}",
                    f.display(),
                    String::from_utf8_lossy(n)
                ));
            }
        }
    }
    hits
}

/// Where a byte scan looks for what the desk keeps: on sled the data dir
/// (or its `spool`/`store` part); on PostgreSQL a dump of the desk's rows,
/// taken now: the raw messages for `spool`, the rest for `store`.
fn stored(d: &Daemon, part: &str) -> PathBuf {
    if !on_postgres() {
        return d.data_dir().join(part);
    }
    static DUMPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DUMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = d.dir.path().join(format!("pg-rows-{n}"));
    std::fs::create_dir_all(&dir).expect("dump dir");
    let tables: &[&str] = match part {
        "spool" => &["-t", "raw_messages"],
        "store" => &["-T", "raw_messages"],
        _ => &[],
    };
    std::fs::write(dir.join("rows.sql"), pg_dump(&d.data_dir(), tables)).expect("write dump");
    dir
}

fn contains_bytes(dir: &Path, needle: &[u8]) -> bool {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    files.iter().any(|f| {
        std::fs::read(f)
            .map(|b| b.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

fn mari_first() -> Vec<u8> {
    "From: Mari Tamm <mari.tamm@cust.test>\r\nTo: support@example.com\r\nSubject: Printer on floor 3 is broken\r\nMessage-ID: <CAK1-first@mail.cust.test>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0200\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, the printer jams. MARI-BODY-ONE\r\nMari Tamm\r\nmari.tamm@cust.test\r\n"
        .as_bytes()
        .to_vec()
}

/// Her second ticket: mixed-case address, a Message-ID with her local
/// part in it, and an attachment.
fn mari_second() -> Vec<u8> {
    let attachment = base64::engine::general_purpose::STANDARD
        .encode("MARI-ATTACHMENT-SECRET invoice 2026-17 for mari.tamm@cust.test\n");
    format!(
        "From: Mari Tamm <Mari.Tamm@Cust.Test>\r\nTo: support@example.com\r\nSubject: Invoice question\r\nMessage-ID: <20261122.mari.tamm@cust.test>\r\nDate: Sun, 22 Nov 2026 10:05:00 +0200\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe invoice is attached. MARI-BODY-TWO\r\n--b1\r\nContent-Type: text/plain; name=\"invoice.txt\"\r\nContent-Disposition: attachment; filename=\"invoice.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b1--\r\n"
    )
    .into_bytes()
}

fn jaan_mail() -> Vec<u8> {
    mail(
        "jaan-1@other.test",
        "Jaan Kask <jaan.kask@other.test>",
        "VPN does not connect",
        "",
        "The VPN client says timeout. JAAN-BODY-TEXT",
    )
}

fn staff_reply(d: &Daemon, from: &str, headers: &str, body: &str) {
    let m = format!(
        "{AUTH_OK}From: {from}\r\n{headers}Date: Sun, 22 Nov 2026 11:00:00 +0200\r\n{body}"
    );
    let r = d.deliver(from, &["support@example.com"], m.as_bytes());
    assert!(r[0].starts_with("250"), "{r:?}\n{}", d.log());
}

fn export_person(d: &Daemon, who: &str) -> Value {
    json(&d.cli_ok(&["export", "--person", who]))
}

fn all_text(v: &Value) -> String {
    v.to_string()
}

/// ISSUE #10 item 6 "Must show": `forget` followed by a byte scan of the
/// data dir (after the store compacts) that finds nothing of the address;
/// the other customer's mail intact; the desk still delivers.
#[test]
fn forget_leaves_no_byte_of_the_address_on_disk_and_the_desk_goes_on() {
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    d.deliver_ok(MARI, &mari_first());
    d.deliver_ok(MARI, &mari_second());
    d.deliver_ok(JAAN, &jaan_mail());
    let mari1 = d
        .ticket_of("CAK1-first@mail.cust.test")
        .expect("Mari's first ticket");
    let mari2 = d
        .ticket_of("20261122.mari.tamm@cust.test")
        .expect("Mari's second ticket");
    let jaan = d.ticket_of("jaan-1@other.test").expect("Jaan's ticket");
    assert!(mari1 != mari2 && mari2 != jaan);
    // Agents answer her, naming and quoting her.
    staff_reply(
        &d,
        "alice@example.com",
        &format!("To: Mari Tamm <mari.tamm@cust.test>\r\nCc: support@example.com\r\nSubject: Re: Printer on floor 3 is broken [{mari1}]\r\nIn-Reply-To: <CAK1-first@mail.cust.test>\r\nMessage-ID: <alice-1@example.com>\r\n"),
        "\r\nHi Mari Tamm, we replaced the drum.\r\n\r\nOn Sunday mari.tamm@cust.test wrote:\r\n> Hello, the printer jams. MARI-BODY-ONE\r\n",
    );
    staff_reply(
        &d,
        "bob@example.com",
        &format!("To: MARI.TAMM@CUST.TEST\r\nCc: support@example.com, Jaan Kask <jaan.kask@other.test>\r\nSubject: Re: Invoice question [{mari2}]\r\nIn-Reply-To: <20261122.mari.tamm@cust.test>\r\nMessage-ID: <bob-1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"),
        "\r\nInvoices go to mari.tamm=40cust.test from now on =E2=80=94 BOB-REPLY-TEXT\r\n",
    );
    eventually(20, "the acks to both customers went out", || {
        let to: Vec<String> = of_kind(&sink, "ack")
            .iter()
            .flat_map(|m| m.rcpt_to.clone())
            .collect();
        to.iter().filter(|a| a.eq_ignore_ascii_case(MARI)).count() >= 1
            && to.iter().any(|a| a == JAAN)
    });

    // Right of access, before: her tickets and messages, no one else's.
    let before = export_person(&d, MARI);
    assert_eq!(before["address"], MARI);
    assert_eq!(before["by"], me());
    let tokens: Vec<&str> = before["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, vec![mari1.as_str(), mari2.as_str()], "{before:#}");
    assert!(before["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["role"] == "contact"));
    let text = all_text(&before);
    for marker in [
        "MARI-BODY-ONE",
        "MARI-BODY-TWO",
        "invoice.txt",
        "we replaced the drum",
    ] {
        assert!(text.contains(marker), "export lacks {marker}: {before:#}");
    }
    assert!(!text.contains("JAAN-BODY-TEXT") && !text.contains("VPN does not connect"));
    assert!(
        !before["outbox"].as_array().unwrap().is_empty(),
        "the ack to her is in her export"
    );
    assert!(before["ack_times"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    eventually(5, "the export is logged with who ran it", || {
        d.log()
            .lines()
            .any(|l| l.contains("exported person") && l.contains(&format!("by={}", me())))
    });

    // The scan can fail: before the forget her address is all over.
    assert!(!scan(&stored(&d, ""), &needles()).is_empty());

    let out = d.cli_ok(&["forget", "Mari.Tamm@cust.test"]);
    assert!(out.contains("forgot"), "{out}");
    // sled owes a store rewrite at the next start; PostgreSQL leaves old
    // row versions to VACUUM, and says which command drops them.
    if on_postgres() {
        assert!(out.contains("VACUUM (FULL) raw_messages"), "{out}");
    } else {
        assert!(out.contains("rewrite pending"), "{out}");
    }
    let line = d
        .log()
        .lines()
        .find(|l| l.contains("forgot") && l.contains("address=forgotten-"))
        .map(String::from)
        .unwrap_or_else(|| panic!("no forgot line:\n{}", d.log()));
    assert!(line.contains(&format!("by={}", me())), "{line}");
    assert!(!line.to_ascii_lowercase().contains("mari"), "{line}");

    // The records: the pseudonym where she was, her own messages gone.
    let t1 = d.show(&mari1);
    let pseudo = t1["contact"].as_str().unwrap().to_string();
    assert!(
        pseudo.starts_with("forgotten-") && pseudo.ends_with("@invalid"),
        "{t1:#}"
    );
    assert_eq!(
        d.show(&mari2)["contact"],
        pseudo.as_str(),
        "one person, one pseudonym"
    );
    let msgs = t1["messages"].as_array().unwrap();
    assert!(
        msgs.iter()
            .all(|m| m["from"] != MARI && m["kind"] != "customer"),
        "{t1:#}"
    );
    let alice = msgs
        .iter()
        .find(|m| m["from"] == "alice@example.com")
        .unwrap_or_else(|| panic!("alice's answer stays: {t1:#}"));
    assert_eq!(strs(&alice["to"]), vec![pseudo.clone()]);
    // The spool is overwritten in place at once.
    assert_eq!(scan(&stored(&d, "spool"), &needles()), Vec::<String>::new());
    // Her own mail (and its attachment) is zeroed; others' mail stays,
    // masked where it names her.
    let spool = stored(&d, "spool");
    assert!(!contains_bytes(&spool, b"MARI-BODY-TWO"));
    assert!(!contains_bytes(&spool, b"MARI-ATTACHMENT"));
    assert!(contains_bytes(&spool, b"BOB-REPLY-TEXT"));
    // Right of access after: nothing is stored about her.
    let after = export_person(&d, MARI);
    assert_eq!(after["tickets"], serde_json::json!([]), "{after:#}");
    assert_eq!(after["outbox"], serde_json::json!([]), "{after:#}");

    // sled still holds old versions of the rewritten records here (the
    // reason for the rewrite); measured, not asserted: sled may reuse a
    // segment sooner. (PostgreSQL's old row versions are the server's
    // files, out of this scan's reach; the dump holds live rows only.)
    eprintln!(
        "before the rewrite, store/ holds: {:?}",
        scan(&stored(&d, "store"), &needles())
    );
    // The store rewrite runs at the next start (sled's).
    d.restart();
    if !on_postgres() {
        assert!(d.log().contains("store rewritten"), "{}", d.log());
    }
    let hits = scan(&stored(&d, ""), &needles());
    assert!(
        hits.is_empty(),
        "after forget and rewrite:\n{}",
        hits.join("\n")
    );
    assert!(
        !contains_bytes(&stored(&d, ""), b"MARI-BODY-TWO"),
        "her own words went with the rewrite"
    );

    // Jaan's data is intact and the desk goes on.
    let tj = d.show(&jaan);
    assert_eq!(tj["contact"], JAAN);
    let jexp = export_person(&d, JAAN);
    let jtext = all_text(&jexp);
    assert!(jtext.contains("JAAN-BODY-TEXT"), "{jexp:#}");
    assert!(
        jtext.contains("BOB-REPLY-TEXT"),
        "bob's reply copied Jaan: {jexp:#}"
    );
    let spool_ok = jexp["tickets"][0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["raw"]["text"].is_string());
    assert!(
        spool_ok,
        "every message of Jaan's reads back (checks valid): {jexp:#}"
    );
    for t in [&mari1, &mari2] {
        // Every remaining record still reads back from the spool.
        let exp = d.cli(&["ticket", "show", t, "--json"]);
        assert!(exp.status.success());
    }
    sink.clear();
    d.deliver_ok(
        JAAN,
        &mail(
            "jaan-2@other.test",
            JAAN,
            "Another question",
            "",
            "New question after the forget.",
        ),
    );
    eventually(20, "the desk still acknowledges", || {
        of_kind(&sink, "ack")
            .iter()
            .any(|m| m.rcpt_to == vec![JAAN.to_string()])
    });
    // A second forget finds nothing more, and leaves the scan clean.
    d.stop();
    let again = d.cli_ok(&["forget", MARI]);
    assert!(again.contains("0 own messages erased"), "{again}");
    if !on_postgres() {
        assert!(again.contains("store rewritten"), "{again}");
    }
    assert_eq!(scan(&stored(&d, ""), &needles()), Vec::<String>::new());
}

fn retention_desk(sink: &Sink, metadata: &str) -> Daemon {
    Daemon::start(
        sink.port(),
        &format!("policy:\n  retention:\n    after: 2s\n    metadata: {metadata}\n"),
    )
}

fn customer(d: &Daemon, n: u32) -> String {
    let from = format!("cust{n}@cust{n}.test");
    d.deliver_ok(
        &from,
        &mail(
            &format!("ret-{n}@cust{n}.test"),
            &from,
            &format!("Question number {n}"),
            "",
            &format!("RETAINED-BODY-{n}"),
        ),
    );
    d.ticket_of(&format!("ret-{n}@cust{n}.test"))
        .expect("ticket opened")
}

/// What `ticket show --json` says of a ticket's received messages: erased
/// or not, one flag per message.
fn erased_flags(d: &Daemon, token: &str) -> Vec<bool> {
    d.show(token)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] != "generated")
        .map(|m| m["raw_erased"].is_string())
        .collect()
}

fn raw_of_contact(d: &Daemon, who: &str) -> Vec<Value> {
    export_person(d, who)["tickets"][0]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// ISSUE #10 item 6 "Must show": retention removes exactly the expired
/// raw messages (metadata kept).
#[test]
fn retention_erases_exactly_the_expired_raw_messages() {
    let sink = Sink::start_blocking();
    let d = retention_desk(&sink, "keep");
    let t1 = customer(&d, 1);
    let t2 = customer(&d, 2);
    let t3 = customer(&d, 3);
    d.cli_ok(&["ticket", "done", &t1]);
    std::thread::sleep(Duration::from_millis(2500));
    d.cli_ok(&["ticket", "done", &t2]);
    let out = d.cli_ok(&["retention", "run"]);
    assert!(
        out.contains("retention: 1 tickets, 1 messages erased"),
        "{out}"
    );
    assert_eq!(erased_flags(&d, &t1), vec![true]);
    assert_eq!(erased_flags(&d, &t2), vec![false]);
    assert_eq!(erased_flags(&d, &t3), vec![false]);
    let spool = stored(&d, "spool");
    assert!(!contains_bytes(&spool, b"RETAINED-BODY-1"));
    assert!(contains_bytes(&spool, b"RETAINED-BODY-2"));
    assert!(contains_bytes(&spool, b"RETAINED-BODY-3"));
    // Read back: erased says so; the others' bytes are whole (checks hold).
    let m1 = raw_of_contact(&d, "cust1@cust1.test");
    assert!(m1[0]["raw"]["erased_at"].is_string(), "{m1:?}");
    let m2 = raw_of_contact(&d, "cust2@cust2.test");
    assert!(
        m2[0]["raw"]["text"]
            .as_str()
            .unwrap()
            .contains("RETAINED-BODY-2"),
        "{m2:?}"
    );
    // metadata: keep — the ticket's own record stays as it was.
    let s1 = d.show(&t1);
    assert_eq!(s1["subject"], "Question number 1");
    assert_eq!(s1["contact"], "cust1@cust1.test");
    assert!(d.log().contains("retention swept"));
    // Later, the second one's time has come too; the open one is kept.
    std::thread::sleep(Duration::from_millis(2500));
    let out = d.cli_ok(&["retention", "run"]);
    assert!(
        out.contains("retention: 1 tickets, 1 messages erased"),
        "{out}"
    );
    assert_eq!(erased_flags(&d, &t2), vec![true]);
    assert_eq!(erased_flags(&d, &t3), vec![false]);
    let spool = stored(&d, "spool");
    assert!(!contains_bytes(&spool, b"RETAINED-BODY-2"));
    assert!(contains_bytes(&spool, b"RETAINED-BODY-3"));
    // Nothing left to do: a third run touches nothing.
    let out = d.cli_ok(&["retention", "run"]);
    assert!(out.contains("retention: 0 tickets"), "{out}");
}

/// `metadata: anonymise`: the expired ticket loses who and what, keeps
/// times and counts; the others are untouched.
#[test]
fn retention_anonymises_expired_tickets_only() {
    let sink = Sink::start_blocking();
    let mut d = retention_desk(&sink, "anonymise");
    let t1 = customer(&d, 1);
    let t2 = customer(&d, 2);
    let before = d.show(&t1);
    d.cli_ok(&["ticket", "done", &t1]);
    std::thread::sleep(Duration::from_millis(2500));
    let out = d.cli_ok(&["retention", "run"]);
    assert!(out.contains("1 anonymised"), "{out}");
    let s1 = d.show(&t1);
    let contact = s1["contact"].as_str().unwrap();
    assert!(
        contact.starts_with("anon-") && contact.ends_with("@invalid"),
        "{s1:#}"
    );
    assert_eq!(s1["subject"], "(anonymised)");
    assert_eq!(s1["description"], "");
    assert_eq!(s1["started_at"], before["started_at"]);
    assert_eq!(s1["replies"], before["replies"]);
    assert_eq!(s1["status"], "done");
    let m = &s1["messages"].as_array().unwrap()[0];
    assert!(
        m["raw_erased"].is_string() && m["from"] != "cust1@cust1.test",
        "{m}"
    );
    assert_eq!(m["excerpt"], "");
    let s2 = d.show(&t2);
    assert_eq!(s2["contact"], "cust2@cust2.test");
    assert_eq!(s2["subject"], "Question number 2");
    assert_eq!(erased_flags(&d, &t2), vec![false]);
    // The anonymised records' old versions go with the rewrite at start.
    d.restart();
    if !on_postgres() {
        assert!(d.log().contains("store rewritten"));
    }
    let store = stored(&d, "store");
    assert!(!contains_bytes(&store, b"Question number 1"));
    assert!(contains_bytes(&store, b"Question number 2"));
}

/// Refusals say why: the desk's own address, something not an address,
/// a sweep with no retention set.
#[test]
fn refusals_say_why() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    for (args, why) in [
        (vec!["forget", "support@example.com"], "desk's own address"),
        (
            vec!["forget", "support+billing@example.com"],
            "desk's own address",
        ),
        (vec!["forget", "not an address"], "is not a mail address"),
        (
            vec!["export", "--person", "nobody"],
            "is not a mail address",
        ),
        (vec!["retention", "run"], "policy.retention is not set"),
    ] {
        let out = d.cli(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

/// Mail still waiting to go when she is forgotten: the ack to her and the
/// team's copy of her mail (whose body is her erased message) are dropped
/// with who ran `forget`, and never sent once the relay works again.
#[test]
fn pending_mail_to_or_from_the_forgotten_person_is_dropped() {
    let sink = Sink::start_blocking();
    sink.set_mode(common::sink::Mode::TempFail);
    let d = Daemon::start(sink.port(), "");
    d.deliver_ok(MARI, &mari_first());
    d.deliver_ok(JAAN, &jaan_mail());
    let pending = |d: &Daemon| -> Vec<Value> {
        json(&d.cli_ok(&["outbox", "list", "--state", "all", "--json"]))
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    eventually(10, "four entries queued", || pending(&d).len() == 4);
    d.cli_ok(&["forget", MARI]);
    let all = pending(&d);
    let dropped: Vec<&Value> = all.iter().filter(|e| e["state"] == "dropped").collect();
    assert_eq!(dropped.len(), 2, "{all:#?}");
    for e in &dropped {
        assert_eq!(e["ticket"], "SUP-1", "{e}");
        assert_eq!(e["dropped"]["by"], me(), "{e}");
    }
    assert!(all
        .iter()
        .filter(|e| e["ticket"] == "SUP-2")
        .all(|e| e["state"] == "pending"));
    sink.set_mode(common::sink::Mode::Accept);
    eventually(20, "Jaan's mail goes out", || {
        of_kind(&sink, "ack")
            .iter()
            .any(|m| m.rcpt_to == vec![JAAN.to_string()])
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        sink.messages()
            .iter()
            .all(|m| m.header("X-Postdesk-Ticket").as_deref() != Some("SUP-1")),
        "nothing about her went out"
    );
}
