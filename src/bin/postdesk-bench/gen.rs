//! Our own load: a desk's day of mail, and an LMTP client that times it.
//!
//! smtp-source sends the same message over and over, every one a new ticket.
//! A real desk also gets replies that must find their ticket (by In-Reply-To,
//! or by Outlook's Thread-Index alone), agents answering with Reply-All,
//! auto-replies, and attachments of every size. This module makes such a
//! sequence from a fixed seed, so two targets get byte-identical mail, and
//! sends it over LMTP from N sessions, timing each message from the final
//! dot to its reply.

use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Every message a new 4 KiB customer mail, like smtp-source's, but
    /// timed per message.
    Fixed4k,
    /// The desk's day: 30 % In-Reply-To replies (a third of them agents'
    /// Reply-All), 10 % Thread-Index-only Outlook replies, 5 % auto-replies,
    /// the rest new mail; 2–256 KiB, a third with attachments.
    Realistic,
}

pub struct Message {
    pub from: String,
    pub raw: Vec<u8>,
}

pub const SUPPORT: &str = "support@example.com";
const AGENTS: [&str; 2] = ["alice@example.com", "bob@example.com"];

/// Words for subjects and bodies, so the quote stripper and the parser see
/// text rather than one repeated byte.
const WORDS: &[&str] = &[
    "printer", "invoice", "login", "password", "error", "server", "backup", "mail", "account",
    "order", "delivery", "refund", "contract", "update", "license", "network", "vpn", "screen",
    "report", "meeting", "please", "urgent", "since", "morning", "again", "cannot", "works",
    "thanks", "attached", "see", "the", "a", "is", "not", "our", "we", "it", "when", "after",
];

fn words(rng: &mut StdRng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
    }
    s
}

/// Plain text of about `bytes`, in lines of about 70 characters.
fn paragraph(rng: &mut StdRng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 80);
    while s.len() < bytes {
        s.push_str(&words(rng, 10));
        s.push_str("\r\n");
    }
    s
}

struct Sent {
    message_id: String,
    from: String,
    name: String,
    subject: String,
    /// Outlook's 22-byte conversation header, when the mail came from Outlook.
    thread_index: Option<Vec<u8>>,
}

fn date(i: usize) -> String {
    let base = jiff::Timestamp::from_second(1_795_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let t = base + jiff::SignedDuration::from_secs(i as i64 * 7);
    t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

fn b64_lines(bytes: &[u8]) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut s = String::with_capacity(enc.len() + enc.len() / 76 * 2 + 2);
    for chunk in enc.as_bytes().chunks(76) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        s.push_str("\r\n");
    }
    s
}

/// Total size of a new or reply message, drawn so that most mail is small
/// and a tail carries attachments up to 256 KiB.
fn draw_size(rng: &mut StdRng) -> (usize, bool) {
    let r: f64 = rng.gen();
    if r < 0.65 {
        (rng.gen_range(2 * 1024..8 * 1024), false)
    } else if r < 0.90 {
        (rng.gen_range(8 * 1024..64 * 1024), true)
    } else {
        (rng.gen_range(64 * 1024..256 * 1024), true)
    }
}

#[allow(clippy::too_many_arguments)]
fn compose(
    rng: &mut StdRng,
    i: usize,
    from_name: &str,
    from: &str,
    to: &str,
    cc: Option<&str>,
    subject: &str,
    message_id: &str,
    extra_headers: &str,
    size: usize,
    attach: bool,
) -> Vec<u8> {
    let mut h = String::new();
    h.push_str(&format!(
        "Received: from mx.example.net (mx.example.net [192.0.2.7])\r\n\tby mail.example.com (Postfix) with ESMTPS id 4Xb{i:06X}\r\n\tfor <{SUPPORT}>; {}\r\n",
        date(i)
    ));
    h.push_str(&format!("From: {from_name} <{from}>\r\nTo: {to}\r\n"));
    if let Some(cc) = cc {
        h.push_str(&format!("Cc: {cc}\r\n"));
    }
    h.push_str(&format!(
        "Subject: {subject}\r\nDate: {}\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n{extra_headers}",
        date(i)
    ));
    let text_len = if attach {
        600
    } else {
        size.saturating_sub(h.len() + 60)
    };
    let text = paragraph(rng, text_len.max(200));
    if !attach {
        h.push_str(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        );
        h.push_str(&text);
        return h.into_bytes();
    }
    let boundary = format!("b{i:08x}");
    h.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--{boundary}\r\nContent-Type: application/pdf; name=\"scan-{i}.pdf\"\r\nContent-Disposition: attachment; filename=\"scan-{i}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ));
    // base64 grows 4/3 plus line ends: aim the attachment at the rest.
    let raw_len = size.saturating_sub(h.len() + 64) * 3 / 4 * 76 / 78;
    let mut blob = vec![0u8; raw_len.max(512)];
    rng.fill(&mut blob[..]);
    h.push_str(&b64_lines(&blob));
    h.push_str(&format!("--{boundary}--\r\n"));
    h.into_bytes()
}

/// `n` messages for `mix`, the same for the same `seed`.
pub fn messages(mix: Mix, n: usize, seed: u64) -> Vec<Message> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    let mut sent: Vec<Sent> = Vec::new();
    // Indexes into `sent` of the mail that came from Outlook.
    let mut outlook: Vec<usize> = Vec::new();
    for i in 0..n {
        let customer = rng.gen_range(0..2000u32);
        let domain = customer % 300;
        let from = format!("user{customer}@customer{domain}.example.net");
        let name = format!("Customer {customer}");
        let message_id = format!("{i}.{seed:x}.bench@customer{domain}.example.net");
        if mix == Mix::Fixed4k {
            let subject = format!("{} {}", words(&mut rng, 4), i);
            let raw = compose(
                &mut rng,
                i,
                &name,
                &from,
                SUPPORT,
                None,
                &subject,
                &message_id,
                "",
                4096,
                false,
            );
            out.push(Message { from, raw });
            continue;
        }
        // A reply needs a parent acknowledged well before it is sent; with
        // at most 16 sessions in flight, 64 back is safely in the store.
        let parents = sent.len().saturating_sub(64);
        let r: f64 = rng.gen();
        if parents > 0 && r < 0.30 {
            let p = &sent[rng.gen_range(0..parents)];
            let agent = rng.gen_bool(1.0 / 3.0);
            let (size, attach) = if rng.gen_bool(0.8) {
                (rng.gen_range(2 * 1024..6 * 1024), false)
            } else {
                draw_size(&mut rng)
            };
            let (from_name, from, to, cc) = if agent {
                let a = AGENTS[i % 2];
                (
                    "Agent".to_string(),
                    a.to_string(),
                    p.from.clone(),
                    Some(SUPPORT),
                )
            } else {
                (p.name.clone(), p.from.clone(), SUPPORT.to_string(), None)
            };
            let extra = format!("In-Reply-To: <{0}>\r\nReferences: <{0}>\r\n", p.message_id);
            let subject = format!("Re: {}", p.subject);
            let raw = compose(
                &mut rng,
                i,
                &from_name,
                &from,
                &to,
                cc,
                &subject,
                &message_id,
                &extra,
                size,
                attach,
            );
            out.push(Message { from, raw });
        } else if r < 0.40 && outlook.partition_point(|&k| k < parents) > 0 {
            // Outlook links the reply by Thread-Index alone.
            let k = outlook.partition_point(|&k| k < parents);
            let p = &sent[outlook[rng.gen_range(0..k)]];
            let mut ti = p.thread_index.clone().unwrap_or_default();
            let mut child = [0u8; 5];
            rng.fill(&mut child[..]);
            ti.extend_from_slice(&child);
            let extra = format!(
                "Thread-Topic: {}\r\nThread-Index: {}\r\n",
                p.subject,
                base64::engine::general_purpose::STANDARD.encode(&ti)
            );
            let subject = format!("RE: {}", p.subject);
            let (size, attach) = draw_size(&mut rng);
            let raw = compose(
                &mut rng,
                i,
                &p.name,
                &p.from,
                SUPPORT,
                None,
                &subject,
                &message_id,
                &extra,
                size,
                attach,
            );
            out.push(Message {
                from: p.from.clone(),
                raw,
            });
        } else if parents > 0 && r < 0.45 {
            let p = &sent[rng.gen_range(0..parents)];
            let extra = format!(
                "Auto-Submitted: auto-replied\r\nX-Autoreply: yes\r\nIn-Reply-To: <{}>\r\n",
                p.message_id
            );
            let subject = format!("Automatic reply: {}", p.subject);
            let raw = compose(
                &mut rng,
                i,
                &p.name,
                &p.from,
                SUPPORT,
                None,
                &subject,
                &message_id,
                &extra,
                2048,
                false,
            );
            out.push(Message {
                from: p.from.clone(),
                raw,
            });
        } else {
            let subject = format!("{} {}", words(&mut rng, 4), i);
            let thread_index = rng.gen_bool(0.3).then(|| {
                let mut ti = vec![0u8; 22];
                rng.fill(&mut ti[..]);
                ti
            });
            let extra = match &thread_index {
                Some(ti) => format!(
                    "Thread-Topic: {subject}\r\nThread-Index: {}\r\nX-Mailer: Microsoft Outlook 16.0\r\n",
                    base64::engine::general_purpose::STANDARD.encode(ti)
                ),
                None => String::new(),
            };
            let (size, attach) = draw_size(&mut rng);
            let raw = compose(
                &mut rng,
                i,
                &name,
                &from,
                SUPPORT,
                None,
                &subject,
                &message_id,
                &extra,
                size,
                attach,
            );
            if thread_index.is_some() {
                outlook.push(sent.len());
            }
            sent.push(Sent {
                message_id: message_id.clone(),
                from: from.clone(),
                name,
                subject,
                thread_index,
            });
            out.push(Message { from, raw });
        }
    }
    out
}

/// What one load run measured.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub sent: usize,
    pub accepted: usize,
    pub refused: usize,
    pub wall: Duration,
    /// Final dot to reply, per accepted or refused message.
    pub latencies: Vec<Duration>,
}

struct Conn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Conn {
            r: BufReader::new(r),
            w,
        };
        c.reply().await?;
        c.cmd("LHLO bench.example.net\r\n").await?;
        Ok(c)
    }

    /// Reads one (possibly multi-line) reply and returns its code.
    async fn reply(&mut self) -> std::io::Result<u16> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
            }
        }
    }

    async fn cmd(&mut self, c: &str) -> std::io::Result<u16> {
        self.w.write_all(c.as_bytes()).await?;
        self.reply().await
    }

    /// One transaction; the time is from the final dot to the reply.
    async fn send(&mut self, m: &Message) -> std::io::Result<(bool, Duration)> {
        let mut head = format!("MAIL FROM:<{}>\r\n", m.from);
        if self.cmd(&head).await? != 250 {
            return Ok((false, Duration::ZERO));
        }
        head.clear();
        head.push_str(&format!("RCPT TO:<{SUPPORT}>\r\n"));
        if self.cmd(&head).await? != 250 {
            self.cmd("RSET\r\n").await?;
            return Ok((false, Duration::ZERO));
        }
        if self.cmd("DATA\r\n").await? != 354 {
            return Ok((false, Duration::ZERO));
        }
        let mut body = Vec::with_capacity(m.raw.len() + 64);
        for line in m.raw.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                body.push(b'.');
            }
            body.extend_from_slice(line);
        }
        if !body.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
        self.w.write_all(&body).await?;
        self.w.write_all(b".\r\n").await?;
        let t = Instant::now();
        let code = self.reply().await?;
        Ok((code == 250, t.elapsed()))
    }
}

/// Sends every message over `sessions` LMTP connections to 127.0.0.1,
/// session i to `ports[i % ports.len()]` (several nodes share the load
/// evenly), each connection taking the next message until none are left
/// (as Postfix's LMTP client reuses its cached connections).
pub async fn run(
    ports: &[u16],
    sessions: usize,
    msgs: Arc<Vec<Message>>,
) -> std::io::Result<LoadResult> {
    if ports.is_empty() {
        return Err(std::io::Error::other("no port to deliver to"));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let next = next.clone();
        let msgs = msgs.clone();
        let port = ports[i % ports.len()];
        tasks.push(tokio::spawn(async move {
            let mut res = LoadResult::default();
            let mut conn = Conn::open(port).await?;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(m) = msgs.get(i) else { break };
                let (ok, lat) = conn.send(m).await?;
                res.sent += 1;
                if ok {
                    res.accepted += 1;
                } else {
                    res.refused += 1;
                }
                res.latencies.push(lat);
            }
            let _ = conn.cmd("QUIT\r\n").await;
            Ok::<_, std::io::Error>(res)
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        let r = t
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        total.sent += r.sent;
        total.accepted += r.accepted;
        total.refused += r.refused;
        total.latencies.extend(r.latencies);
    }
    total.wall = start.elapsed();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_its_shares_and_parses() {
        let m = messages(Mix::Realistic, 4000, 7);
        assert_eq!(m.len(), 4000);
        let text = |m: &Message| String::from_utf8_lossy(&m.raw).into_owned();
        let irt = m
            .iter()
            .filter(|m| text(m).contains("\r\nIn-Reply-To:") && !text(m).contains("Auto-Submitted"))
            .count();
        let outlook_replies = m
            .iter()
            .filter(|m| text(m).contains("\r\nThread-Index:") && text(m).contains("Subject: RE:"))
            .count();
        let auto = m
            .iter()
            .filter(|m| text(m).contains("Auto-Submitted: auto-replied"))
            .count();
        let big = m.iter().filter(|m| m.raw.len() > 64 * 1024).count();
        // Shares within a few points of the design (replies start after 64).
        assert!((1000..1400).contains(&irt), "in-reply-to replies {irt}");
        assert!(
            (250..500).contains(&outlook_replies),
            "outlook replies {outlook_replies}"
        );
        assert!((120..280).contains(&auto), "auto-replies {auto}");
        assert!(big > 100, "large messages {big}");
        assert!(m.iter().all(|m| m.raw.len() <= 260 * 1024));
        assert!(m.iter().all(|m| m.raw.len() >= 1500));
        // Same seed, same bytes: both targets get identical mail.
        let again = messages(Mix::Realistic, 50, 7);
        assert!(again.iter().zip(&m).all(|(a, b)| a.raw == b.raw));
    }
}
