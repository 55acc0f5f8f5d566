//! LMTP listeners: binding (TCP loopback or a Unix socket), the accept
//! loops, the session cap, and draining sessions on shutdown.
//!
//! Owns the sockets and the per-connection tasks. Must not: speak the
//! protocol beyond the one `421 4.3.2` for a connection over the cap (that is
//! `session.rs`), or decide what a recipient is (the `Handler`).
//!
//! Shape (mini-redis `server.rs`): one accept loop per listener, a
//! `Semaphore` for the session cap, each session in its own task holding a
//! clone of an mpsc sender, and shutdown waits until every clone is dropped.

use super::session::{run_session, Settings};
use super::{reply, Handler};
use crate::config::Listen;
use crate::shutdown::Shutdown;
use std::ffi::CString;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// How long `serve` waits for running sessions after shutdown. Idle ones
/// close at once with 421; this bounds a delivery that is still committing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Accept errors (EMFILE, ENOBUFS …) are usually transient: back off, never die.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A refused connection gets its 421 only if it takes it promptly.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listen.lmtp: {spec:?} is neither HOST:PORT (an IP address) nor unix:/path")]
    BadSpec { spec: String },
    #[error(
        "listen.lmtp: {addr} is not a loopback address; set listen.allow_remote: true to accept LMTP from other hosts"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("listen.lmtp_socket_mode: {mode:?} is not an octal mode (e.g. 0660)")]
    BadMode { mode: String },
    #[error("listen.lmtp: cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("listen.lmtp: cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("listen.lmtp: {} exists and is not a socket; not removing it", path.display())]
    NotASocket { path: PathBuf },
    #[error("listen.lmtp: {} is in use by a running server", path.display())]
    InUse { path: PathBuf },
    #[error("listen.lmtp: cannot remove stale socket {}: {source}", path.display())]
    RemoveStale {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listen.lmtp_socket_mode: cannot set {mode:o} on {}: {source}", path.display())]
    Chmod {
        path: PathBuf,
        mode: u32,
        source: std::io::Error,
    },
}

/// A bound LMTP listener, ready for [`serve`].
#[derive(Debug)]
pub enum Bound {
    Tcp(TcpListener),
    /// The path is kept to remove the socket file when serving ends.
    Unix(UnixListener, PathBuf),
}

impl Bound {
    /// `127.0.0.1:2424` or `unix:/run/postdesk/lmtp.sock`: for logs, and for
    /// tests that bind port 0 and need the real port.
    pub fn local_addr_string(&self) -> String {
        match self {
            Bound::Tcp(l) => match l.local_addr() {
                Ok(a) => a.to_string(),
                Err(_) => "tcp:?".into(),
            },
            Bound::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

/// Binds one `listen.lmtp` entry: `HOST:PORT` (an IP address) or `unix:/path`.
pub async fn bind(spec: &str, listen: &Listen) -> Result<Bound, Error> {
    match spec.strip_prefix("unix:") {
        Some(path) => bind_unix(spec, Path::new(path), listen).await,
        None => bind_tcp(spec, listen).await,
    }
}

async fn bind_tcp(spec: &str, listen: &Listen) -> Result<Bound, Error> {
    let addr: SocketAddr = spec.parse().map_err(|_| Error::BadSpec {
        spec: spec.to_string(),
    })?;
    if !listen.allow_remote && !is_loopback(addr.ip()) {
        return Err(Error::NotLoopback { addr });
    }
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind {
            addr: spec.to_string(),
            source,
        })?;
    Ok(Bound::Tcp(l))
}

/// `::ffff:127.0.0.1` is loopback too, though `Ipv6Addr::is_loopback` says no.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

async fn bind_unix(spec: &str, path: &Path, listen: &Listen) -> Result<Bound, Error> {
    if path.as_os_str().is_empty() {
        return Err(Error::BadSpec {
            spec: spec.to_string(),
        });
    }
    // Check the mode before touching the file system, so a typo leaves no
    // half-made socket behind.
    let mode = parse_mode(&listen.lmtp_socket_mode)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    remove_stale_socket(path).await?;
    let l = UnixListener::bind(path).map_err(|source| Error::Bind {
        addr: spec.to_string(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        Error::Chmod {
            path: path.to_path_buf(),
            mode,
            source,
        }
    })?;
    set_group(path, &listen.lmtp_socket_group);
    Ok(Bound::Unix(l, path.to_path_buf()))
}

fn parse_mode(mode: &str) -> Result<u32, Error> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && m <= 0o7777 => Ok(m),
        _ => Err(Error::BadMode {
            mode: mode.to_string(),
        }),
    }
}

/// A socket file left by a crashed run blocks bind; remove it, but never a
/// file that is not a socket, nor a socket a live server still answers on.
async fn remove_stale_socket(path: &Path) -> Result<(), Error> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        // Let bind report whatever this is, with its own error.
        Err(_) => return Ok(()),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::NotASocket {
            path: path.to_path_buf(),
        });
    }
    let probe = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::UnixStream::connect(path),
    )
    .await;
    if let Ok(Ok(_)) = probe {
        return Err(Error::InUse {
            path: path.to_path_buf(),
        });
    }
    tracing::info!(path = %path.display(), "removing stale LMTP socket");
    std::fs::remove_file(path).map_err(|source| Error::RemoveStale {
        path: path.to_path_buf(),
        source,
    })
}

/// Gives the socket to `group` so Postfix can connect. Not fatal: running
/// unprivileged (tests, a developer's laptop) or without that group is
/// normal, and the mode alone may be enough.
fn set_group(path: &Path, group: &str) {
    if group.is_empty() {
        return;
    }
    let Some(gid) = group_id(group) else {
        tracing::warn!(
            group,
            path = %path.display(),
            "listen.lmtp_socket_group: no such group; socket keeps its group"
        );
        return;
    };
    if let Err(e) = std::os::unix::fs::chown(path, None, Some(gid)) {
        tracing::warn!(
            group,
            path = %path.display(),
            error = %e,
            "listen.lmtp_socket_group: cannot change the socket's group; socket keeps its group"
        );
    }
}

/// Looks a group up with the re-entrant `getgrnam_r`: `getgrnam` returns a
/// static buffer that another thread may overwrite under us.
fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut size = 1024usize;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: zeroed `group` is a valid out-parameter (plain C struct of
        // pointers and ints) that getgrnam_r fills in.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer refers to a live local of the stated size;
        // `grp`'s string pointers point into `buf`, which we do not read.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        return Some(grp.gr_gid);
    }
}

/// Serves every listener until `shutdown` fires, then stops accepting at
/// once, waits up to 30 s for running sessions (idle ones are told 421 and
/// close at once; a delivery in progress finishes), removes the Unix socket
/// files and returns. Never fails: accept errors are logged and retried.
pub async fn serve(
    bound: Vec<Bound>,
    settings: Arc<Settings>,
    handler: Arc<dyn Handler>,
    mut shutdown: Shutdown,
) {
    // Semaphore::new panics past MAX_PERMITS; no real config gets near it.
    let max_sessions = settings.max_sessions.min(Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_sessions));
    // Each session holds a sender clone; `recv` returning None means all
    // sessions are gone.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut socket_files = Vec::new();
    let mut loops = JoinSet::new();
    for b in bound {
        let name = b.local_addr_string();
        tracing::info!(listen = %name, "LMTP listening");
        if let Bound::Unix(_, path) = &b {
            socket_files.push(path.clone());
        }
        let ctx = Ctx {
            settings: settings.clone(),
            handler: handler.clone(),
            shutdown: shutdown.clone(),
            slots: slots.clone(),
            done: done_tx.clone(),
        };
        loops.spawn(accept_loop(b, ctx));
    }
    drop(done_tx);

    shutdown.wait().await;
    // Accept loops see the same shutdown; joining them means every listener
    // is dropped, so no connection is accepted from here on.
    while loops.join_next().await.is_some() {}
    let running = max_sessions.saturating_sub(slots.available_permits());
    tracing::info!(running, "LMTP stopped accepting; waiting for sessions");
    if tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv())
        .await
        .is_err()
    {
        let left = max_sessions.saturating_sub(slots.available_permits());
        tracing::warn!(
            sessions = left,
            "sessions still running after {SHUTDOWN_GRACE:?}; leaving them"
        );
    }
    for path in socket_files {
        let is_socket = std::fs::symlink_metadata(&path)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if is_socket {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove LMTP socket");
            }
        }
    }
    tracing::info!("LMTP server stopped");
}

/// What every accept loop and session needs.
#[derive(Clone)]
struct Ctx {
    settings: Arc<Settings>,
    handler: Arc<dyn Handler>,
    shutdown: Shutdown,
    slots: Arc<Semaphore>,
    done: mpsc::Sender<()>,
}

async fn accept_loop(bound: Bound, ctx: Ctx) {
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            a = accept(&bound) => a,
        };
        match accepted {
            Ok(conn) => {
                backoff = ACCEPT_BACKOFF_MIN;
                match conn {
                    Conn::Tcp(s, peer) => {
                        // Replies are batched per read already; don't let
                        // Nagle hold the last one back.
                        let _ = s.set_nodelay(true);
                        start(s, peer, &ctx);
                    }
                    Conn::Unix(s, peer) => start(s, peer, &ctx),
                }
            }
            Err(e) => {
                tracing::warn!(
                    listen = %bound.local_addr_string(),
                    error = %e,
                    retry_in = ?backoff,
                    "accept failed"
                );
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream, String),
    Unix(tokio::net::UnixStream, String),
}

async fn accept(bound: &Bound) -> std::io::Result<Conn> {
    match bound {
        Bound::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            Ok(Conn::Tcp(s, addr.to_string()))
        }
        Bound::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            // Unix peers are unnamed; the pid says who it was.
            let peer = match s.peer_cred().ok().and_then(|c| c.pid()) {
                Some(pid) => format!("unix:pid={pid}"),
                None => "unix".to_string(),
            };
            Ok(Conn::Unix(s, peer))
        }
    }
}

/// Runs the session in its own task, or refuses the connection with 421 if
/// every slot is taken.
fn start<S>(stream: S, peer: String, ctx: &Ctx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match ctx.slots.clone().try_acquire_owned() {
        Ok(permit) => {
            let ctx = ctx.clone();
            tokio::spawn(session_task(stream, peer, ctx, permit));
        }
        Err(_) => {
            tracing::warn!(
                peer = %peer,
                max = ctx.settings.max_sessions,
                "connection refused: over limits.max_sessions"
            );
            // In its own task so a slow peer cannot stall accepting.
            tokio::spawn(refuse(stream));
        }
    }
}

async fn session_task<S>(stream: S, peer: String, ctx: Ctx, permit: OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    run_session(
        stream,
        &peer,
        &ctx.settings,
        &*ctx.handler,
        ctx.shutdown.clone(),
    )
    .await;
    // Explicit for the reader: the slot and the shutdown wait end here.
    drop(permit);
    drop(ctx.done);
}

async fn refuse<S: AsyncWrite + Unpin>(mut stream: S) {
    crate::metrics::lmtp_replies(reply::TOO_MANY_SESSIONS.as_bytes());
    let write = async {
        stream
            .write_all(reply::TOO_MANY_SESSIONS.as_bytes())
            .await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Envelope;
    use crate::lmtp::{BoxFuture, Outcome};
    use crate::shutdown;
    use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

    struct AcceptAll;

    impl Handler for AcceptAll {
        fn check_rcpt(&self, _: &str) -> Result<(), String> {
            Ok(())
        }
        fn deliver(&self, _: Envelope, _: Vec<u8>) -> BoxFuture<'_, Outcome> {
            Box::pin(async { Outcome::Stored { id: "T-1".into() } })
        }
    }

    fn settings(max_sessions: usize) -> Arc<Settings> {
        Arc::new(Settings {
            hostname: "mx.test".into(),
            max_message_size: 1 << 20,
            max_line_length: 1000,
            max_header_size: 1 << 16,
            max_recipients: 10,
            idle_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(60),
            max_sessions,
        })
    }

    async fn line<R: AsyncBufRead + Unpin>(r: &mut R) -> String {
        let mut l = String::new();
        tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut l))
            .await
            .expect("no reply within 5 s")
            .unwrap();
        l.trim_end().to_string()
    }

    fn assert_reply(line: &str, code: &str) {
        assert!(line.starts_with(code), "expected `{code}`, got {line:?}");
    }

    #[tokio::test]
    async fn session_cap_refuses_the_second_connection_with_421() {
        let b = bind("127.0.0.1:0", &Listen::default()).await.unwrap();
        let addr = b.local_addr_string();
        let (trigger, shutdown) = shutdown::channel();
        let server = tokio::spawn(serve(vec![b], settings(1), Arc::new(AcceptAll), shutdown));

        let first = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut first = BufReader::new(first);
        assert_reply(&line(&mut first).await, "220 mx.test");

        let second = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut second = BufReader::new(second);
        assert_eq!(
            line(&mut second).await,
            "421 4.3.2 Too many sessions, try again later"
        );
        assert_eq!(line(&mut second).await, "", "closed after the 421");

        // The slot comes back when the first session ends.
        first.get_mut().write_all(b"QUIT\r\n").await.unwrap();
        assert_reply(&line(&mut first).await, "221");
        let mut third = None;
        for _ in 0..50 {
            let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut s = BufReader::new(s);
            let l = line(&mut s).await;
            if l.starts_with("220") {
                third = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut third = third.expect("a slot after the first session quit");

        trigger.fire();
        assert_eq!(
            line(&mut third).await,
            "421 4.3.0 mx.test Shutting down, try again later"
        );
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns once sessions are done")
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(&addr).await.is_err(),
            "no longer accepting"
        );
    }

    #[tokio::test]
    async fn non_loopback_needs_allow_remote() {
        let listen = Listen::default();
        let e = bind("0.0.0.0:0", &listen).await.unwrap_err();
        assert!(matches!(e, Error::NotLoopback { .. }), "{e}");
        assert!(e.to_string().contains("listen.allow_remote"), "{e}");
        let e = bind("192.0.2.1:2424", &listen).await.unwrap_err();
        assert!(matches!(e, Error::NotLoopback { .. }), "{e}");

        let open = Listen {
            allow_remote: true,
            ..Listen::default()
        };
        bind("0.0.0.0:0", &open).await.unwrap();

        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.1.2.3".parse().unwrap()));
        assert!(!is_loopback("::".parse().unwrap()));
    }

    #[tokio::test]
    async fn bad_specs_are_refused() {
        let listen = Listen::default();
        for spec in ["localhost:2424", "127.0.0.1", "unix:", ""] {
            let e = bind(spec, &listen).await.unwrap_err();
            assert!(matches!(e, Error::BadSpec { .. }), "{spec}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("unix:{}", dir.path().join("s.sock").display());
        let bad_mode = Listen {
            lmtp_socket_mode: "rw-rw----".into(),
            ..Listen::default()
        };
        let e = bind(&spec, &bad_mode).await.unwrap_err();
        assert!(matches!(e, Error::BadMode { .. }), "{e}");
        assert!(!dir.path().join("s.sock").exists());
    }

    #[tokio::test]
    async fn unix_socket_gets_its_mode_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/postdesk/lmtp.sock");
        let spec = format!("unix:{}", path.display());
        let listen = Listen {
            lmtp_socket_mode: "0600".into(),
            lmtp_socket_group: "postdesk-test-no-such-group".into(),
            ..Listen::default()
        };
        let b = bind(&spec, &listen).await.unwrap();
        assert_eq!(b.local_addr_string(), spec);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);

        // Live: refused, and the socket is left alone.
        let e = bind(&spec, &listen).await.unwrap_err();
        assert!(matches!(e, Error::InUse { .. }), "{e}");

        // Stale (its listener gone, the file left behind): replaced.
        drop(b);
        assert!(path.exists());
        let other_mode = Listen {
            lmtp_socket_mode: "0660".into(),
            ..listen.clone()
        };
        let _b = bind(&spec, &other_mode).await.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o660);

        // Never a file that is not a socket.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"keep me").unwrap();
        let e = bind(&format!("unix:{}", plain.display()), &listen)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotASocket { .. }), "{e}");
        assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
    }

    #[tokio::test]
    async fn serve_over_unix_socket_then_remove_it_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lmtp.sock");
        let spec = format!("unix:{}", path.display());
        let b = bind(&spec, &Listen::default()).await.unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let server = tokio::spawn(serve(vec![b], settings(4), Arc::new(AcceptAll), shutdown));

        let s = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut s = BufReader::new(s);
        assert_reply(&line(&mut s).await, "220 mx.test");
        s.get_mut()
            .write_all(b"LHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<s@b.example>\r\nDATA\r\n")
            .await
            .unwrap();
        loop {
            let l = line(&mut s).await;
            if l.starts_with("354") {
                break;
            }
            assert_reply(&l, "250");
        }
        s.get_mut()
            .write_all(b"Subject: x\r\n\r\nhi\r\n.\r\n")
            .await
            .unwrap();
        assert_eq!(
            line(&mut s).await,
            "250 2.0.0 <s@b.example> OK, stored as T-1"
        );

        trigger.fire();
        assert_reply(&line(&mut s).await, "421 4.3.0");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert!(!path.exists(), "socket file removed when serve returns");
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert_eq!(parse_mode("660").unwrap(), 0o660);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert!(parse_mode("0890").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("077777").is_err());
    }

    #[test]
    fn group_lookup() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("postdesk-test-no-such-group"), None);
        assert_eq!(group_id("nul\0byte"), None);
    }
}
