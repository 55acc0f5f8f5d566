//! The Debian package (`cargo deb`, `[package.metadata.deb]` in Cargo.toml,
//! `debian/`, `scripts/package.sh`).
//!
//! Always, without building a package: every asset Cargo.toml names exists
//! or is made by scripts/package.sh, the packaged config loads and carries
//! the production values, the man pages come out one per command, the
//! systemd unit passes `systemd-analyze verify`, the maintainer scripts
//! parse and do what docs/operations.md says.
//!
//! With `POSTDESK_PACKAGE_TEST=1`: `scripts/package.sh` builds the real .deb
//! (release build, several minutes) and `dpkg-deb` is asked what is in it.
//!
//! `scripts/package.sh` also runs `man_pages` with `POSTDESK_MAN_OUT=DIR`
//! to write the pages until `postdesk man DIR` is wired.

use postdesk::cli::Cli;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

// The same source file the binary's hidden `man` subcommand uses; its
// `super::Cli` is the import above.
#[path = "../src/cli/man.rs"]
mod man;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

fn root() -> &'static Path {
    Path::new(ROOT)
}

/// `[package.metadata.deb]`, as cargo reads it.
fn deb_metadata() -> Value {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(ROOT)
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "postdesk")
        .expect("package postdesk")
        .clone();
    let deb = pkg["metadata"]["deb"].clone();
    assert!(deb.is_object(), "no [package.metadata.deb] in Cargo.toml");
    deb
}

fn assets(deb: &Value) -> Vec<(String, String, String)> {
    deb["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let s = |i: usize| a[i].as_str().unwrap_or_default().to_string();
            (s(0), s(1), s(2))
        })
        .collect()
}

/// Files under `root` matching a pattern of `/`-separated parts, where a
/// part may be `**` (any depth) or hold `*` (any run of characters).
fn glob(root: &Path, pattern: &str) -> Vec<PathBuf> {
    fn matches(part: &str, name: &str) -> bool {
        let pieces: Vec<&str> = part.split('*').collect();
        if pieces.len() == 1 {
            return part == name;
        }
        let mut rest = name;
        for (i, p) in pieces.iter().enumerate() {
            if i == 0 {
                let Some(r) = rest.strip_prefix(p) else {
                    return false;
                };
                rest = r;
            } else if i == pieces.len() - 1 {
                return rest.ends_with(p);
            } else {
                match rest.find(p) {
                    Some(at) => rest = &rest[at + p.len()..],
                    None => return false,
                }
            }
        }
        true
    }
    fn walk(dir: &Path, parts: &[&str], out: &mut Vec<PathBuf>) {
        let Some((first, rest)) = parts.split_first() else {
            if dir.is_file() {
                out.push(dir.to_path_buf());
            }
            return;
        };
        if *first == "**" {
            walk(dir, rest, out);
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), parts, out);
                }
            }
            return;
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if matches(first, &e.file_name().to_string_lossy()) {
                walk(&e.path(), rest, out);
            }
        }
    }
    let parts: Vec<&str> = pattern.split('/').collect();
    let mut out = Vec::new();
    walk(root, &parts, &mut out);
    out.sort();
    out.dedup();
    out
}

#[test]
fn deb_metadata_names_what_the_package_needs_and_every_asset_exists() {
    let deb = deb_metadata();
    assert_eq!(deb["section"], "mail");
    assert!(
        deb["maintainer"].as_str().is_some_and(|m| m.contains('<')),
        "{deb}"
    );
    let depends = deb["depends"].as_str().unwrap_or_default();
    assert!(
        depends.contains("$auto") && depends.contains("adduser"),
        "{depends}"
    );
    assert_eq!(deb["maintainer-scripts"], "debian/");
    assert_eq!(deb["systemd-units"]["unit-scripts"], "systemd/");
    assert!(root().join("systemd/postdesk.service").is_file());

    let script = std::fs::read_to_string(root().join("scripts/package.sh")).unwrap();
    let mut dests = Vec::new();
    for (src, dest, mode) in assets(&deb) {
        assert!(
            u32::from_str_radix(&mode, 8).is_ok(),
            "{src}: mode {mode:?} is not octal"
        );
        dests.push(dest.clone());
        if src == "target/release/postdesk" {
            // cargo deb builds it (scripts/package.sh: cargo build --release).
            continue;
        }
        if let Some(dir) = ["target/man/", "target/package/"]
            .into_iter()
            .find(|d| src.starts_with(d))
        {
            assert!(
                script.contains(dir.trim_end_matches('/')),
                "{src} is generated, but scripts/package.sh does not make {dir}"
            );
            continue;
        }
        let found = glob(root(), &src);
        assert!(!found.is_empty(), "asset {src} matches no file");
    }
    for want in [
        "usr/bin/",
        "etc/postdesk/postdesk.yaml",
        "usr/share/postdesk/templates/",
        "usr/share/man/man1/",
        "usr/share/doc/postdesk/",
    ] {
        assert!(
            dests.iter().any(|d| d == want),
            "no asset to {want}: {dests:?}"
        );
    }
    // Every template of every language is shipped.
    let templates = glob(root(), "config/templates/**/*");
    assert!(
        templates.iter().any(|p| p.ends_with("en/ack.txt"))
            && templates.iter().any(|p| p.ends_with("et/ack.txt")),
        "{templates:?}"
    );
}

#[test]
fn packaged_config_loads_with_the_production_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("postdesk.yaml");
    let st = Command::new("bash")
        .arg(root().join("scripts/package.sh"))
        .arg("prod-config")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "package.sh prod-config failed");
    let cfg = postdesk::config::Config::load(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.data_dir, Path::new("/var/lib/postdesk"));
    assert_eq!(cfg.listen.lmtp, vec!["unix:/run/postdesk/lmtp.sock"]);
    assert_eq!(cfg.listen.lmtp_socket_group, "postfix");
    assert_eq!(cfg.outbound.relay, "smtp://127.0.0.1:10025");
    postdesk::render::Templates::load(cfg.templates_dir.as_deref())
        .unwrap_or_else(|e| panic!("templates: {e}"));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        !text.contains("# prod:"),
        "a prod: line was not applied:\n{text}"
    );
}

/// Writes the pages into `$POSTDESK_MAN_OUT` when set (scripts/package.sh),
/// else into a temporary directory, and checks them.
#[test]
fn man_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("POSTDESK_MAN_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let pages = man::write_man(&dir).unwrap();
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "postdesk.1", "{names:?}");
    for want in [
        "postdesk-serve.1",
        "postdesk-check-config.1",
        "postdesk-ticket.1",
        "postdesk-ticket-list.1",
        "postdesk-ticket-show.1",
        "postdesk-explain.1",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains("help") || n == "postdesk-man.1"),
        "{names:?}"
    );
    // The asset glob target/man/*.1 takes exactly these.
    assert_eq!(glob(&dir, "*.1").len(), pages.len());
    let top = std::fs::read_to_string(&pages[0]).unwrap();
    for want in [".TH postdesk 1", ".SH NAME", ".SH FILES", "POSTDESK_CONFIG"] {
        assert!(top.contains(want), "{want} missing:\n{top}");
    }
    let list = std::fs::read_to_string(dir.join("postdesk-ticket-list.1")).unwrap();
    assert!(list.contains("\\-\\-status"), "{list}");
    // `man` renders them without complaint, where it is installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let out = Command::new("man")
            .arg("--warnings")
            .arg("-l")
            .arg(&pages[0])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(out.status.success(), "man -l failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ticket"), "{text}");
    }
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(root().join("systemd/postdesk.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/postdesk "), "{unit}");
    let Ok(v) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    };
    assert!(v.status.success());
    // The installed path, swapped for the binary just built (verify checks
    // that ExecStart is executable).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postdesk.service");
    std::fs::write(&path, unit.replace("/usr/bin/postdesk", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    assert!(
        !err.contains("postdesk.service"),
        "systemd-analyze has remarks on the unit: {err}"
    );
}

#[test]
fn maintainer_scripts_parse_and_keep_data_until_purge() {
    for s in ["postinst", "postrm"] {
        let p = root().join("debian").join(s);
        let st = Command::new("sh").arg("-n").arg(&p).status().unwrap();
        assert!(st.success(), "{s} does not parse");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{s} is not executable");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("#DEBHELPER#"),
            "{s}: no #DEBHELPER# (systemd snippets)"
        );
    }
    let postinst = std::fs::read_to_string(root().join("debian/postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group --home /var/lib/postdesk"));
    assert!(postinst.contains("--shell /usr/sbin/nologin"));
    assert!(postinst.contains("-m 0700 /var/lib/postdesk"));
    assert!(postinst.contains("getent group postfix"));
    // postrm removes the data on purge and nowhere else.
    let postrm = std::fs::read_to_string(root().join("debian/postrm")).unwrap();
    let purge = postrm.find("purge)").expect("a purge branch");
    let rm = postrm
        .find("rm -rf /var/lib/postdesk")
        .expect("removes the data");
    let next = postrm[purge..].find(";;").unwrap() + purge;
    assert!(rm > purge && rm < next, "data removed outside purge");
    assert_eq!(postrm.matches("rm -rf").count(), 1);
}

#[test]
fn built_package_holds_binary_unit_config_templates_and_man_pages() {
    if std::env::var("POSTDESK_PACKAGE_TEST").as_deref() != Ok("1") {
        eprintln!("skipped: set POSTDESK_PACKAGE_TEST=1 to build the .deb");
        return;
    }
    let out = Command::new("bash")
        .arg(root().join("scripts/package.sh"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/package.sh failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        deb.is_file() && deb.extension().is_some_and(|e| e == "deb"),
        "{stdout}"
    );

    let list = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(list.status.success());
    let list = String::from_utf8_lossy(&list.stdout);
    let has = |path: &str| list.lines().any(|l| l.ends_with(path));
    for want in [
        "./usr/bin/postdesk",
        "/systemd/system/postdesk.service",
        "./etc/postdesk/postdesk.yaml",
        "./usr/share/postdesk/templates/en/ack.txt",
        "./usr/share/postdesk/templates/et/ack.txt",
        "./usr/share/man/man1/postdesk.1.gz",
        "./usr/share/man/man1/postdesk-ticket-list.1.gz",
        "./usr/share/doc/postdesk/README.md",
        "./usr/share/doc/postdesk/postfix.md",
        "./usr/share/doc/postdesk/operations.md",
    ] {
        assert!(has(want), "{want} not in the package:\n{list}");
    }
    let bin = list
        .lines()
        .find(|l| l.ends_with("./usr/bin/postdesk"))
        .unwrap();
    assert!(bin.starts_with("-rwxr-xr-x 0/0"), "{bin}");
    let size: u64 = bin
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        size < 40 << 20,
        "the binary keeps its debug info ({size} bytes); it belongs in the dbgsym package"
    );
    let conf = list
        .lines()
        .find(|l| l.ends_with("./etc/postdesk/postdesk.yaml"))
        .unwrap();
    assert!(conf.starts_with("-rw-r----- 0/0"), "{conf}");

    let info = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(info.status.success());
    let info = String::from_utf8_lossy(&info.stdout);
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    assert!(
        depends.contains("adduser") && depends.contains("libc6"),
        "{depends}"
    );
    assert!(info.contains("Section: mail"), "{info}");
    for script in ["postinst", "postrm", "prerm", "conffiles"] {
        assert!(info.contains(script), "no {script} in the package:\n{info}");
    }
    let conffiles = Command::new("dpkg-deb")
        .args(["-I"])
        .arg(&deb)
        .arg("conffiles")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/postdesk/postdesk.yaml"),
        "the config is a conffile"
    );
    let postinst = Command::new("dpkg-deb")
        .args(["-I"])
        .arg(&deb)
        .arg("postinst")
        .output()
        .unwrap();
    let postinst = String::from_utf8_lossy(&postinst.stdout);
    assert!(
        postinst.contains("adduser --system") && postinst.contains("deb-systemd-helper"),
        "postinst with the systemd snippets:\n{postinst}"
    );
}
