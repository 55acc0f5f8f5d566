//! An LMTP client for the kill tests: every step returns an `io::Result`,
//! so a server that dies mid-session shows up as an error the test counts,
//! not as a panic in a load thread. (The harness's `Lmtp` panics instead:
//! right for tests where the server must not die.)

use super::dot_stuff;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Every transaction goes to this one recipient, the desk's list address.
pub const SUPPORT: &str = "support@example.com";

pub struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

fn broken(what: &str) -> std::io::Error {
    std::io::Error::other(what.to_string())
}

impl Client {
    /// Connects, reads the greeting and says `LHLO helo`.
    pub fn connect(port: u16, helo: &str) -> std::io::Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let w = s.try_clone()?;
        let mut c = Client {
            r: BufReader::new(s),
            w,
        };
        c.expect("220", None)?;
        c.expect("250", Some(&format!("LHLO {helo}")))?;
        Ok(c)
    }

    /// One reply (its last line); an error when the connection closed.
    pub fn reply(&mut self) -> std::io::Result<String> {
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line)? == 0 {
                return Err(broken("connection closed"));
            }
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(line.trim_end().to_string());
            }
        }
    }

    fn expect(&mut self, code: &str, cmd: Option<&str>) -> std::io::Result<String> {
        if let Some(c) = cmd {
            self.w.write_all(format!("{c}\r\n").as_bytes())?;
        }
        let r = self.reply()?;
        if r.starts_with(code) {
            Ok(r)
        } else {
            Err(broken(&format!("{cmd:?}: {r}")))
        }
    }

    /// MAIL, RCPT to [`SUPPORT`], DATA and the message: all but the final
    /// dot, so a test can line up several transactions before releasing them.
    pub fn send_body(&mut self, from: &str, data: &[u8]) -> std::io::Result<()> {
        self.expect("250", Some(&format!("MAIL FROM:<{from}>")))?;
        self.expect("250", Some(&format!("RCPT TO:<{SUPPORT}>")))?;
        self.expect("354", Some("DATA"))?;
        self.w.write_all(&dot_stuff(data))
    }

    /// The final dot, unread: the reply a client never got.
    pub fn send_dot(&mut self) -> std::io::Result<()> {
        self.w.write_all(b".\r\n")
    }

    /// The final dot; the server's reply to it.
    pub fn finish(&mut self) -> std::io::Result<String> {
        self.send_dot()?;
        self.reply()
    }

    /// One whole transaction; the server's reply to the final dot.
    pub fn send(&mut self, from: &str, data: &[u8]) -> std::io::Result<String> {
        self.send_body(from, data)?;
        self.finish()
    }

    pub fn quit(mut self) {
        let _ = self.w.write_all(b"QUIT\r\n");
        let mut rest = String::new();
        let _ = self.r.read_to_string(&mut rest);
    }
}

/// The ticket token a `250 2.0.0 <rcpt> OK, stored as SUP-12` names.
pub fn token_in(reply: &str) -> Option<String> {
    reply
        .split_whitespace()
        .last()
        .filter(|t| t.starts_with("SUP-"))
        .map(str::to_string)
}

/// `<a@b>` → `a@b`.
pub fn bare(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}
