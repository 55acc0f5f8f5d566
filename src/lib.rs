//! postdesk: an LMTP delivery agent that turns a support mailing list into a
//! ticket desk worked entirely by mail.
//!
//! The per-message path, top to bottom (read `deliver.rs` for the code):
//! `lmtp` receives a transaction → `deliver` parses it once
//! (`ingest::parse`) and hands a job to the store's committer → inside one
//! transaction `ingest::decide` classifies, threads and applies the follow-up
//! rules against the current state (a pure function of parsed mail, `View`,
//! policy and `now`), `render` turns the decision's intents into outbound
//! mail, and the store writes ticket, message, indexes and outbox rows → the
//! committer makes the batch durable (spool + sled + fdatasync) → only then
//! does each recipient get `250`; `outbox` sends in the background.
//!
//! Modules:
//! - `config`: typed configuration, defaults, errors that name key and line.
//! - `lmtp`: listeners, sessions over smtp-proto, every reply we send.
//! - `ingest`: PURE parse → classify → thread → decide.
//! - `render`: PURE templates and mail building for generated mail.
//! - `store`: the `View`/commit boundary; sled backend; raw-message spool.
//! - `policy`: PURE desk policies: routing rules and their trace, default
//!   owner, fair auto-distribution (config shapes in `config::policy`);
//!   `ingest::route` applies them to a new ticket.
//! - `workflow`: PURE command grammar and ticket state machine; signed
//!   action links; DKIM/SPF/Authentication-Results checks (`auth`, the one
//!   part that does I/O, run before the transaction).
//! - `sla`: PURE service levels: calendars (open time, due times with
//!   pauses), the first-match SLA policy pick, and `track`, which every
//!   ticket writer calls to keep a ticket's clocks and warn/breach jobs
//!   true; `sla::jobs` runs those jobs in the scheduler (docs/sla.md).
//! - `stats`: PURE response metrics per ticket (open time to first response
//!   and resolution, SLA outcome) and the `stats` report's aggregator.
//! - `schedule`: the durable scheduler (reminders, wake-ups, reports, digest).
//! - `outbox`: the sender task and its transports (relay, direct, file).
//! - `control`: the control socket protocol shared by daemon and CLI.
//! - `metrics`: Prometheus counters bumped along the path, gauges read
//!   from the store at scrape time, the `listen.metrics` endpoint.
//! - `deliver`, `daemon`, `shutdown`: wiring; `workload`: distribution
//!   inside the transaction (a freed slot takes the oldest waiting ticket)
//!   and the per-agent load counters.
//! - `cli`: the command line (anyhow lives here and in main).
//! - `migrate`: a whole store into another, empty one (sled ↔ PostgreSQL),
//!   checked by counts and per-message checksums.
//! - `backup`: consistent online backup and restore; `watchdog`: systemd
//!   keep-alives, sent only while the committer answers a probe.

pub mod backup;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deliver;
pub mod erase;
pub mod ingest;
pub mod lmtp;
pub mod metrics;
pub mod migrate;
pub mod outbox;
pub mod policy;
pub mod render;
pub mod retention;
pub mod schedule;
pub mod shutdown;
pub mod sla;
pub mod stats;
pub mod store;
pub mod watchdog;
pub mod workflow;
pub mod workload;
