//! The command grammar (docs/commands.md): `#` lines at the top of an
//! agent's own text, one command per line, and the actions carried by signed
//! action addresses. Parsing is pure; obeying is `workflow::ops`.

use crate::store::Timestamp;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Take,
    Assign {
        agent: String,
    },
    Release,
    Done,
    Waiting,
    Snooze {
        until: Timestamp,
    },
    Spam,
    Customer {
        id: String,
    },
    Note,
    Attach {
        ticket: u64,
    },
    Reopen,
    /// Set the ticket's category (checked against `categories` when obeyed).
    Category {
        id: String,
    },
    /// Set the ticket's priority (checked against `priorities` when obeyed).
    Priority {
        id: String,
    },
    /// Add and remove tags: `#tag urgent -old`.
    Tag {
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// The sender is away (skipped by distribution) until then; `None`
    /// until `#back`. About the agent, not a ticket.
    Away {
        until: Option<AwayUntil>,
    },
    /// The sender is back: distribution counts them in again.
    Back,
    /// Hand the ticket to a second-line group: the category's
    /// `second_line`, or the one named.
    Escalate {
        group: Option<String>,
    },
    /// Back to the first line.
    Deescalate,
    /// The sender follows the ticket.
    Watch,
    /// The sender stops following it.
    Unwatch,
    /// An agent follows the ticket.
    Cc {
        agent: String,
    },
    /// Send a canned answer to the customer (checked against the known
    /// answers by the decision, which has them).
    Answer {
        name: String,
    },
    /// Run a named list of commands from `macros:` (expanded by the
    /// decision before anything is obeyed).
    Macro {
        name: String,
    },
    /// Join this ticket and another into one (the older survives).
    Merge {
        ticket: u64,
    },
}

/// How long `#away` lasts. A bare date is a whole day in the desk's time
/// zone, which the grammar does not know; the decision resolves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AwayUntil {
    /// Through this day, both ends of it included (back the day after).
    Day(jiff::civil::Date),
    /// Until this moment.
    At(Timestamp),
}

/// Command names, for the refusal of a word that is none of them.
pub const NAMES: &str = "take, assign, release, done, waiting, snooze, spam, customer, note, attach, reopen, category, priority, tag, away, back, escalate, deescalate, watch, unwatch, cc, answer, macro, merge";

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
            Command::Category { .. } => "category",
            Command::Priority { .. } => "priority",
            Command::Tag { .. } => "tag",
            Command::Away { .. } => "away",
            Command::Back => "back",
            Command::Escalate { .. } => "escalate",
            Command::Deescalate => "deescalate",
            Command::Watch => "watch",
            Command::Unwatch => "unwatch",
            Command::Cc { .. } => "cc",
            Command::Answer { .. } => "answer",
            Command::Macro { .. } => "macro",
            Command::Merge { .. } => "merge",
        }
    }

    /// About the sender rather than a ticket: needs no ticket to act on.
    pub fn is_about_the_agent(&self) -> bool {
        matches!(self, Command::Away { .. } | Command::Back)
    }
}

/// Tags, like ids said by mail, are one word.
pub fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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
        "back" => needs_none(Command::Back),
        "deescalate" => needs_none(Command::Deescalate),
        "watch" => needs_none(Command::Watch),
        "unwatch" => needs_none(Command::Unwatch),
        "escalate" => match arg.split_whitespace().count() {
            0 => Ok(Command::Escalate { group: None }),
            1 => Ok(Command::Escalate {
                group: Some(arg.trim().to_string()),
            }),
            _ => Err("#escalate takes at most one group name, e.g. #escalate l2".into()),
        },
        "cc" => match one_word(arg) {
            Some(a) => Ok(Command::Cc {
                agent: a.to_ascii_lowercase(),
            }),
            None => Err("#cc needs one agent, e.g. #cc bob".into()),
        },
        "answer" => match one_word(arg) {
            Some(n) if is_tag(n) => Ok(Command::Answer {
                name: n.to_ascii_lowercase(),
            }),
            _ => Err("#answer needs one answer name, e.g. #answer password-reset".into()),
        },
        "macro" => match one_word(arg) {
            Some(n) if is_tag(n) => Ok(Command::Macro {
                name: n.to_ascii_lowercase(),
            }),
            _ => Err("#macro needs one macro name, e.g. #macro close-billing".into()),
        },
        "category" => match one_word(arg) {
            Some(id) => Ok(Command::Category { id: id.to_string() }),
            None => Err("#category needs one category id, e.g. #category billing".into()),
        },
        "priority" => match one_word(arg) {
            Some(id) => Ok(Command::Priority { id: id.to_string() }),
            None => Err("#priority needs one priority id, e.g. #priority high".into()),
        },
        "tag" | "tags" => {
            let (mut add, mut remove) = (Vec::new(), Vec::new());
            for w in arg.split_whitespace() {
                let (list, t) = match w.strip_prefix('-') {
                    Some(t) => (&mut remove, t),
                    None => (&mut add, w.strip_prefix('+').unwrap_or(w)),
                };
                if !is_tag(t) {
                    return Err(format!(
                        "#tag {w}: a tag is one word of letters, digits, - or _ (-tag removes one)"
                    ));
                }
                let t = t.to_string();
                if !list.contains(&t) {
                    list.push(t);
                }
            }
            if add.is_empty() && remove.is_empty() {
                Err("#tag needs a tag to add or -tag to remove, e.g. #tag urgent or #tag -urgent".into())
            } else {
                Ok(Command::Tag { add, remove })
            }
        }
        "away" => {
            let when = arg
                .strip_prefix("until")
                .filter(|rest| rest.is_empty() || rest.starts_with(' '))
                .unwrap_or(arg)
                .trim();
            if when.is_empty() {
                return Ok(Command::Away { until: None });
            }
            if let Ok(day) = when.parse::<jiff::civil::Date>() {
                return Ok(Command::Away {
                    until: Some(AwayUntil::Day(day)),
                });
            }
            match parse_until(when, now) {
                Some(at) if at > now => Ok(Command::Away {
                    until: Some(AwayUntil::At(at)),
                }),
                Some(_) => Err(format!("#away until {when}: that time has passed")),
                None => Err(format!(
                    "#away needs a date, a time or a duration, e.g. #away until 2026-12-01 or #away 3d (got {when:?})"
                )),
            }
        }
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
        "merge" => match crate::ingest::thread::tokens(&format!("[{arg}]"), token_prefix).first() {
            Some(n) => Ok(Command::Merge { ticket: *n }),
            None => match arg.trim().parse::<u64>() {
                Ok(n) => Ok(Command::Merge { ticket: n }),
                Err(_) => Err(format!("#merge needs a ticket token, e.g. #merge {token_prefix}-12")),
            },
        },
        "attach" => match crate::ingest::thread::tokens(&format!("[{arg}]"), token_prefix).first() {
            Some(n) => Ok(Command::Attach { ticket: *n }),
            None => match arg.trim().parse::<u64>() {
                Ok(n) => Ok(Command::Attach { ticket: n }),
                Err(_) => Err(format!("#attach needs a ticket token, e.g. #attach {token_prefix}-12")),
            },
        },
        other => Err(format!("#{other} is not a command ({NAMES})")),
    }
}

/// The argument when it is exactly one word.
fn one_word(arg: &str) -> Option<&str> {
    let mut w = arg.split_whitespace();
    match (w.next(), w.next()) {
        (Some(one), None) => Some(one),
        _ => None,
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
    fn desk_policy_commands() {
        let p = parse(
            "#category Billing\n#priority high\n#tag urgent -old +vip\n#away until 2026-12-01\n#back\n#away\n#away 3d\n",
            "SUP",
            now(),
        );
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        assert_eq!(
            p.commands,
            vec![
                Command::Category {
                    id: "Billing".into()
                },
                Command::Priority { id: "high".into() },
                Command::Tag {
                    add: vec!["urgent".into(), "vip".into()],
                    remove: vec!["old".into()]
                },
                Command::Away {
                    until: Some(AwayUntil::Day("2026-12-01".parse().unwrap()))
                },
                Command::Back,
                Command::Away { until: None },
                Command::Away {
                    until: Some(AwayUntil::At("2026-11-25T10:00:00Z".parse().unwrap()))
                },
            ]
        );
        let p = parse(
            "#category\n#priority very high\n#tag two!\n#tag\n#away until soon\n#away until 2020-01-01T00:00Z\n#back now\n",
            "SUP",
            now(),
        );
        let why: Vec<&str> = p.bad.iter().map(|b| b.why.as_str()).collect();
        assert_eq!(
            why,
            vec![
                "#category needs one category id, e.g. #category billing",
                "#priority needs one priority id, e.g. #priority high",
                "#tag two!: a tag is one word of letters, digits, - or _ (-tag removes one)",
                "#tag needs a tag to add or -tag to remove, e.g. #tag urgent or #tag -urgent",
                "#away needs a date, a time or a duration, e.g. #away until 2026-12-01 or #away 3d (got \"soon\")",
                "#away until 2020-01-01T00:00Z: that time has passed",
                "#back takes no argument",
            ]
        );
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
