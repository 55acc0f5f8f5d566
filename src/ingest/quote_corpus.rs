//! Quote stripping on real replies (test only).
//!
//! Every `NAME.expected.txt` in `fixtures/mail/replies-threads/` holds, written
//! by hand, what a person reading `NAME.eml` would say its sender wrote: no
//! quoted history, no attribution line, no signature (after `-- `), no mobile
//! trailer, no list footer. The mails are real ones from list archives and
//! test suites (Outlook, Gmail, Yahoo, Thunderbird, Apple Mail, iPhone, Mutt,
//! Zimbra, Eudora; English, German, French, Russian, Chinese, Italian, …);
//! `fixtures/SOURCES.md` says where each came from.
//!
//! [`own_text`] must give the same text, compared with whitespace runs
//! collapsed (line wrapping, blank lines and no-break spaces are not what
//! this is about). The expectations are never bent to the code: where
//! `own_text` is known to be wrong, the case is listed in [`KNOWN_GAPS`]
//! with the reason, and the test insists that it is still wrong, so a fix
//! shows up here and the entry is removed.

use crate::ingest::parse::{fixtures, parse};
use crate::ingest::quote::own_text;
use std::path::Path;

const FOLDER: &str = "replies-threads";

/// At least this many cases must have run and passed.
const MIN_CASES: usize = 10;

/// (file, why `own_text` gets it wrong). Each must still fail.
const KNOWN_GAPS: &[(&str, &str)] = &[(
    "lkml-powerpc-85xx-add-mchk-handler-for-srio-p-06.eml",
    "the quoted `> -----Original Message-----` block has lines the client's \
         wrapping pushed out of the quote (`linux-kernel@vger.kernel.org;`), so it \
         reads as an interleaved answer and the whole old mail is kept",
)];

/// Whitespace runs (spaces, tabs, newlines, no-break spaces) to one space.
fn normalise(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn own_text_of_real_replies() {
    let dir = Path::new(fixtures::ROOT).join(FOLDER);
    let mut expectations: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| fixtures::name(p).ends_with(".expected.txt"))
        .collect();
    expectations.sort();

    // Every mail has its expectation: a mail without one would be a case
    // silently skipped.
    for eml in fixtures::emls(FOLDER) {
        let want = eml.with_extension("expected.txt");
        assert!(
            want.exists(),
            "{} has no {}",
            eml.display(),
            fixtures::name(&want)
        );
    }

    let mut passed = Vec::new();
    let mut wrong = Vec::new();
    let mut still_gaps = Vec::new();
    let mut gaps_fixed = Vec::new();
    for exp in &expectations {
        let case = fixtures::name(exp)
            .trim_end_matches(".expected.txt")
            .to_string();
        let file = format!("{case}.eml");
        let eml = dir.join(&file);
        let expected =
            std::fs::read_to_string(exp).unwrap_or_else(|e| panic!("{}: {e}", exp.display()));
        let p = parse(&fixtures::read(&eml));
        let got = own_text(&p.text);
        let ok = normalise(&got) == normalise(&expected);
        let gap = KNOWN_GAPS.iter().find(|(f, _)| *f == file);
        match (ok, gap) {
            (true, None) => passed.push(case),
            (true, Some(_)) => gaps_fixed.push(case),
            (false, Some((_, why))) => still_gaps.push(format!("{case}: {why}")),
            (false, None) => wrong.push(format!(
                "{case}\n--- expected:\n{}\n--- own_text:\n{}\n",
                expected.trim(),
                got
            )),
        }
    }
    eprintln!(
        "quote corpus: {} of {} real replies give the expected own text; known gaps: {}",
        passed.len(),
        expectations.len(),
        still_gaps.len()
    );
    for g in &still_gaps {
        eprintln!("  known gap: {g}");
    }
    assert!(
        wrong.is_empty(),
        "own_text differs from the hand-written expectation:\n{}",
        wrong.join("\n")
    );
    assert!(
        gaps_fixed.is_empty(),
        "now right, remove from KNOWN_GAPS: {gaps_fixed:?}"
    );
    for (f, _) in KNOWN_GAPS {
        assert!(dir.join(f).exists(), "KNOWN_GAPS names a missing file {f}");
    }
    assert!(
        passed.len() >= MIN_CASES,
        "only {} cases ran and passed in {}; at least {MIN_CASES} expected",
        passed.len(),
        dir.display()
    );
}
