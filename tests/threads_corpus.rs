//! Threading on real-world list threads (fixtures/mail/threads, ground truth
//! in tests/threads_manifest.json): delivered in arrival order over LMTP,
//! every message must land in its thread's ticket, and no two threads may
//! share one.

mod common;

use common::sink::Sink;
use common::*;
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn real_threads_land_in_one_ticket_each() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/threads_manifest.json"
        ))
        .expect("tests/threads_manifest.json"),
    )
    .expect("manifest JSON");
    let entries = manifest.as_array().expect("manifest is an array");
    assert!(
        entries.len() >= 40,
        "at least 40 real messages, got {}",
        entries.len()
    );

    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    let mut by_thread: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut clients = BTreeSet::new();
    for e in entries {
        let file = e["file"].as_str().expect("file");
        let thread = e["thread"].as_str().expect("thread").to_string();
        let raw = std::fs::read(fixture(&format!("mail/threads/{file}")))
            .unwrap_or_else(|err| panic!("{file}: {err}"));
        let id = angle(
            &header_value(&raw, "Message-ID").unwrap_or_else(|| panic!("{file} has no Message-ID")),
        );
        let from = header_value(&raw, "From")
            .map(|f| angle(&f))
            .unwrap_or_default();
        if let Some(ua) =
            header_value(&raw, "X-Mailer").or_else(|| header_value(&raw, "User-Agent"))
        {
            clients.insert(ua.split_whitespace().next().unwrap_or("").to_string());
        }
        let r = d.deliver(&from, &["support@example.com"], &raw);
        assert!(r.len() == 1 && r[0].starts_with("250"), "{file}: {r:?}");
        by_thread.entry(thread).or_default().push(id);
    }

    let tickets = d.tickets();
    let mut ticket_of: BTreeMap<String, String> = BTreeMap::new();
    for t in &tickets {
        for id in t["message_ids"].as_array().unwrap() {
            ticket_of.insert(
                id.as_str().unwrap().to_string(),
                t["token"].as_str().unwrap().to_string(),
            );
        }
    }
    let mut used = BTreeMap::new();
    let mut wrong = Vec::new();
    for (thread, ids) in &by_thread {
        let first = ticket_of
            .get(&ids[0])
            .cloned()
            .unwrap_or_else(|| panic!("{thread}: first message not ticketed"));
        for id in ids {
            let got = ticket_of.get(id).cloned().unwrap_or_default();
            if got != first {
                wrong.push(format!("{thread}: <{id}> in {got:?}, thread is in {first}"));
            }
        }
        if let Some(other) = used.insert(first.clone(), thread.clone()) {
            wrong.push(format!("{thread} and {other} share {first}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "misthreaded:\n{}\n{}",
        wrong.join("\n"),
        d.log()
    );
    assert_eq!(tickets.len(), by_thread.len(), "one ticket per thread");
    eprintln!(
        "{} messages, {} threads, clients seen: {:?}",
        entries.len(),
        by_thread.len(),
        clients
    );
}
