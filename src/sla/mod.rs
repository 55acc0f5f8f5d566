//! Service levels (SPEC §9, issue #9): calendars and SLA policies, PURE.
//!
//! Owns: the calendar arithmetic (`calendar`) and the `sla` / `calendars`
//! config shapes with their checks and the first-match policy pick
//! (`policy`), a ticket's clocks and pending jobs (`track`, called by
//! every ticket writer), and the warn/breach jobs the scheduler runs
//! (`jobs`, the one part that writes). Except `jobs`: must not read the
//! store or the clock; callers pass instants in and store the due times
//! they get back. docs/sla.md.

pub mod calendar;
pub mod jobs;
pub mod policy;
pub mod text;
pub mod track;

pub use calendar::{parse_intervals, Calendar, Clock, Interval};
pub use policy::{
    check, load_calendars, pick_policy, Calendars, SlaConditions, SlaConfig, SlaPolicy,
};
