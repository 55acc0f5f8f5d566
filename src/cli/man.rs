//! Manual pages from the clap tree (`postdesk man DIR`, hidden; run by
//! `scripts/package.sh` before `cargo deb`).
//!
//! One page per command: `postdesk.1`, then `postdesk-serve.1`,
//! `postdesk-ticket.1`, `postdesk-ticket-list.1`, … for every subcommand
//! that is not hidden. The pages carry no date, so the same source gives
//! the same bytes. The top page adds FILES, ENVIRONMENT and SEE ALSO, which
//! clap knows nothing about.

use clap::CommandFactory;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes every page into `out_dir` (created if missing); returns their
/// paths, the top page first.
pub fn write_man(out_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)?;
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    // Gives every subcommand its display name, `postdesk-ticket-list`.
    cmd.build();
    let mut written = Vec::new();
    let path = out_dir.join(page(&cmd).get_filename());
    let mut file = std::fs::File::create(&path)?;
    page(&cmd).render(&mut file)?;
    top_page_extra().to_writer(&mut file)?;
    file.flush()?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        write_tree(sub, out_dir, &mut written)?;
    }
    Ok(written)
}

fn write_tree(cmd: &clap::Command, out_dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if cmd.is_hide_set() {
        return Ok(());
    }
    out.push(page(cmd).generate_to(out_dir)?);
    for sub in cmd.get_subcommands() {
        write_tree(sub, out_dir, out)?;
    }
    Ok(())
}

fn page(cmd: &clap::Command) -> Man {
    Man::new(cmd.clone())
        .manual("postdesk manual")
        .source(concat!("postdesk ", env!("CARGO_PKG_VERSION")))
}

fn top_page_extra() -> Roff {
    let mut r = Roff::default();
    r.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/postdesk/postdesk.yaml",
            "the configuration (see /usr/share/doc/postdesk/configuration.md)",
        ),
        (
            "/var/lib/postdesk",
            "data_dir: the store, the raw-message spool and control.sock",
        ),
        (
            "/run/postdesk/lmtp.sock",
            "the LMTP socket Postfix delivers to (listen.lmtp)",
        ),
        (
            "/usr/lib/systemd/system/postdesk.service",
            "the systemd unit",
        ),
    ] {
        r.control("TP", []);
        r.text([bold(path)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", []);
    r.text([bold("POSTDESK_CONFIG")]);
    r.text([roman("the config file, when --config is not given")]);
    r.control("TP", []);
    r.text([bold("RUST_LOG")]);
    r.text([roman("overrides log.level, e.g. RUST_LOG=postdesk=debug")]);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("postfix"),
        roman("(1), "),
        bold("postqueue"),
        roman("(1), "),
        bold("systemctl"),
        roman("(1); /usr/share/doc/postdesk/: operations.md (log lines, backups, troubleshooting), postfix.md, configuration.md."),
    ]);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_command() {
        let dir = std::env::temp_dir().join(format!("postdesk-man-{}", std::process::id()));
        let pages = write_man(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in ["postdesk.1", "postdesk-serve.1", "postdesk-ticket.1"] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let top = std::fs::read_to_string(&pages[0]).unwrap();
        assert!(top.contains(".SH FILES"), "{top}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
