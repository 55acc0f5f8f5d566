//! The test sink speaks enough SMTP for lettre, records byte-exact, and its
//! failure modes reach a client as the errors they imitate; and postdesk's
//! SMTP transports deliver through it unchanged and classify its refusals.

#[path = "common/sink.rs"]
mod sink;

use lettre::address::Envelope;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use postdesk::outbox::transport::{DirectTransport, RelayTransport};
use postdesk::outbox::{SendError, Transport};
use sink::{Mode, Received, Sink};
use std::time::Duration;

fn mailer(port: u16, timeout: Duration) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(timeout))
        .build()
}

fn envelope() -> Envelope {
    let from: Address = "support@example.com".parse().unwrap();
    let to: Vec<Address> = vec![
        "alice@example.com".parse().unwrap(),
        "bob@example.org".parse().unwrap(),
    ];
    Envelope::new(Some(from), to).unwrap()
}

const MESSAGE: &[u8] = b"From: Support <support@example.com>\r\n\
To: alice@example.com\r\n\
Subject: =?utf-8?q?Re=3A_printer_=E2=9C=93?= [SUP-12]\r\n\
X-Postdesk-Kind: ack\r\n\
X-Long: first part\r\n\
\tsecond part\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Hello \xc3\xa4,\r\n\
.a line that starts with a dot\r\n\
..and one with two\r\n\
.\r\n\
last line";

#[tokio::test]
async fn lettre_message_is_recorded_byte_exact() {
    let sink = Sink::start().await;
    let r = mailer(sink.port(), Duration::from_secs(5))
        .send_raw(&envelope(), MESSAGE)
        .await
        .expect("sink accepts");
    assert_eq!(r.code().to_string(), "250");
    let got = sink.wait_for_async(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "support@example.com");
    assert_eq!(m.rcpt_to, ["alice@example.com", "bob@example.org"]);
    // lettre ends DATA with CRLF . CRLF, so a message without a final line
    // break arrives with one; everything else, dot lines too, unchanged.
    let mut expected = MESSAGE.to_vec();
    expected.extend_from_slice(b"\r\n");
    assert_eq!(m.data, expected);
    assert_eq!(m.header("subject").unwrap(), "Re: printer ✓ [SUP-12]");
    assert_eq!(
        m.header_raw("Subject").unwrap(),
        "=?utf-8?q?Re=3A_printer_=E2=9C=93?= [SUP-12]"
    );
    assert_eq!(m.header("X-Long").unwrap(), "first part\tsecond part");
    assert_eq!(m.header("X-Postdesk-Kind").as_deref(), Some("ack"));
    assert_eq!(m.header("X-Missing"), None);
    let body = m.body_text();
    assert!(body.starts_with("Hello ä,\r\n.a line") || body.starts_with("Hello ä,\n.a line"));
    assert!(body.contains("\n.\r\nlast line") || body.contains("\n.\nlast line"));
    assert_eq!(sink.attempts(), 1);
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn tempfail_is_a_transient_lettre_error() {
    let sink = Sink::start().await;
    sink.set_mode(Mode::TempFail);
    let e = mailer(sink.port(), Duration::from_secs(5))
        .send_raw(&envelope(), MESSAGE)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(e.status().map(|c| c.to_string()).as_deref(), Some("451"));

    sink.set_mode(Mode::TempFailData);
    let e = mailer(sink.port(), Duration::from_secs(5))
        .send_raw(&envelope(), MESSAGE)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(sink.messages().is_empty());
    assert_eq!(sink.attempts(), 2);
}

#[tokio::test]
async fn permfail_is_a_permanent_lettre_error() {
    let sink = Sink::start().await;
    sink.set_mode(Mode::PermFail);
    let e = mailer(sink.port(), Duration::from_secs(5))
        .send_raw(&envelope(), MESSAGE)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert_eq!(e.status().map(|c| c.to_string()).as_deref(), Some("550"));
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn dropped_and_stalled_data_are_neither_transient_nor_permanent() {
    let sink = Sink::start().await;
    sink.set_mode(Mode::DropMidData);
    let e = mailer(sink.port(), Duration::from_secs(5))
        .send_raw(&envelope(), MESSAGE)
        .await
        .unwrap_err();
    assert!(!e.is_transient() && !e.is_permanent(), "{e}");

    // A stalled server holds lettre's async client past its own timeout
    // (which bounds only the connect): the reason postdesk's transports
    // put a budget on the whole attempt.
    sink.set_mode(Mode::Stall);
    let stalled = tokio::time::timeout(
        Duration::from_millis(800),
        mailer(sink.port(), Duration::from_millis(200)).send_raw(&envelope(), MESSAGE),
    )
    .await;
    assert!(stalled.is_err(), "the sink never answers: {stalled:?}");
    assert!(sink.messages().is_empty());
    assert_eq!(sink.attempts(), 2);
}

#[tokio::test]
async fn tempfail_first_then_accepts() {
    let sink = Sink::start().await;
    sink.set_mode(Mode::TempFailFirst(2));
    let m = mailer(sink.port(), Duration::from_secs(5));
    assert!(m
        .send_raw(&envelope(), MESSAGE)
        .await
        .unwrap_err()
        .is_transient());
    assert!(m
        .send_raw(&envelope(), MESSAGE)
        .await
        .unwrap_err()
        .is_transient());
    m.send_raw(&envelope(), MESSAGE).await.unwrap();
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(sink.attempts(), 3);
}

#[test]
fn blocking_sink_and_wait_for() {
    let sink = Sink::start_blocking();
    let port = sink.port();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                mailer(port, Duration::from_secs(5))
                    .send_raw(&envelope(), MESSAGE)
                    .await
                    .unwrap();
            })
    });
    let got = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(got[0].header("X-Postdesk-Kind").as_deref(), Some("ack"));
}

#[test]
#[should_panic(expected = "sink: expected at least 2 message(s)")]
fn wait_for_names_what_arrived_on_timeout() {
    let sink = Sink::start_blocking();
    sink.wait_for(2, Duration::from_millis(100));
}

#[test]
fn headers_unfold_and_repeat() {
    let m = Received {
        mail_from: String::new(),
        rcpt_to: vec![],
        data: b"X-Postdesk-Envelope-To: a@x\r\nx-postdesk-envelope-to: b@x\r\n\
                Subject: one\r\n two\r\n\r\nX-Not-A-Header: body\r\n"
            .to_vec(),
    };
    assert_eq!(m.headers("X-Postdesk-Envelope-To"), ["a@x", "b@x"]);
    assert_eq!(m.header("subject").as_deref(), Some("one two"));
    assert_eq!(m.header("X-Not-A-Header"), None);
    assert_eq!(m.body_text().trim_end(), "X-Not-A-Header: body");
}

// ---- postdesk's transports against the sink ----

fn relay(sink: &Sink) -> RelayTransport {
    RelayTransport::new(
        &sink.relay_url(),
        Some("postdesk.test"),
        Duration::from_secs(5),
    )
    .unwrap()
}

const OUR_MAIL: &[u8] = b"From: support@example.com\r\nTo: a@example.com\r\n\
Subject: [SUP-1]\r\n\r\nline\r\n.dot line\r\n";

#[tokio::test]
async fn relay_transport_delivers_byte_exact_and_reports_the_reply() {
    let sink = Sink::start().await;
    let t = relay(&sink);
    let rcpts = vec!["a@example.com".to_string(), "b@example.org".to_string()];
    let reply = t
        .send_raw("support@example.com", &rcpts, OUR_MAIL)
        .await
        .unwrap();
    assert_eq!(reply, "250 2.0.0 Ok: queued as SINK1");
    let got = sink.wait_for_async(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].data, OUR_MAIL, "no extra line at the end");
    assert_eq!(got[0].rcpt_to, rcpts);
    // The null sender.
    t.send_raw("", &rcpts[..1], OUR_MAIL).await.unwrap();
    assert_eq!(
        sink.wait_for_async(2, Duration::from_secs(5)).await[1].mail_from,
        ""
    );
}

#[tokio::test]
async fn relay_transport_classifies_refusals() {
    let sink = Sink::start().await;
    let t = relay(&sink);
    let rcpts = vec!["a@example.com".to_string()];
    sink.set_mode(Mode::TempFail);
    match t.send_raw("s@example.com", &rcpts, OUR_MAIL).await {
        Err(SendError::Transient(r)) => assert!(r.starts_with("451 4.3.0"), "{r}"),
        other => panic!("{other:?}"),
    }
    sink.set_mode(Mode::PermFail);
    match t.send_raw("s@example.com", &rcpts, OUR_MAIL).await {
        Err(SendError::Permanent(r)) => assert!(r.starts_with("550 5.1.1"), "{r}"),
        other => panic!("{other:?}"),
    }
    sink.set_mode(Mode::DropMidData);
    assert!(matches!(
        t.send_raw("s@example.com", &rcpts, OUR_MAIL).await,
        Err(SendError::Transient(_))
    ));
    sink.set_mode(Mode::Accept);
    t.send_raw("s@example.com", &rcpts, OUR_MAIL).await.unwrap();
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn relay_transport_times_out_on_a_stalled_server() {
    let sink = Sink::start().await;
    sink.set_mode(Mode::Stall);
    let t = RelayTransport::new(&sink.relay_url(), None, Duration::from_millis(300)).unwrap();
    let started = std::time::Instant::now();
    let r = t
        .send_raw("s@example.com", &["a@example.com".into()], OUR_MAIL)
        .await;
    assert!(
        matches!(&r, Err(SendError::Transient(t)) if t.contains("no answer")),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The stalled connection is not reused: the next send opens a new one.
    sink.set_mode(Mode::Accept);
    t.send_raw("s@example.com", &["a@example.com".into()], OUR_MAIL)
        .await
        .unwrap();
    assert_eq!(sink.connections(), 2);
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn relay_transport_reuses_its_connection() {
    let sink = Sink::start().await;
    let t = relay(&sink);
    for _ in 0..3 {
        t.send_raw("s@example.com", &["a@example.com".into()], OUR_MAIL)
            .await
            .unwrap();
    }
    assert_eq!(sink.messages().len(), 3);
    assert_eq!(sink.connections(), 1);
    // A refused transaction closes the connection; the next one reconnects.
    sink.set_mode(Mode::TempFail);
    assert!(t
        .send_raw("s@example.com", &["a@example.com".into()], OUR_MAIL)
        .await
        .is_err());
    sink.set_mode(Mode::Accept);
    t.send_raw("s@example.com", &["a@example.com".into()], OUR_MAIL)
        .await
        .unwrap();
    assert_eq!(sink.messages().len(), 4);
}

#[tokio::test]
async fn direct_transport_delivers_to_a_domain_literal() {
    let sink = Sink::start().await;
    let t = match DirectTransport::new(Some("postdesk.test"), Duration::from_secs(5)) {
        Ok(t) => t.with_port(sink.port()),
        // No resolver configuration on this machine: nothing to test.
        Err(e) => return eprintln!("skipped: {e}"),
    };
    let rcpts = vec!["a@[127.0.0.1]".to_string(), "b@[127.0.0.1]".to_string()];
    let reply = t.send_raw("s@example.com", &rcpts, OUR_MAIL).await.unwrap();
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let got = sink.wait_for_async(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].rcpt_to, rcpts, "one transaction per domain");
    assert_eq!(got[0].data, OUR_MAIL);
    sink.set_mode(Mode::PermFail);
    assert!(matches!(
        t.send_raw("s@example.com", &rcpts, OUR_MAIL).await,
        Err(SendError::Permanent(_))
    ));
}
