//! Transports: relay (SMTP via lettre), direct (MX lookup), file:DIR.
//!
//! Owns: turning one outbox entry (envelope + wire bytes) into one attempt,
//! and classifying its outcome. A 5xx reply is [`SendError::Permanent`];
//! everything else — 4xx, refused or dropped connections, timeouts, DNS
//! trouble, a full disk — is [`SendError::Transient`] and the sender retries
//! it (STYLE §7, maddy's queue). Must not: retry, sleep or touch the store;
//! that is the sender's job, so a transport is a plain "try once".

use crate::lmtp::BoxFuture;
use lettre::address::Envelope;
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::Address;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 4xx, network trouble, timeouts: retried with backoff.
    #[error("temporary: {0}")]
    Transient(String),
    /// 5xx from the relay: recorded on the ticket, not retried.
    #[error("permanent: {0}")]
    Permanent(String),
}

pub trait Transport: Send + Sync + 'static {
    /// Sends one message; `Ok` carries the server's final reply text
    /// (e.g. "250 2.0.0 Ok: queued as 4XbQ2") for the `sent` log line.
    fn send_raw<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<String, SendError>>;
}

/// Idle connections the relay pool keeps; matches the sender's concurrency
/// so every concurrent send can reuse a warm connection.
const POOL_SIZE: usize = 4;
/// An idle pooled connection older than this is closed rather than reused.
const POOL_IDLE_MAX: Duration = Duration::from_secs(60);
/// Used when `outbound.timeout` is 0, which lettre would read as "fail at once".
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Addresses tried per MX host, so a host with dozens of A records cannot
/// hold one attempt for dozens of timeouts.
const MAX_ADDRESSES_PER_HOST: usize = 4;

/// Builds the transport `outbound.relay` names: `smtp://HOST[:PORT]`
/// (plain; `?tls=required` or `?tls=opportunistic` for STARTTLS),
/// `smtps://HOST[:PORT]` (implicit TLS), `direct`, or `file:DIR`.
pub fn from_config(o: &crate::config::Outbound) -> Result<Arc<dyn Transport>, String> {
    let relay = o.relay.trim();
    let timeout = nonzero_timeout(o.timeout.std());
    let helo = o.helo_name.as_deref();
    if relay == "direct" {
        return Ok(Arc::new(DirectTransport::new(helo, timeout)?));
    }
    if let Some(dir) = relay.strip_prefix("file:") {
        return Ok(Arc::new(FileTransport::new(dir)?));
    }
    if relay.starts_with("smtp://") || relay.starts_with("smtps://") {
        return Ok(Arc::new(RelayTransport::new(relay, helo, timeout)?));
    }
    Err(format!(
        "outbound.relay: {relay:?} must be smtp://HOST:PORT, direct, or file:DIR"
    ))
}

fn nonzero_timeout(t: Duration) -> Duration {
    if t.is_zero() {
        DEFAULT_TIMEOUT
    } else {
        t
    }
}

/// `helo_name` as lettre wants it; none = the machine's host name.
fn client_id(helo: Option<&str>) -> ClientId {
    match helo.map(str::trim).filter(|h| !h.is_empty()) {
        Some(h) => match h.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => ClientId::Ipv4(a),
            Ok(IpAddr::V6(a)) => ClientId::Ipv6(a),
            Err(_) => ClientId::Domain(h.to_string()),
        },
        None => ClientId::default(),
    }
}

// ---- shared SMTP helpers ----

fn parse_address(a: &str) -> Result<Address, String> {
    let bare = a.trim().trim_start_matches('<').trim_end_matches('>');
    bare.parse::<Address>()
        .map_err(|e| format!("invalid address {a:?}: {e}"))
}

/// The SMTP envelope; an empty `mail_from` (or `<>`) is the null sender.
fn envelope(mail_from: &str, rcpt_to: &[String]) -> Result<Envelope, SendError> {
    let from = match mail_from.trim() {
        "" | "<>" => None,
        f => Some(parse_address(f).map_err(SendError::Permanent)?),
    };
    let to = rcpt_to
        .iter()
        .map(|r| parse_address(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(SendError::Permanent)?;
    // Only "no recipients" fails here: an entry that can never be sent.
    Envelope::new(from, to).map_err(|e| SendError::Permanent(format!("bad envelope: {e}")))
}

/// What goes to lettre for DATA. lettre writes `CRLF . CRLF` after whatever
/// it is given, so a message's own final CRLF would reach the server as an
/// extra empty line: strip it, and the server stores the bytes unchanged.
/// Bare LF (an mbox import) becomes CRLF, since strict servers refuse it
/// (RFC 5321 §2.3.8; Postfix `smtpd_forbid_bare_newline`).
fn wire_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let has_bare_lf = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
    let mut out: Cow<'_, [u8]> = if has_bare_lf {
        let mut v = Vec::with_capacity(bytes.len() + bytes.len() / 40);
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
                v.push(b'\r');
            }
            v.push(b);
        }
        Cow::Owned(v)
    } else {
        Cow::Borrowed(bytes)
    };
    if out.ends_with(b"\r\n") {
        let keep = out.len() - 2;
        match &mut out {
            Cow::Borrowed(b) => *b = &b[..keep],
            Cow::Owned(v) => v.truncate(keep),
        }
    }
    out
}

/// "250 2.0.0 Ok: queued as X": the code and the reply lines, as a server
/// would print them on one line.
fn reply_text(r: &Response) -> String {
    let lines: Vec<&str> = r.message().collect();
    if lines.is_empty() {
        r.code().to_string()
    } else {
        format!("{} {}", r.code(), lines.join(" "))
    }
}

/// Text for a lettre error: the server's reply when there was one (lettre
/// keeps the reply text as the error's source), else what went wrong and
/// where.
fn error_text(e: &lettre::transport::smtp::Error, peer: &str) -> String {
    use std::error::Error as _;
    match (e.status(), e.source()) {
        (Some(code), Some(text)) => format!("{code} {text}"),
        (Some(code), None) => code.to_string(),
        _ => format!("{peer}: {e}"),
    }
}

fn classify(e: &lettre::transport::smtp::Error, peer: &str) -> SendError {
    let text = error_text(e, peer);
    // Only a 5xx is final; network errors are neither transient nor
    // permanent in lettre's terms, and those we retry (STYLE §7).
    if e.is_permanent() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

// ---- relay ----

/// `smtp://host:port`: every mail goes to one relay (by default Postfix's
/// reinjection port), over lettre's SMTP client with a small pool of
/// connections kept open between sends.
///
/// Why not lettre's `AsyncSmtpTransport`: its async client bounds only the
/// TCP connect (no read timeout: a relay that stops answering after DATA
/// holds the send forever), and when the caller's own timeout cancels a
/// send, its pool takes the half-finished connection back and the next
/// send reads the stale reply. So each attempt here runs under one overall
/// budget, and a connection goes back to the pool only after a completed
/// transaction; a cancelled or failed one is dropped (closed).
pub struct RelayTransport {
    host: String,
    port: u16,
    tls: Option<(RelayTls, TlsParameters)>,
    hello: ClientId,
    timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    peer: String,
}

impl RelayTransport {
    pub fn new(url: &str, helo: Option<&str>, timeout: Duration) -> Result<Self, String> {
        let u = RelayUrl::parse(url)?;
        let tls = match u.tls {
            RelayTls::None => None,
            mode => Some((
                mode,
                TlsParameters::new(u.host.clone())
                    .map_err(|e| format!("outbound.relay: {url:?}: TLS set-up: {e}"))?,
            )),
        };
        Ok(RelayTransport {
            peer: format!("relay {}:{}", u.host, u.port),
            host: u.host,
            port: u.port,
            tls,
            hello: client_id(helo),
            timeout: nonzero_timeout(timeout),
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn send(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        bytes: &[u8],
    ) -> Result<String, SendError> {
        let env = envelope(mail_from, rcpt_to)?;
        let wire = wire_bytes(bytes);
        let budget = attempt_budget(self.timeout, wire.len());
        match tokio::time::timeout(budget, self.transact(&env, &wire)).await {
            Ok(r) => r,
            // The connection was inside the dropped future: it is closed,
            // not pooled.
            Err(_) => Err(SendError::Transient(format!(
                "{}: no answer within {}s",
                self.peer,
                budget.as_secs()
            ))),
        }
    }

    async fn transact(&self, env: &Envelope, wire: &[u8]) -> Result<String, SendError> {
        let mut conn = match self.take_idle().await {
            Some(c) => c,
            None => self.connect().await.map_err(|e| classify(&e, &self.peer))?,
        };
        match conn.send(env, wire).await {
            Ok(r) => {
                self.put_idle(conn);
                Ok(reply_text(&r))
            }
            // lettre has already sent QUIT and closed it.
            Err(e) => Err(classify(&e, &self.peer)),
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        let wrapper = match &self.tls {
            Some((RelayTls::Wrapper, p)) => Some(p.clone()),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            wrapper,
            None,
        )
        .await?;
        match &self.tls {
            Some((RelayTls::Required, p)) => conn.starttls(p.clone(), &self.hello).await?,
            Some((RelayTls::Opportunistic, p)) if conn.can_starttls() => {
                conn.starttls(p.clone(), &self.hello).await?
            }
            _ => {}
        }
        Ok(conn)
    }

    /// A pooled connection that still answers NOOP, if any.
    async fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().ok()?.pop()?;
            if since.elapsed() > POOL_IDLE_MAX {
                // Likely closed by the relay (Postfix smtpd: 300s) by now.
                continue;
            }
            let probe = self.timeout.min(Duration::from_secs(10));
            if let Ok(true) = tokio::time::timeout(probe, conn.test_connected()).await {
                return Some(conn);
            }
        }
    }

    fn put_idle(&self, conn: AsyncSmtpConnection) {
        let spare = match self.idle.lock() {
            Ok(mut idle) if idle.len() < POOL_SIZE => {
                idle.push((conn, Instant::now()));
                None
            }
            _ => Some(conn),
        };
        if let Some(mut conn) = spare {
            // Say goodbye off the sender's path; bounded like everything else.
            let t = self.timeout;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(t, conn.quit()).await;
            });
        }
    }
}

/// How long one attempt may take in all. lettre's async client bounds only
/// the TCP connect, so `outbound.timeout` is applied here instead: one for
/// connect, greeting and envelope, one for the reply to the data, plus the
/// transfer itself at a floor rate of 64 KiB/s (a 50 MiB mail gets ~13 min,
/// within RFC 5321 §4.5.3.2's 10 min per data block).
fn attempt_budget(timeout: Duration, len: usize) -> Duration {
    let transfer = Duration::from_secs(u64::try_from(len / (64 * 1024)).unwrap_or(u64::MAX));
    timeout.saturating_mul(2).saturating_add(transfer)
}

impl Transport for RelayTransport {
    fn send_raw<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(self.send(mail_from, rcpt_to, bytes))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayTls {
    None,
    Wrapper,
    Required,
    Opportunistic,
}

#[derive(Debug, PartialEq, Eq)]
struct RelayUrl {
    host: String,
    port: u16,
    tls: RelayTls,
}

impl RelayUrl {
    /// `smtp://HOST[:PORT][?tls=required|opportunistic]`, `smtps://HOST[:PORT]`;
    /// HOST may be `[v6]`. Default ports: 25 (a relay, not submission) and 465.
    fn parse(url: &str) -> Result<RelayUrl, String> {
        let bad = |why: &str| format!("outbound.relay: {url:?}: {why}");
        let (rest, implicit_tls) = if let Some(r) = url.strip_prefix("smtps://") {
            (r, true)
        } else if let Some(r) = url.strip_prefix("smtp://") {
            (r, false)
        } else {
            return Err(bad("must start with smtp:// or smtps://"));
        };
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let hostport = hostport.trim_end_matches('/');
        if hostport.contains('@') || hostport.contains('/') {
            return Err(bad("credentials and paths are not supported"));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port must be 1-65535"))?,
            None if implicit_tls => 465,
            None => 25,
        };
        let tls = match (implicit_tls, query) {
            (true, None) => RelayTls::Wrapper,
            (false, None) => RelayTls::None,
            (false, Some("tls=required")) => RelayTls::Required,
            (false, Some("tls=opportunistic")) => RelayTls::Opportunistic,
            _ => return Err(bad("the only query is tls=required or tls=opportunistic")),
        };
        Ok(RelayUrl { host, port, tls })
    }
}

// ---- direct ----

/// `direct`: looks up each recipient domain's MX and talks SMTP to it on
/// port 25 with opportunistic STARTTLS.
///
/// One attempt covers every domain of the entry and succeeds only when all
/// of them accepted. When one domain fails transiently the whole entry is
/// retried, and the domains that already accepted receive it again: the
/// outbox is at-least-once (SPEC §6), and a duplicate is better than a
/// lost acknowledgement. A permanent failure of a domain is only reported
/// as permanent when no other domain failed transiently.
pub struct DirectTransport {
    resolver: hickory_resolver::TokioResolver,
    hello: ClientId,
    timeout: Duration,
    port: u16,
}

/// How one MX host attempt ended when it did not deliver.
enum HostFailure {
    /// Connection-phase trouble (refused, greeting or EHLO refused, TLS,
    /// dropped): the next MX host may do better (Postfix does the same).
    TryNext(String),
    /// The host answered the transaction: its verdict holds for the domain.
    Final(SendError),
}

impl DirectTransport {
    /// Uses the system resolver configuration (`/etc/resolv.conf`).
    pub fn new(helo: Option<&str>, timeout: Duration) -> Result<Self, String> {
        let resolver = hickory_resolver::TokioResolver::builder_tokio()
            .map_err(|e| {
                format!("outbound.relay: direct: cannot read the system DNS configuration: {e}")
            })?
            .build();
        Ok(DirectTransport {
            resolver,
            hello: client_id(helo),
            timeout: nonzero_timeout(timeout),
            port: 25,
        })
    }

    /// Talks to `port` instead of 25; for tests against a local sink
    /// (`rcpt@[127.0.0.1]`) and for networks that redirect port 25.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    async fn send(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        bytes: &[u8],
    ) -> Result<String, SendError> {
        // Validate the whole envelope first: a bad address is permanent
        // before anything has been delivered anywhere.
        envelope(mail_from, rcpt_to)?;
        let wire = wire_bytes(bytes);
        let groups = group_by_domain(rcpt_to);
        let mut accepted = Vec::new();
        let mut transient = Vec::new();
        let mut permanent = Vec::new();
        for (domain, rcpts) in &groups {
            let env = envelope(mail_from, rcpts)?;
            match self.deliver_domain(domain, &env, &wire).await {
                Ok(reply) => accepted.push((domain.as_str(), reply)),
                Err(SendError::Transient(t)) => transient.push(format!("{domain}: {t}")),
                Err(SendError::Permanent(t)) => permanent.push(format!("{domain}: {t}")),
            }
        }
        let per_domain = |v: &[(&str, String)]| {
            v.iter()
                .map(|(d, r)| format!("{d}: {r}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if transient.is_empty() && permanent.is_empty() {
            // One domain: the bare reply, as a relay would give it.
            return Ok(match accepted.as_slice() {
                [(_, reply)] => reply.clone(),
                more => per_domain(more),
            });
        }
        let mut parts = transient.clone();
        parts.extend(permanent.iter().cloned());
        if !accepted.is_empty() {
            parts.push(format!("already accepted by {}", per_domain(&accepted)));
        }
        let text = parts.join("; ");
        if transient.is_empty() {
            Err(SendError::Permanent(text))
        } else {
            Err(SendError::Transient(text))
        }
    }

    async fn deliver_domain(
        &self,
        domain: &str,
        env: &Envelope,
        wire: &[u8],
    ) -> Result<String, SendError> {
        let hosts = self.mx_hosts(domain).await?;
        let mut last = format!("no MX host for {domain} could be reached");
        for host in hosts {
            let addrs = match host.ip {
                Some(ip) => vec![ip],
                None => match self.resolver.lookup_ip(fqdn(&host.name)).await {
                    Ok(l) => l.iter().take(MAX_ADDRESSES_PER_HOST).collect(),
                    Err(e) => {
                        last = format!("{}: {e}", host.name);
                        continue;
                    }
                },
            };
            if addrs.is_empty() {
                last = format!("{}: no address", host.name);
            }
            for ip in addrs {
                // lettre bounds only the connect; see `attempt_budget`.
                let budget = attempt_budget(self.timeout, wire.len());
                let attempt = self.try_host(&host.name, ip, env, wire);
                match tokio::time::timeout(budget, attempt).await {
                    Ok(Ok(reply)) => return Ok(reply),
                    Ok(Err(HostFailure::TryNext(t))) => last = t,
                    Ok(Err(HostFailure::Final(e))) => return Err(e),
                    Err(_) => {
                        last = format!(
                            "{}[{ip}]:{}: no answer within {}s",
                            host.name,
                            self.port,
                            budget.as_secs()
                        )
                    }
                }
            }
        }
        Err(SendError::Transient(last))
    }

    /// MX hosts by preference (equal ones shuffled, RFC 5321 §5.1), the
    /// domain itself when it has none (implicit MX), a permanent error for
    /// NXDOMAIN and a null MX (RFC 7505).
    async fn mx_hosts(&self, domain: &str) -> Result<Vec<MxHost>, SendError> {
        if let Some(ip) = domain_literal(domain) {
            return Ok(vec![MxHost {
                name: ip.to_string(),
                ip: Some(ip),
            }]);
        }
        match self.resolver.mx_lookup(fqdn(domain)).await {
            Ok(lookup) => {
                let records: Vec<(u16, String)> = lookup
                    .iter()
                    .map(|mx| {
                        let name = mx.exchange().to_ascii();
                        (mx.preference(), name.trim_end_matches('.').to_string())
                    })
                    .collect();
                order_mx(domain, records)
            }
            Err(e) if e.is_nx_domain() => Err(SendError::Permanent(format!(
                "550 5.1.2 {domain}: no such domain (NXDOMAIN)"
            ))),
            Err(e) if e.is_no_records_found() => {
                // No MX: the domain's own address records are its MX
                // (RFC 5321 §5.1), but only if it has any.
                match self.resolver.lookup_ip(fqdn(domain)).await {
                    Ok(l) if l.iter().next().is_some() => Ok(vec![MxHost {
                        name: domain.to_string(),
                        ip: None,
                    }]),
                    Ok(_) => Err(no_address(domain)),
                    Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
                        Err(no_address(domain))
                    }
                    Err(e) => Err(SendError::Transient(format!("{domain}: DNS: {e}"))),
                }
            }
            Err(e) => Err(SendError::Transient(format!("{domain}: DNS: {e}"))),
        }
    }

    async fn try_host(
        &self,
        host: &str,
        ip: IpAddr,
        env: &Envelope,
        wire: &[u8],
    ) -> Result<String, HostFailure> {
        let peer = format!("{host}[{ip}]:{}", self.port);
        let addr = SocketAddr::new(ip, self.port);
        let mut conn = self.connect(addr, &peer).await?;
        if conn.can_starttls() {
            // Opportunistic, like Postfix's `smtp_tls_security_level = may`:
            // certificates are not checked (MX certificates often do not
            // match), and a failed handshake falls back to plain text.
            let params = TlsParameters::builder(host.to_string())
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true)
                .build();
            let upgraded = match params {
                Ok(p) => conn.starttls(p, &self.hello).await.is_ok(),
                Err(_) => false,
            };
            if !upgraded {
                conn.abort().await;
                conn = self.connect(addr, &peer).await?;
            }
        }
        match conn.send(env, wire).await {
            Ok(r) => {
                // The mail is accepted; a failing QUIT changes nothing.
                let _ = conn.quit().await;
                Ok(reply_text(&r))
            }
            Err(e) if e.is_permanent() || e.is_transient() => {
                Err(HostFailure::Final(classify(&e, &peer)))
            }
            Err(e) => Err(HostFailure::TryNext(error_text(&e, &peer))),
        }
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        peer: &str,
    ) -> Result<AsyncSmtpConnection, HostFailure> {
        AsyncSmtpConnection::connect_tokio1(addr, Some(self.timeout), &self.hello, None, None)
            .await
            .map_err(|e| HostFailure::TryNext(error_text(&e, peer)))
    }
}

impl Transport for DirectTransport {
    fn send_raw<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(self.send(mail_from, rcpt_to, bytes))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MxHost {
    name: String,
    /// Set for a domain literal: no address lookup.
    ip: Option<IpAddr>,
}

fn no_address(domain: &str) -> SendError {
    SendError::Permanent(format!("550 5.1.2 {domain}: no MX and no address records"))
}

/// A trailing dot makes the name absolute, so resolv.conf's `search` list
/// is never tried (recipients' domains are always fully qualified).
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
fn domain_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner.parse().ok()
}

/// Sorts MX records by preference, shuffling equal ones; a null MX (".")
/// alone means the domain takes no mail.
fn order_mx(domain: &str, mut records: Vec<(u16, String)>) -> Result<Vec<MxHost>, SendError> {
    use rand::seq::SliceRandom;
    let null = |n: &str| n.is_empty() || n == ".";
    if !records.is_empty() && records.iter().all(|(_, n)| null(n)) {
        return Err(SendError::Permanent(format!(
            "556 5.1.10 {domain} does not accept mail (null MX)"
        )));
    }
    records.retain(|(_, n)| !null(n));
    records.shuffle(&mut rand::thread_rng());
    // Stable sort: equal preferences keep their shuffled order.
    records.sort_by_key(|(p, _)| *p);
    if records.is_empty() {
        // An empty answer is "no MX": the implicit MX.
        return Ok(vec![MxHost {
            name: domain.to_string(),
            ip: None,
        }]);
    }
    Ok(records
        .into_iter()
        .map(|(_, name)| MxHost { name, ip: None })
        .collect())
}

/// Recipients grouped by lower-cased domain, domains in sorted order so
/// retries visit them the same way.
fn group_by_domain(rcpt_to: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rcpt_to {
        let bare = r.trim().trim_start_matches('<').trim_end_matches('>');
        let domain = bare
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        out.entry(domain).or_default().push(bare.to_string());
    }
    out
}

// ---- file ----

/// `file:DIR`: each mail becomes one `<unix-millis>-<n>.eml` in DIR with the
/// envelope prepended as `X-Postdesk-Envelope-From:` and one
/// `X-Postdesk-Envelope-To:` per recipient. Written to a hidden temporary
/// name, synced, then renamed, so a reader never sees half a file and a
/// crash never leaves a partial `.eml`.
pub struct FileTransport {
    dir: PathBuf,
    seq: AtomicU64,
}

impl FileTransport {
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, String> {
        let dir = dir.as_ref();
        if dir.as_os_str().is_empty() {
            return Err("outbound.relay: file: needs a directory (e.g. file:./data/sent)".into());
        }
        Ok(FileTransport {
            dir: dir.to_path_buf(),
            seq: AtomicU64::new(0),
        })
    }

    async fn send(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        bytes: &[u8],
    ) -> Result<String, SendError> {
        if rcpt_to.is_empty() {
            return Err(SendError::Permanent("no recipients".into()));
        }
        for a in std::iter::once(mail_from).chain(rcpt_to.iter().map(String::as_str)) {
            // The envelope goes into header lines: a line break in it would
            // forge headers.
            if a.contains(['\r', '\n']) {
                return Err(SendError::Permanent(format!("invalid address {a:?}")));
            }
        }
        let eol: &[u8] = if bytes.windows(2).any(|w| w == b"\r\n") || bytes.is_empty() {
            b"\r\n"
        } else {
            b"\n"
        };
        let from = match mail_from.trim() {
            "" => "<>",
            f => f,
        };
        let mut content = Vec::with_capacity(bytes.len() + 64 * (rcpt_to.len() + 1));
        content.extend_from_slice(b"X-Postdesk-Envelope-From: ");
        content.extend_from_slice(from.as_bytes());
        content.extend_from_slice(eol);
        for r in rcpt_to {
            content.extend_from_slice(b"X-Postdesk-Envelope-To: ");
            content.extend_from_slice(r.trim().as_bytes());
            content.extend_from_slice(eol);
        }
        content.extend_from_slice(bytes);
        let millis = jiff::Timestamp::now().as_millisecond();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || write_eml(&dir, millis, n, &content))
            .await
            .map_err(|e| SendError::Transient(format!("file transport task failed: {e}")))?;
        match written {
            Ok(path) => Ok(format!("250 2.0.0 written to {}", path.display())),
            Err(e) => Err(SendError::Transient(format!(
                "writing to {}: {e}",
                self.dir.display()
            ))),
        }
    }
}

fn write_eml(dir: &Path, millis: i64, n: u64, content: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    // A restart within the same millisecond restarts `n`: step past any
    // name already taken rather than overwrite a mail.
    let mut k = n;
    let path = loop {
        let p = dir.join(format!("{millis}-{k}.eml"));
        if !p.exists() {
            break p;
        }
        k += 1;
    };
    let tmp = dir.join(format!(".{millis}-{k}.eml.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(content)?;
    // Synced before the rename and the sender's "sent" commit: at-least-once
    // holds for files too.
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

impl Transport for FileTransport {
    fn send_raw<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<String, SendError>> {
        Box::pin(self.send(mail_from, rcpt_to, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_url_forms() {
        let p = |s| RelayUrl::parse(s);
        assert_eq!(
            p("smtp://127.0.0.1:10025").unwrap(),
            RelayUrl {
                host: "127.0.0.1".into(),
                port: 10025,
                tls: RelayTls::None
            }
        );
        assert_eq!(p("smtp://mail.example.com").unwrap().port, 25);
        assert_eq!(p("smtp://mail.example.com/").unwrap().port, 25);
        let s = p("smtps://mail.example.com").unwrap();
        assert_eq!((s.port, s.tls), (465, RelayTls::Wrapper));
        let r = p("smtp://mail.example.com:587?tls=required").unwrap();
        assert_eq!((r.port, r.tls), (587, RelayTls::Required));
        let v6 = p("smtp://[::1]:2525").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2525));
        for bad in [
            "smtp://",
            "smtp://host:0",
            "smtp://host:x",
            "smtp://u:p@host:25",
            "smtp://host:25?tls=maybe",
            "smtps://host?tls=required",
            "http://host",
        ] {
            assert!(p(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn from_config_picks_the_transport_and_needs_no_runtime() {
        let mut o = crate::config::Outbound {
            relay: "smtp://127.0.0.1:10025".into(),
            ..Default::default()
        };
        assert!(from_config(&o).is_ok());
        o.relay = "file:/tmp/postdesk-test-sent".into();
        assert!(from_config(&o).is_ok());
        o.relay = "file:".into();
        assert!(from_config(&o).is_err());
        o.relay = "lmtp://x".into();
        assert!(from_config(&o).err().unwrap().contains("outbound.relay"));
    }

    #[test]
    fn wire_bytes_strips_the_final_crlf_and_fixes_bare_lf() {
        assert_eq!(&*wire_bytes(b"A: b\r\n\r\nbody\r\n"), b"A: b\r\n\r\nbody");
        assert_eq!(&*wire_bytes(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\nbody");
        assert_eq!(&*wire_bytes(b"A: b\n\nx\n"), b"A: b\r\n\r\nx");
        assert_eq!(&*wire_bytes(b"\nx\r\ny\n"), b"\r\nx\r\ny");
        assert!(matches!(wire_bytes(b"a\r\nb"), Cow::Borrowed(_)));
    }

    #[test]
    fn attempt_budget_grows_with_size() {
        let t = Duration::from_secs(60);
        assert_eq!(attempt_budget(t, 1000), Duration::from_secs(120));
        assert_eq!(
            attempt_budget(t, 50 * 1024 * 1024),
            Duration::from_secs(120 + 800)
        );
    }

    #[test]
    fn envelope_checks() {
        assert!(envelope("", &["a@example.com".into()]).is_ok());
        assert!(envelope("<s@example.org>", &["<a@example.com>".into()]).is_ok());
        assert!(matches!(
            envelope("s@example.org", &[]),
            Err(SendError::Permanent(_))
        ));
        assert!(matches!(
            envelope("s@example.org", &["not an address".into()]),
            Err(SendError::Permanent(_))
        ));
    }

    #[test]
    fn mx_ordering_null_mx_and_literals() {
        let hosts = order_mx(
            "example.com",
            vec![
                (20, "b.example.com".into()),
                (10, "a.example.com".into()),
                (30, "c.example.com".into()),
            ],
        )
        .unwrap();
        let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a.example.com", "b.example.com", "c.example.com"]);
        assert!(matches!(
            order_mx("example.com", vec![(0, ".".into())]),
            Err(SendError::Permanent(t)) if t.contains("null MX")
        ));
        // No records at all: the implicit MX.
        assert_eq!(
            order_mx("example.com", vec![]).unwrap()[0].name,
            "example.com"
        );
        assert_eq!(
            domain_literal("[127.0.0.1]"),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(
            domain_literal("[IPv6:::1]"),
            Some("::1".parse::<IpAddr>().unwrap())
        );
        assert_eq!(domain_literal("example.com"), None);
        assert_eq!(fqdn("example.com"), "example.com.");
    }

    #[test]
    fn recipients_group_by_domain() {
        let g = group_by_domain(&[
            "a@Example.com".into(),
            "b@other.org".into(),
            "<c@example.COM>".into(),
        ]);
        assert_eq!(g.len(), 2);
        assert_eq!(g["example.com"], ["a@Example.com", "c@example.COM"]);
        assert_eq!(g["other.org"], ["b@other.org"]);
    }

    #[tokio::test]
    async fn file_transport_writes_one_eml_per_mail_with_the_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sent");
        let t = FileTransport::new(&out).unwrap();
        let rcpts = vec!["a@example.com".to_string(), "b@example.com".to_string()];
        let msg = b"Subject: hi\r\n\r\nhello\r\n";
        let r1 = t
            .send_raw("support@example.org", &rcpts, msg)
            .await
            .unwrap();
        let r2 = t.send_raw("", &rcpts[..1], msg).await.unwrap();
        assert!(r1.starts_with("250 2.0.0 written to "), "{r1}");
        assert_ne!(r1, r2);
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
        assert!(names
            .iter()
            .all(|n| n.ends_with(".eml") && !n.starts_with('.')));
        let path = r1.trim_start_matches("250 2.0.0 written to ");
        let body = std::fs::read(path).unwrap();
        assert_eq!(
            body,
            b"X-Postdesk-Envelope-From: support@example.org\r\n\
              X-Postdesk-Envelope-To: a@example.com\r\n\
              X-Postdesk-Envelope-To: b@example.com\r\n\
              Subject: hi\r\n\r\nhello\r\n"
                .as_slice()
        );
        let path2 = r2.trim_start_matches("250 2.0.0 written to ");
        let body2 = String::from_utf8(std::fs::read(path2).unwrap()).unwrap();
        assert!(body2.starts_with("X-Postdesk-Envelope-From: <>\r\n"));
        // Header injection through the envelope is refused.
        assert!(matches!(
            t.send_raw("a@b\r\nBcc: x@y", &rcpts, msg).await,
            Err(SendError::Permanent(_))
        ));
    }

    #[tokio::test]
    async fn file_transport_failure_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").unwrap();
        let t = FileTransport::new(blocker.join("sent")).unwrap();
        let r = t
            .send_raw("a@example.org", &["b@example.com".into()], b"x\r\n")
            .await;
        assert!(matches!(r, Err(SendError::Transient(_))), "{r:?}");
    }

    #[tokio::test]
    async fn relay_refused_connection_is_transient() {
        // Bind then drop to find a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = RelayTransport::new(
            &format!("smtp://127.0.0.1:{port}"),
            Some("postdesk.test"),
            Duration::from_secs(5),
        )
        .unwrap();
        let r = t
            .send_raw("a@example.org", &["b@example.com".into()], b"x\r\n")
            .await;
        match r {
            Err(SendError::Transient(t)) => assert!(t.contains("relay 127.0.0.1"), "{t}"),
            other => panic!("expected a transient error, got {other:?}"),
        }
    }
}
