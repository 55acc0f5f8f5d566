//! The node-count table (issue #11, docs/performance.md): the same
//! generator loads against postdesk on sled (one node) and against 1, 2, 3
//! … nodes sharing one PostgreSQL database, the sessions spread evenly over
//! the nodes. Every run gets a fresh database (`CREATE DATABASE` through
//! `psql` on the `--pg` server) and fresh data dirs.
//!
//! Beside messages/s it takes what says where the time went: postdesk's CPU
//! summed over the nodes, the PostgreSQL server's CPU (its postmaster's
//! process tree, found through `SHOW data_directory`; needs a superuser
//! URL, else left blank), and how busy the whole machine was.

use crate::gen::{self, Mix};
use crate::target::{pg_url, psql, Postdesk};
use crate::{fmt_opt, median, procfs, Ctx};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeSample {
    pub accepted: usize,
    pub rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub postdesk_cpu_ms_per_msg: f64,
    pub postgres_cpu_ms_per_msg: Option<f64>,
    /// Machine CPU busy over the load and the outbox drain, % of all cores.
    pub machine_busy_pct: Option<f64>,
    /// The database's own counters (pg_stat_database) over the run, per
    /// accepted message: committed transactions, rows written (inserted,
    /// updated, deleted), and WAL written by the server.
    pub commits_per_msg: Option<f64>,
    pub rows_written_per_msg: Option<f64>,
    pub wal_kib_per_msg: Option<f64>,
}

/// (xact_commit, rows written, WAL bytes so far) of database `db`.
fn db_counters(server: &str, db: &str) -> Option<(f64, f64, f64)> {
    let row = psql(
        &pg_url(server, "postgres"),
        &format!(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') \
             FROM pg_stat_database WHERE datname = '{db}'"
        ),
    )
    .ok()?;
    let v: Vec<f64> = row
        .split('|')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    Some((*v.first()?, *v.get(1)?, *v.get(2)?))
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeResult {
    pub label: String,
    /// "sled" or "postgres".
    pub store: String,
    pub nodes: usize,
    pub samples: Vec<NodeSample>,
    /// Per table: (name, rows, bytes) after the last run (PostgreSQL only).
    pub tables: Vec<(String, u64, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Load {
    mix: Mix,
    sessions: usize,
    messages: usize,
}

impl Load {
    fn label(&self) -> String {
        match self.mix {
            Mix::Fixed4k => format!("generator {} × 4 KiB new", self.sessions),
            Mix::Realistic => format!("generator {} × desk mix", self.sessions),
        }
    }
}

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn machine_jiffies() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// The postmaster's pid, from `postmaster.pid` in the server's data dir.
fn postmaster_pid(server: &str) -> Option<u32> {
    let dir = psql(&pg_url(server, "postgres"), "SHOW data_directory").ok()?;
    let pidfile =
        std::fs::read_to_string(std::path::Path::new(&dir).join("postmaster.pid")).ok()?;
    pidfile.lines().next()?.trim().parse().ok()
}

/// Rows and bytes (tables, their indexes and TOAST) per table of a
/// database, largest first.
fn table_sizes(url: &str) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let names = psql(
        url,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )?;
    let mut out = Vec::new();
    for t in names.lines().map(str::trim).filter(|t| !t.is_empty()) {
        let row = psql(
            url,
            &format!(
                "SELECT count(*), pg_total_relation_size('public.\"{t}\"') FROM public.\"{t}\""
            ),
        )?;
        let mut it = row.split('|').map(|v| v.trim().parse::<u64>().unwrap_or(0));
        out.push((
            t.to_string(),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        ));
    }
    out.sort_by_key(|t| std::cmp::Reverse(t.2));
    Ok(out)
}

fn pct(latencies: &[Duration], p: f64) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    let mut v = latencies.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    Some(v[i.min(v.len() - 1)].as_secs_f64() * 1000.0)
}

/// One run: `nodes` postdesk processes (sled when `pg` is None), the load
/// spread over them, measured until the outbox has drained.
async fn run_once(
    ctx: &Ctx,
    load: &Load,
    pg: Option<&str>,
    nodes: usize,
    seed: u64,
    tables: &mut Vec<(String, u64, u64)>,
) -> anyhow::Result<NodeSample> {
    let dir = ctx.fresh_dir(&format!(
        "{}-{nodes}",
        if pg.is_some() { "pg" } else { "sled" }
    ))?;
    let db = pg.map(|_| {
        format!(
            "postdesk_bench_{}_{}",
            std::process::id(),
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
                .replace('-', "_")
        )
    });
    let mut extra = String::new();
    if let (Some(server), Some(db)) = (pg, &db) {
        psql(
            &pg_url(server, "postgres"),
            &format!("CREATE DATABASE {db}"),
        )?;
        extra = format!(
            "store:\n  backend: postgres\n  postgres:\n    url: \"{}\"\n",
            pg_url(server, db)
        );
    }
    let mut started = Vec::new();
    let mut result = async {
        for i in 0..nodes {
            let nd = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&nd)?;
            started.push(Postdesk::start_with(
                &ctx.bin,
                &nd,
                &nd.join("data"),
                ctx.sink.port,
                &extra,
            )?);
        }
        let ports: Vec<u16> = started.iter().map(|p| p.port).collect();
        let pids: Vec<u32> = started.iter().map(|p| p.pid()).collect();
        let pm = pg.and_then(postmaster_pid);
        let cpu = |pids: &[u32]| pids.iter().map(|p| procfs::cpu_seconds(*p)).sum::<f64>();
        let counters = || match (pg, &db) {
            (Some(server), Some(db)) => db_counters(server, db),
            _ => None,
        };
        let c0 = counters();
        let (pd0, pg0, m0) = (cpu(&pids), pm.map(procfs::cpu_seconds), machine_jiffies());
        let msgs = Arc::new(gen::messages(load.mix, load.messages, seed));
        let r = gen::run(&ports, load.sessions, msgs).await?;
        ctx.sink.settle(ctx.quiet, Duration::from_secs(300)).await;
        let (pd1, pg1, m1) = (cpu(&pids), pm.map(procfs::cpu_seconds), machine_jiffies());
        // The statistics collector reports a backend's counts when its
        // transaction ends, with a short delay: let them arrive.
        if pg.is_some() {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let c1 = counters();
        if r.accepted < load.messages {
            anyhow::bail!(
                "{}: only {} of {} messages were accepted",
                load.label(),
                r.accepted,
                load.messages
            );
        }
        let n = r.accepted.max(1) as f64;
        let busy = match (m0, m1) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 * 100.0 / (t1 - t0) as f64)
            }
            _ => None,
        };
        Ok::<_, anyhow::Error>(NodeSample {
            accepted: r.accepted,
            rate: r.accepted as f64 / r.wall.as_secs_f64().max(1e-9),
            p50_ms: pct(&r.latencies, 0.50),
            p99_ms: pct(&r.latencies, 0.99),
            postdesk_cpu_ms_per_msg: (pd1 - pd0) * 1000.0 / n,
            postgres_cpu_ms_per_msg: match (pg0, pg1) {
                (Some(a), Some(b)) => Some((b - a) * 1000.0 / n),
                _ => None,
            },
            machine_busy_pct: busy,
            commits_per_msg: c0.zip(c1).map(|(a, b)| (b.0 - a.0) / n),
            rows_written_per_msg: c0.zip(c1).map(|(a, b)| (b.1 - a.1) / n),
            wal_kib_per_msg: c0.zip(c1).map(|(a, b)| (b.2 - a.2) / 1024.0 / n),
        })
    }
    .await;
    for p in started {
        p.stop();
    }
    if let (Some(server), Some(db)) = (pg, &db) {
        if result.is_ok() {
            match table_sizes(&pg_url(server, db)) {
                Ok(t) => *tables = t,
                Err(e) => result = Err(e),
            }
        }
        if !ctx.keep {
            let _ = psql(
                &pg_url(server, "postgres"),
                &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            );
        }
    }
    ctx.remove(&dir);
    result
}

/// Every load against sled and against each node count on PostgreSQL.
pub async fn node_count(
    ctx: &Ctx,
    pg: &str,
    counts: &[usize],
    smoke: bool,
    factor: f64,
    only: Option<&str>,
) -> anyhow::Result<Vec<NodeResult>> {
    let n = |full: usize| {
        if smoke {
            20
        } else {
            ((full as f64 * factor) as usize).max(10)
        }
    };
    let loads = [
        Load {
            mix: Mix::Fixed4k,
            sessions: 16,
            messages: n(4000),
        },
        Load {
            mix: Mix::Realistic,
            sessions: 16,
            messages: n(2500),
        },
    ];
    let mut out = Vec::new();
    for load in loads
        .iter()
        .filter(|l| only.is_none_or(|o| l.label().contains(o)))
    {
        let mut plan: Vec<(Option<&str>, usize)> = vec![(None, 1)];
        plan.extend(counts.iter().map(|c| (Some(pg), *c)));
        for (store, nodes) in plan {
            let mut res = NodeResult {
                label: load.label(),
                store: if store.is_some() { "postgres" } else { "sled" }.into(),
                nodes,
                ..Default::default()
            };
            for run in 0..ctx.runs {
                let s = run_once(ctx, load, store, nodes, 1000 + run as u64, &mut res.tables)
                    .await
                    .with_context(|| format!("{}, {} × {nodes}", load.label(), res.store))?;
                eprintln!(
                    "  {} on {} × {nodes} run {}: {:.0} msg/s",
                    load.label(),
                    res.store,
                    run + 1,
                    s.rate
                );
                res.samples.push(s);
            }
            out.push(res);
        }
    }
    Ok(out)
}

pub fn table(results: &[NodeResult]) -> String {
    let mut s = String::from(
        "| load | store | nodes | msg/s | p50 / p99 ms | postdesk CPU ms/msg (all nodes) | PostgreSQL CPU ms/msg | machine busy % | commits / rows written / WAL KiB per msg |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let m = |f: &dyn Fn(&NodeSample) -> Option<f64>| {
            let xs: Vec<f64> = r.samples.iter().filter_map(f).collect();
            (!xs.is_empty()).then(|| median(xs))
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} / {} / {} |\n",
            r.label,
            r.store,
            r.nodes,
            fmt_opt(m(&|s| Some(s.rate)), 0),
            fmt_opt(m(&|s| s.p50_ms), 1),
            fmt_opt(m(&|s| s.p99_ms), 1),
            fmt_opt(m(&|s| Some(s.postdesk_cpu_ms_per_msg)), 2),
            fmt_opt(m(&|s| s.postgres_cpu_ms_per_msg), 2),
            fmt_opt(m(&|s| s.machine_busy_pct), 0),
            fmt_opt(m(&|s| s.commits_per_msg), 1),
            fmt_opt(m(&|s| s.rows_written_per_msg), 1),
            fmt_opt(m(&|s| s.wal_kib_per_msg), 1),
        ));
    }
    s
}

/// Rows and bytes per table after the last PostgreSQL run of each load,
/// and per ticket.
pub fn sizes(results: &[NodeResult]) -> String {
    let mut s = String::new();
    for r in results.iter().filter(|r| !r.tables.is_empty()) {
        let tickets = r
            .tables
            .iter()
            .find(|t| t.0 == "tickets")
            .map(|t| t.1)
            .unwrap_or(0)
            .max(1);
        let total: u64 = r.tables.iter().map(|t| t.2).sum();
        s.push_str(&format!(
            "\n{} on postgres × {} ({} tickets, {:.1} KiB per ticket in all):\n\n| table | rows | rows per ticket | KiB | KiB per ticket |\n|---|---:|---:|---:|---:|\n",
            r.label,
            r.nodes,
            tickets,
            total as f64 / 1024.0 / tickets as f64
        ));
        for (name, rows, bytes) in &r.tables {
            s.push_str(&format!(
                "| {name} | {rows} | {:.2} | {:.0} | {:.2} |\n",
                *rows as f64 / tickets as f64,
                *bytes as f64 / 1024.0,
                *bytes as f64 / 1024.0 / tickets as f64
            ));
        }
    }
    s
}
