//! The benchmark still runs end to end (issue #6): every row against both
//! postdesk and Dovecot, and the scale check, in its seconds-long smoke
//! mode. It asserts that the loads were delivered and every figure was
//! taken — never how fast: speed is read from the full run
//! (docs/performance.md), not asserted by a test.

use std::process::Command;

#[test]
fn the_benchmark_runs_every_row_against_both_servers() {
    if !std::path::Path::new("/usr/lib/dovecot/lmtp").exists() {
        panic!("Dovecot's LMTP server is missing: apt-get install -y dovecot-lmtpd (scripts/test.sh installs it)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_postdesk-bench"))
        .arg("--smoke")
        .arg("--postdesk")
        .arg(env!("CARGO_BIN_EXE_postdesk"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run postdesk-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");

    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    let rows = v["rows"].as_array().expect("rows");
    let labels: Vec<&str> = rows.iter().filter_map(|r| r["label"].as_str()).collect();
    for want in [
        "smtp-source 1 × 4 KiB",
        "smtp-source 4 × 4 KiB",
        "smtp-source 16 × 4 KiB",
        "smtp-source 1 × 64 KiB",
        "smtp-source 4 × 64 KiB",
        "smtp-source 16 × 64 KiB",
        "generator 16 × 4 KiB new",
        "generator 1 × desk mix",
        "generator 4 × desk mix",
        "generator 16 × desk mix",
    ] {
        assert!(labels.contains(&want), "row {want} missing: {labels:?}");
    }
    for r in rows {
        let label = r["label"].as_str().unwrap_or("?");
        for side in ["postdesk", "dovecot"] {
            let s = &r[side][0];
            assert_eq!(s["accepted"], 20, "{label} {side}: {s}");
            assert!(
                s["rate"].as_f64().unwrap_or(0.0) > 0.0,
                "{label} {side}: {s}"
            );
            assert!(
                s["peak_mem_mib"].as_f64().unwrap_or(0.0) > 1.0,
                "{label} {side}: {s}"
            );
            assert!(
                s["disk_kib_per_msg"].as_f64().unwrap_or(0.0) > 0.0,
                "{label} {side}: {s}"
            );
            // Latency comes from our own generator; smtp-source has none.
            assert_eq!(
                s["p99_ms"].is_number(),
                label.starts_with("generator"),
                "{label} {side}: {s}"
            );
        }
    }
    let scale = v["scale"].as_array().expect("scale");
    assert_eq!(scale.len(), 2, "{scale:?}");
    for x in scale {
        assert!(x["startup_ms"][0].as_f64().unwrap_or(0.0) > 0.0, "{x}");
        assert_eq!(x["samples"][0]["accepted"], 20, "{x}");
    }
    // The printed table has a row per load and the ratio column.
    assert!(
        stdout.contains("| load | postdesk msg/s | Dovecot msg/s | ratio |"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("\n| smtp-source").count(), 6, "{stdout}");
    assert!(stdout.contains("| tickets in store |"), "{stdout}");
}
