//! The `calendars` and `sla` config keys (SPEC §9): shapes, defaults,
//! checks, loading the calendar files, and the first-match policy pick.
//!
//! Checks name their key as a path (`sla.policies[2].calendar`) so
//! `Config::parse` puts the line in front, as for the routing rules.

use super::calendar::Calendar;
use crate::config::{known_categories, known_priorities, Config, Duration, Error, PolicyError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest target accepted. A walk over open time goes day by day, so an
/// accidental `3000d` would cost seconds per ticket; a year is far beyond
/// any service promise.
const MAX_TARGET: Duration = Duration::from_secs(366 * 86400);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// How long before a due time the warning goes out.
    pub warn_before: Duration,
    /// First match wins; a policy without `if` matches every ticket.
    pub policies: Vec<SlaPolicy>,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            warn_before: Duration::from_secs(3600),
            policies: Vec::new(),
        }
    }
}

/// `if` is a Rust keyword, hence `when`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SlaPolicy {
    pub id: String,
    #[serde(rename = "if", default)]
    pub when: SlaConditions,
    /// A key of `calendars`; none = the clock runs around the clock (UTC).
    #[serde(default)]
    pub calendar: Option<String>,
    /// Open time until the first agent reply is due; none = no target.
    #[serde(default)]
    pub first_response: Option<Duration>,
    /// Open time until `done` is due; none = no target.
    #[serde(default)]
    pub resolution: Option<Duration>,
}

/// All written conditions must hold; each compares without regard to case.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConditions {
    pub category: Option<String>,
    pub priority: Option<String>,
    pub customer: Option<String>,
    pub customer_category: Option<String>,
}

impl SlaConditions {
    fn holds(
        &self,
        category: Option<&str>,
        priority: Option<&str>,
        customer: Option<&str>,
        customer_category: Option<&str>,
    ) -> bool {
        let ok = |want: &Option<String>, have: Option<&str>| match want {
            None => true,
            Some(w) => have.is_some_and(|h| h.trim().eq_ignore_ascii_case(w.trim())),
        };
        ok(&self.category, category)
            && ok(&self.priority, priority)
            && ok(&self.customer, customer)
            && ok(&self.customer_category, customer_category)
    }
}

/// The first policy whose conditions all hold for the ticket; `None` when
/// no policy matches (the ticket has no SLA).
pub fn pick_policy<'a>(
    sla: &'a SlaConfig,
    category: Option<&str>,
    priority: Option<&str>,
    customer: Option<&str>,
    customer_category: Option<&str>,
) -> Option<&'a SlaPolicy> {
    sla.policies.iter().find(|p| {
        p.when
            .holds(category, priority, customer, customer_category)
    })
}

/// The loaded calendar files by id. Cheap to clone; not part of the YAML
/// (it is what `calendars` points at), so serde skips it and equality
/// compares the loaded contents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calendars(Arc<BTreeMap<String, Calendar>>);

impl Calendars {
    pub fn new(map: BTreeMap<String, Calendar>) -> Calendars {
        Calendars(Arc::new(map))
    }

    /// Ids compare without regard to case, like every other config id.
    pub fn get(&self, id: &str) -> Option<&Calendar> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(id.trim()))
            .map(|(_, c)| c)
    }

    /// A policy's calendar: the named one, or around the clock when it
    /// names none. `None` only when the id is not loaded (a `Config` from
    /// `Config::parse`, which reads no files).
    pub fn for_policy(&self, p: &SlaPolicy) -> Option<Cow<'_, Calendar>> {
        match &p.calendar {
            None => Some(Cow::Owned(Calendar::always_open())),
            Some(id) => self.get(id).map(Cow::Borrowed),
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads every file of `cfg.calendars`; relative paths are taken from the
/// folder of the config file at `config_path`. An error names the calendar
/// file, its line and key.
pub fn load_calendars(cfg: &Config, config_path: &Path) -> Result<Calendars, Error> {
    let base = config_path.parent().unwrap_or(Path::new("."));
    let mut map = BTreeMap::new();
    for (id, file) in &cfg.calendars {
        let path: PathBuf = if file.is_relative() {
            base.join(file)
        } else {
            file.clone()
        };
        map.insert(id.clone(), Calendar::load(&path)?);
    }
    Ok(Calendars::new(map))
}

fn problem(key: String, message: String) -> PolicyError {
    PolicyError { key, message }
}

/// Every check of `calendars` and `sla` that serde cannot make. Calendar
/// file contents are checked when they are loaded.
pub fn check(cfg: &Config) -> Result<(), PolicyError> {
    let mut seen_cal = BTreeMap::new();
    for (id, path) in &cfg.calendars {
        let key = format!("calendars.{id}");
        if !crate::config::is_word(id) {
            return Err(problem(
                key,
                format!("{id:?}: a calendar id is one word of letters, digits, - or _"),
            ));
        }
        if seen_cal.insert(id.to_ascii_lowercase(), ()).is_some() {
            return Err(problem(key, format!("{id:?} is listed twice")));
        }
        if path.as_os_str().is_empty() {
            return Err(problem(key, "needs a file path".into()));
        }
    }
    let known_calendars = || {
        if cfg.calendars.is_empty() {
            "no calendars are configured".to_string()
        } else {
            let ids: Vec<&str> = cfg.calendars.keys().map(String::as_str).collect();
            format!("calendars: {}", ids.join(", "))
        }
    };
    let mut seen = BTreeMap::new();
    for (i, p) in cfg.sla.policies.iter().enumerate() {
        let key = |sub: &str| format!("sla.policies[{i}].{sub}");
        if !crate::config::is_word(&p.id) {
            return Err(problem(
                key("id"),
                format!("{:?} must be one word of letters, digits, - or _", p.id),
            ));
        }
        if seen.insert(p.id.to_ascii_lowercase(), ()).is_some() {
            return Err(problem(key("id"), format!("{:?} is listed twice", p.id)));
        }
        if let Some(c) = &p.calendar {
            if !cfg
                .calendars
                .keys()
                .any(|k| k.eq_ignore_ascii_case(c.trim()))
            {
                return Err(problem(
                    key("calendar"),
                    format!("{c:?} is not a calendar ({})", known_calendars()),
                ));
            }
        }
        if let Some(c) = &p.when.category {
            if cfg.category(c).is_none() {
                return Err(problem(
                    key("if.category"),
                    format!("{c:?} is not a category ({})", known_categories(cfg)),
                ));
            }
        }
        if let Some(pr) = &p.when.priority {
            if cfg.priority(pr).is_none() {
                return Err(problem(
                    key("if.priority"),
                    format!("{pr:?} is not a priority ({})", known_priorities(cfg)),
                ));
            }
        }
        if p.first_response.is_none() && p.resolution.is_none() {
            return Err(problem(
                key("id"),
                "sets no target: give first_response, resolution or both".into(),
            ));
        }
        for (name, d) in [
            ("first_response", p.first_response),
            ("resolution", p.resolution),
        ] {
            let Some(d) = d else { continue };
            if d.std().is_zero() {
                return Err(problem(
                    key(name),
                    "0 would be breached at once; use a positive duration".into(),
                ));
            }
            if d > MAX_TARGET {
                return Err(problem(
                    key(name),
                    format!("{d} is longer than the limit of {MAX_TARGET}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
support:
  address: support@desk.test
team:
  agents:
    - email: alice@desk.test
categories:
  - id: billing
  - id: tech
calendars:
  ee: calendars/ee.yaml
";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), "postdesk.yaml").map_err(|e| e.to_string())
    }

    fn err(extra: &str) -> String {
        match parse(extra) {
            Ok(_) => panic!("accepted:\n{extra}"),
            Err(e) => e,
        }
    }

    #[test]
    fn sla_defaults_and_spec_shape() {
        let c = parse("").unwrap();
        assert_eq!(c.sla.warn_before.as_secs(), 3600);
        assert!(c.sla.policies.is_empty());
        let c = parse(
            "sla:\n  warn_before: 30m\n  policies:\n    - {id: vip, if: {priority: high}, calendar: ee, first_response: 1h, resolution: 8h}\n    - {id: std, calendar: ee, first_response: 4h, resolution: 3d}\n",
        )
        .unwrap();
        assert_eq!(c.sla.warn_before.as_secs(), 1800);
        assert_eq!(c.sla.policies.len(), 2);
        assert_eq!(
            c.sla.policies[1].resolution.map(|d| d.as_secs()),
            Some(3 * 86400)
        );
    }

    /// Line numbers count BASE's 10 lines.
    #[test]
    fn broken_policies_name_index_key_and_line() {
        let cases = [
            (
                "sla:\n  policies:\n    - {id: a, calendar: fi, first_response: 1h}\n",
                "postdesk.yaml:13: sla.policies[0].calendar: \"fi\" is not a calendar (calendars: ee)",
            ),
            (
                "sla:\n  policies:\n    - {id: a, first_response: 1h}\n    - id: b\n      if: {category: sales}\n      resolution: 1d\n",
                "postdesk.yaml:15: sla.policies[1].if.category: \"sales\" is not a category (categories: billing, tech)",
            ),
            (
                "sla:\n  policies:\n    - id: a\n      if:\n        priority: urgent\n      resolution: 1d\n",
                "postdesk.yaml:15: sla.policies[0].if.priority: \"urgent\" is not a priority (priorities: low, normal, high)",
            ),
            (
                "sla:\n  policies:\n    - {id: a, first_response: 0s}\n",
                "postdesk.yaml:13: sla.policies[0].first_response: 0 would be breached at once; use a positive duration",
            ),
            (
                "sla:\n  policies:\n    - {id: a}\n",
                "postdesk.yaml:13: sla.policies[0].id: sets no target: give first_response, resolution or both",
            ),
            (
                "sla:\n  policies:\n    - {id: a, resolution: 1d}\n    - {id: A, resolution: 2d}\n",
                "postdesk.yaml:14: sla.policies[1].id: \"A\" is listed twice",
            ),
            (
                "sla:\n  policies:\n    - {id: a, resolution: 400d}\n",
                "postdesk.yaml:13: sla.policies[0].resolution: 400d is longer than the limit of 366d",
            ),
            (
                "sla:\n  policies:\n    - {id: two words, resolution: 1d}\n",
                "postdesk.yaml:13: sla.policies[0].id: \"two words\" must be one word of letters, digits, - or _",
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(err(extra), want, "{extra}");
        }
    }

    #[test]
    fn serde_errors_in_sla_name_the_line() {
        // serde_yaml places this at the item's first line; the key that
        // holds the value is found within the item.
        assert_eq!(
            err("sla:\n  policies:\n    - id: a\n      first_response: 1h\n      resolution: 3x\n"),
            "postdesk.yaml:15: sla.policies[0].resolution: \"3x\" is not a duration (e.g. 30s, 15m, 3d)"
        );
        assert_eq!(
            err("sla:\n  policies:\n    - {id: a, resolution: 1d}\n    - {id: b, first_response: \"2x\"}\n"),
            "postdesk.yaml:14: sla.policies[1].first_response: \"2x\" is not a duration (e.g. 30s, 15m, 3d)"
        );
        let e = err("sla:\n  policies:\n    - id: a\n      if: {prio: high}\n");
        assert!(e.starts_with("postdesk.yaml:14:"), "{e}");
        assert!(e.contains("unknown field `prio`"), "{e}");
        let e = err("sla:\n  warn_befor: 1h\n");
        assert!(e.starts_with("postdesk.yaml:12:"), "{e}");
    }

    #[test]
    fn first_match_wins_and_no_if_matches_all() {
        let c = parse(
            "customers:\n  - {id: ACME, category: gold}\nsla:\n  policies:\n    - {id: gold-high, if: {customer_category: gold, priority: high}, first_response: 30m}\n    - {id: billing, if: {category: billing}, calendar: ee, first_response: 2h}\n    - {id: acme, if: {customer: acme}, resolution: 1d}\n    - {id: std, calendar: ee, first_response: 4h, resolution: 3d}\n",
        )
        .unwrap();
        let pick = |cat, pr, cu, cc| pick_policy(&c.sla, cat, pr, cu, cc).map(|p| p.id.as_str());
        assert_eq!(
            pick(Some("billing"), Some("high"), Some("ACME"), Some("gold")),
            Some("gold-high")
        );
        assert_eq!(
            pick(Some("Billing"), Some("normal"), Some("ACME"), Some("gold")),
            Some("billing")
        );
        assert_eq!(pick(None, Some("high"), Some("Acme"), None), Some("acme"));
        assert_eq!(pick(None, None, None, None), Some("std"));
        // Config::parse reads no files: a named calendar is not loaded, a
        // policy without one runs around the clock.
        let gold = pick_policy(&c.sla, None, Some("high"), None, Some("gold")).unwrap();
        let always = c.loaded_calendars.for_policy(gold).unwrap();
        assert!(always.is_open("2026-03-14T03:00:00Z".parse().unwrap()));
        let billing = pick_policy(&c.sla, Some("billing"), None, None, None).unwrap();
        assert!(c.loaded_calendars.for_policy(billing).is_none());
        let none = SlaConfig::default();
        assert!(pick_policy(&none, Some("billing"), None, None, None).is_none());
    }

    #[test]
    fn calendars_load_relative_to_the_config_and_errors_name_the_calendar_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cal")).unwrap();
        std::fs::write(
            dir.path().join("cal/ee.yaml"),
            "timezone: Europe/Tallinn\nhours: {mon: \"09:00-17:00\"}\nholidays: [2026-02-24]\n",
        )
        .unwrap();
        let cfg = dir.path().join("postdesk.yaml");
        std::fs::write(
            &cfg,
            "support: {address: s@desk.test}\ncalendars:\n  ee: cal/ee.yaml\nsla:\n  policies:\n    - {id: std, calendar: EE, resolution: 1d}\n",
        )
        .unwrap();
        let c = Config::load(&cfg).unwrap();
        let p = pick_policy(&c.sla, None, None, None, None).unwrap();
        let cal = c.loaded_calendars.for_policy(p).unwrap();
        assert_eq!(cal.timezone_name(), "Europe/Tallinn");
        assert!(cal.is_holiday("2026-02-24".parse().unwrap()));

        std::fs::write(
            dir.path().join("cal/ee.yaml"),
            "timezone: Europe/Tallinn\nhours:\n  mon: \"09:00-17:00\"\n  tue: \"17:00-09:00\"\n",
        )
        .unwrap();
        let e = Config::load(&cfg).unwrap_err().to_string();
        assert!(e.ends_with("ee.yaml:4: hours.tue: \"17:00-09:00\" is not working hours like \"09:00-17:00\" or \"09:00-12:00,13:00-17:00\" (each start before its end, in order, not overlapping; or \"closed\")"), "{e}");
        std::fs::remove_file(dir.path().join("cal/ee.yaml")).unwrap();
        let e = Config::load(&cfg).unwrap_err().to_string();
        assert!(e.contains("ee.yaml: cannot read"), "{e}");
    }
}
