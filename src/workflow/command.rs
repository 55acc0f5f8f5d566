//! The command grammar (docs/commands.md): `#` lines at the top of an
//! agent's own text, one command per line, and the actions carried by signed
//! action addresses. Parsing is pure; obeying is `workflow::ops`.

use crate::store::Timestamp;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Take,
    Assign { agent: String },
    Release,
    Done,
    Waiting,
    Snooze { until: Timestamp },
    Spam,
    Customer { id: String },
    Note,
    Attach { ticket: u64 },
    Reopen,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Take => "take",
            Command::Assign { .. } => "assign",
            Command::Release => "release",
            Command::Done => "done",
            Command::Waiting => "waiting",
            Command::Snooze { .. } => "snooze",
            Command::Spam => "spam",
            Command::Customer { .. } => "customer",
            Command::Note => "note",
            Command::Attach { .. } => "attach",
            Command::Reopen => "reopen",
        }
    }
}

/// A line that looked like a command and was not one, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadCommand {
    pub line: String,
    pub why: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Parsed {
    pub commands: Vec<Command>,
    pub bad: Vec<BadCommand>,
}

impl Parsed {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.bad.is_empty()
    }
}

/// Parses the `#` lines at the top of `text` (blank lines before and
/// between them allowed); the first other line ends the block, so a `#`
/// further down (a quoted mail, a hashtag) is never a command.
pub fn parse(text: &str, token_prefix: &str, now: Timestamp) -> Parsed {
    let mut out = Parsed::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(rest) = line.strip_prefix('#') else {
            break;
        };
        let mut words = rest.split_whitespace();
        let Some(word) = words.next() else { break };
        // "#1 priority", "#!", "# heading": text, not a mistyped command.
        if !word.starts_with(|c: char| c.is_ascii_alphabetic()) {
            break;
        }
        let arg: Vec<&str> = words.collect();
        let arg = arg.join(" ");
        match command(&word.to_ascii_lowercase(), arg.trim(), token_prefix, now) {
            Ok(c) => out.commands.push(c),
            Err(why) => out.bad.push(BadCommand {
                line: line.chars().take(200).collect(),
                why,
            }),
        }
    }
    out
}

/// One command by name and argument; also used for action addresses.
pub fn command(
    name: &str,
    arg: &str,
    token_prefix: &str,
    now: Timestamp,
) -> Result<Command, String> {
    let needs_none = |c: Command| {
        if arg.is_empty() {
            Ok(c)
        } else {
            Err(format!("#{name} takes no argument"))
        }
    };
    match name {
        "take" => needs_none(Command::Take),
        "release" | "share" => needs_none(Command::Release),
        "done" | "close" | "resolve" => needs_none(Command::Done),
        "waiting" | "wait" => needs_none(Command::Waiting),
        "spam" => needs_none(Command::Spam),
        "note" => needs_none(Command::Note),
        "reopen" => needs_none(Command::Reopen),
        "assign" => {
            let agent = arg.split_whitespace().next().unwrap_or("");
            if agent.is_empty() {
                Err("#assign needs an agent, e.g. #assign alice".into())
            } else {
                Ok(Command::Assign {
                    agent: agent.to_ascii_lowercase(),
                })
            }
        }
        "customer" => {
            let id = arg.split_whitespace().next().unwrap_or("");
            if id.is_empty() {
                Err("#customer needs a customer id, e.g. #customer ACME".into())
            } else {
                Ok(Command::Customer { id: id.to_string() })
            }
        }
        "snooze" => match parse_until(arg, now) {
            Some(until) if until > now => Ok(Command::Snooze { until }),
            Some(_) => Err(format!("#snooze {arg}: that time has passed")),
            None => Err(format!(
                "#snooze needs a duration or a date, e.g. #snooze 2d or #snooze 2026-12-01 (got {arg:?})"
            )),
        },
        "attach" => match crate::ingest::thread::tokens(&format!("[{arg}]"), token_prefix).first() {
            Some(n) => Ok(Command::Attach { ticket: *n }),
            None => match arg.trim().parse::<u64>() {
                Ok(n) => Ok(Command::Attach { ticket: n }),
                Err(_) => Err(format!("#attach needs a ticket token, e.g. #attach {token_prefix}-12")),
            },
        },
        other => Err(format!(
            "#{other} is not a command (take, assign, release, done, waiting, snooze, spam, customer, note, attach, reopen)"
        )),
    }
}

/// `2d`, `36h`, `2026-12-01` (start of that day, UTC) or `2026-12-01T09:00`
/// (UTC) or a full RFC 3339 time.
pub fn parse_until(arg: &str, now: Timestamp) -> Option<Timestamp> {
    let arg = arg.trim();
    if let Ok(d) = arg.parse::<crate::config::Duration>() {
        return now.checked_add(d.signed()).ok();
    }
    if let Ok(t) = arg.parse::<Timestamp>() {
        return Some(t);
    }
    if let Ok(dt) = arg.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp());
    }
    if let Ok(d) = arg.parse::<jiff::civil::Date>() {
        return d
            .to_datetime(jiff::civil::Time::midnight())
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn commands_at_the_top_only() {
        let p = parse(
            "\n#take\n#customer ACME\n\nThanks, on it.\n#done\n",
            "SUP",
            now(),
        );
        assert_eq!(
            p.commands,
            vec![Command::Take, Command::Customer { id: "ACME".into() }]
        );
        assert!(p.bad.is_empty());
        assert!(parse("Hello #done", "SUP", now()).is_empty());
        assert!(parse("#1 priority for us\n#done", "SUP", now()).is_empty());
    }

    #[test]
    fn arguments_and_errors() {
        let p = parse(
            "#assign Alice@Example.com\n#snooze 2d\n#attach [SUP-12]\n#frobnicate\n#done now\n",
            "SUP",
            now(),
        );
        assert_eq!(
            p.commands,
            vec![
                Command::Assign {
                    agent: "alice@example.com".into()
                },
                Command::Snooze {
                    until: "2026-11-24T10:00:00Z".parse().unwrap()
                },
                Command::Attach { ticket: 12 },
            ]
        );
        assert_eq!(p.bad.len(), 2);
        assert!(p.bad[0].why.contains("not a command"), "{:?}", p.bad);
        assert!(p.bad[1].why.contains("takes no argument"), "{:?}", p.bad);
    }

    #[test]
    fn snooze_dates() {
        let n = now();
        assert_eq!(
            parse_until("2026-12-01", n),
            Some("2026-12-01T00:00:00Z".parse().unwrap())
        );
        assert_eq!(
            parse_until("2026-12-01T09:30", n),
            Some("2026-12-01T09:30:00Z".parse().unwrap())
        );
        assert_eq!(parse_until("tomorrow", n), None);
        assert!(command("snooze", "2020-01-01", "SUP", n).is_err());
    }
}
