//! A small SMTP client for MTA-to-MTA delivery (RFC 5321): EHLO, opportunistic STARTTLS
//! (RFC 3207) or verified TLS to a relay (the policies are in [`crate::tls`]), AUTH PLAIN for
//! a relay, and one transaction after another on one connection.
//!
//! Written here rather than borrowed because delivery needs every reply: one `RCPT TO`
//! may be refused while the others are accepted, and each recipient's status is recorded
//! from its own reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The longest reply line read (RFC 5321 §4.5.3.1.5 says 512; servers send longer).
const MAX_LINE: usize = 4096;
/// The most lines one reply may have.
const MAX_LINES: usize = 128;

/// A failure below the level of SMTP replies.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection to {0} failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server's reply is not SMTP: {0}")]
    Protocol(String),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

/// One SMTP reply: its code and its text lines joined with spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
    /// The text of each line (EHLO keywords are lines 2…).
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// `550 5.1.1 No such user`, on one line, at most 500 characters.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}", self.code, self.text);
        if s.len() > 500 {
            let mut cut = 500;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One connection to one server.
pub struct Connection {
    stream: BufReader<Box<dyn Stream>>,
    timeout: Duration,
    pub tls: bool,
    /// EHLO keywords, upper case (`STARTTLS`, `SIZE 1000`, `AUTH PLAIN LOGIN`, …).
    pub extensions: Vec<String>,
    /// The peer, for logs and DSNs.
    pub peer: SocketAddr,
}

impl Connection {
    /// Connects and reads the greeting. A greeting that is not 220 is returned as the
    /// error reply (`Ok(Err(reply))`).
    pub async fn connect(
        addr: SocketAddr,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Result<Connection, Reply>, ClientError> {
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
            .map_err(|e| ClientError::Connect(addr, e))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            stream: BufReader::new(Box::new(tcp)),
            timeout,
            tls: false,
            extensions: Vec::new(),
            peer: addr,
        };
        let greeting = conn.read_reply().await?;
        if greeting.code != 220 {
            return Ok(Err(greeting));
        }
        Ok(Ok(conn))
    }

    /// Connects with TLS from the first byte (a relay on port 465), then reads the greeting.
    pub async fn connect_tls(
        addr: SocketAddr,
        server_name: &str,
        tls: Arc<ClientConfig>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Result<Connection, Reply>, ClientError> {
        let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout("connecting"))?
            .map_err(|e| ClientError::Connect(addr, e))?;
        let tls = tls_handshake(tcp, server_name, tls, timeout).await?;
        let mut conn = Connection {
            stream: BufReader::new(tls),
            timeout,
            tls: true,
            extensions: Vec::new(),
            peer: addr,
        };
        let greeting = conn.read_reply().await?;
        if greeting.code != 220 {
            return Ok(Err(greeting));
        }
        Ok(Ok(conn))
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.read_reply_inner())
            .await
            .map_err(|_| ClientError::Timeout("waiting for the server's reply"))?
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, ClientError> {
        let mut text: Vec<String> = Vec::new();
        for _ in 0..MAX_LINES {
            let mut line = Vec::new();
            let n = (&mut self.stream)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                return Err(ClientError::Protocol(
                    "the server closed the connection".into(),
                ));
            }
            if line.last() != Some(&b'\n') {
                return Err(ClientError::Protocol("reply line too long".into()));
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| ClientError::Protocol(format!("{line:?}")))?;
            let sep = line.as_bytes().get(3).copied();
            text.push(line.get(4..).unwrap_or("").to_owned());
            match sep {
                Some(b'-') => continue,
                Some(b' ') | None => {
                    return Ok(Reply {
                        code,
                        text: text.join(" "),
                        lines: text,
                    });
                }
                Some(_) => return Err(ClientError::Protocol(format!("{line:?}"))),
            }
        }
        Err(ClientError::Protocol("reply has too many lines".into()))
    }

    /// Sends one command line and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, ClientError> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let timeout = self.timeout;
        let stream = self.stream.get_mut();
        tokio::time::timeout(timeout, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| ClientError::Timeout("sending"))??;
        Ok(())
    }

    /// EHLO (falling back to HELO when the server does not know it), remembering the
    /// extensions.
    pub async fn ehlo(&mut self, name: &str) -> Result<Reply, ClientError> {
        let reply = self.command(&format!("EHLO {name}")).await?;
        if reply.code == 250 {
            // The first line greets; each further line is one keyword and its parameters.
            self.extensions = reply
                .lines
                .iter()
                .skip(1)
                .map(|l| l.trim().to_ascii_uppercase())
                .collect();
            return Ok(reply);
        }
        self.extensions.clear();
        self.command(&format!("HELO {name}")).await
    }

    pub fn has_extension(&self, keyword: &str) -> bool {
        self.extensions
            .iter()
            .any(|e| e.split_whitespace().next() == Some(keyword))
    }

    /// STARTTLS under the policy `tls`, then EHLO again. `Ok(Err(reply))` when the server
    /// refused STARTTLS; an error when the handshake (or the certificate check) failed: the
    /// connection is then unusable.
    pub async fn starttls(
        mut self,
        server_name: &str,
        tls: Arc<ClientConfig>,
        ehlo_name: &str,
    ) -> Result<Result<Connection, (Connection, Reply)>, ClientError> {
        let reply = self.command("STARTTLS").await?;
        if reply.code != 220 {
            return Ok(Err((self, reply)));
        }
        if !self.stream.buffer().is_empty() {
            // Bytes after the 220 would be read as if protected by TLS (CVE-2011-0411).
            return Err(ClientError::Protocol(
                "the server sent data after its STARTTLS reply".into(),
            ));
        }
        let plain = self.stream.into_inner();
        let tls = tls_handshake(plain, server_name, tls, self.timeout).await?;
        let mut conn = Connection {
            stream: BufReader::new(tls),
            timeout: self.timeout,
            tls: true,
            extensions: Vec::new(),
            peer: self.peer,
        };
        conn.ehlo(ehlo_name).await?;
        Ok(Ok(conn))
    }

    /// AUTH PLAIN (a relay that wants a login).
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<Reply, ClientError> {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{password}").as_bytes());
        self.command(&format!("AUTH PLAIN {token}")).await
    }

    /// DATA with the message dot-stuffed, then the final reply. `Ok(Err(reply))` when the
    /// server did not answer DATA with 354.
    pub async fn data(&mut self, message: &[u8]) -> Result<Result<Reply, Reply>, ClientError> {
        let go = self.command("DATA").await?;
        if go.code != 354 {
            return Ok(Err(go));
        }
        self.write(&dot_stuff(message)).await?;
        Ok(Ok(self.read_reply().await?))
    }

    /// QUIT, without caring much for the answer.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.command("QUIT")).await;
    }
}

/// The message as DATA sends it: CRLF line ends, lines starting with `.` doubled, and the
/// terminating `.` line.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !message.is_empty() && !message.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

async fn tls_handshake<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    server_name: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Box<dyn Stream>, ClientError> {
    let name = ServerName::try_from(server_name.trim_matches(['[', ']']).to_owned())
        .map_err(|_| ClientError::Protocol(format!("{server_name:?} is not a TLS server name")))?;
    let connector = TlsConnector::from(config);
    let tls = tokio::time::timeout(timeout, connector.connect(name, stream))
        .await
        .map_err(|_| ClientError::Timeout("in the TLS handshake"))?
        .map_err(ClientError::Tls)?;
    Ok(Box::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b".x"), b"..x\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\nb"), b"a\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }
}
