//! Reading whole commands off the wire: lines, and the literals inside them (RFC 9051 §4.3,
//! LITERAL+ from RFC 7888), with a bound on every piece so that no client can make the
//! server buffer more than it allows.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::limits::{Grant, LiteralBudget, SMALL_LITERAL};

/// The longest line (between literals) accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// What reading a command gave.
#[derive(Debug)]
pub enum Frame {
    /// A whole command, literals included, with the literal budget its bytes hold (keep it
    /// until the command has been handled).
    Command(Vec<u8>, Grant),
    /// A line over [`MAX_LINE`]; the rest of it was skipped.
    LineTooLong(Vec<u8>),
    /// A synchronizing literal over the limit: refused before the client sent it.
    LiteralTooBig(Vec<u8>),
    /// A synchronizing literal the server-wide budget has no room for: refused before the
    /// client sent it (`NO [LIMIT]`).
    NoBudget(Vec<u8>),
    /// The bytes of a non-synchronizing literal are on their way and cannot be refused
    /// (over the limit, or no budget), or a literal missed its deadline: the connection
    /// ends (RFC 7888 §4). The command so far (its tag) and the reason.
    Fatal(Vec<u8>, Fatal),
    /// The client closed the connection.
    Eof,
}

/// Why a command ended its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    TooBig,
    NoBudget,
    Deadline,
}

impl Fatal {
    /// The `reason` label of the refusal counter.
    pub fn reason(self) -> &'static str {
        match self {
            Fatal::TooBig => "literal_too_big",
            Fatal::NoBudget => "literal_budget",
            Fatal::Deadline => "literal_deadline",
        }
    }
}

/// The bounds one command is read under.
pub struct ReadLimits<'a> {
    /// The largest literal.
    pub max_literal: u64,
    /// The largest whole command, literals included.
    pub max_command: u64,
    /// The server-wide budget of literal bytes in flight.
    pub budget: &'a LiteralBudget,
    /// Time for the rest of the command once its first literal is announced.
    pub deadline: Duration,
}

/// The announced literal at the end of a line: `{N}` or `{N+}` (also `~{N}` for BINARY).
fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = &inner[open + 1..];
    let (digits, sync) = match spec.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (spec, true),
    };
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}

/// Reads one line into `buf` (appending), at most `MAX_LINE` bytes. `Ok(false)` when the
/// line was too long (the rest has been skipped); `Err` on EOF or I/O failure.
pub async fn read_line<S: AsyncRead + Unpin>(
    conn: &mut BufReader<S>,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let start = buf.len();
    let n = (&mut *conn)
        .take(MAX_LINE as u64)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if buf.ends_with(b"\n") {
        return Ok(true);
    }
    if buf.len() - start < MAX_LINE {
        // The stream ended in the middle of a line.
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    // Skip the rest of the over-long line without keeping it.
    loop {
        let (done, used) = {
            let avail = conn.fill_buf().await?;
            if avail.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            match avail.iter().position(|&b| b == b'\n') {
                Some(p) => (true, p + 1),
                None => (false, avail.len()),
            }
        };
        conn.consume(used);
        if done {
            buf.truncate(start + 64);
            return Ok(false);
        }
    }
}

/// Reads a whole command. A literal's buffer grows as its bytes arrive (never allocated
/// in full from the announced size), its bytes are taken from the server-wide budget
/// before the client is asked for them, and once the first literal is announced the rest of
/// the command must arrive within `limits.deadline`.
pub async fn read_command<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    limits: &ReadLimits<'_>,
) -> std::io::Result<Frame> {
    let mut buf = Vec::new();
    let mut grant = limits.budget.grant();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let line = read_line(conn, &mut buf);
        let got = match deadline {
            None => line.await,
            Some(d) => match tokio::time::timeout_at(d, line).await {
                Ok(r) => r,
                Err(_) => return Ok(Frame::Fatal(buf, Fatal::Deadline)),
            },
        };
        match got {
            Ok(true) => {}
            Ok(false) => return Ok(Frame::LineTooLong(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Frame::Eof),
            Err(e) => return Err(e),
        }
        let Some((n, sync)) = literal_at_end(&buf) else {
            return Ok(Frame::Command(buf, grant));
        };
        if n > limits.max_literal || buf.len() as u64 + n > limits.max_command {
            if sync {
                return Ok(Frame::LiteralTooBig(buf));
            }
            return Ok(Frame::Fatal(buf, Fatal::TooBig));
        }
        if !sync && n <= SMALL_LITERAL {
            limits.budget.force_take(&mut grant, n);
        } else if !limits.budget.try_take(&mut grant, n) {
            if sync {
                return Ok(Frame::NoBudget(buf));
            }
            return Ok(Frame::Fatal(buf, Fatal::NoBudget));
        }
        let d = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + limits.deadline);
        if sync {
            let w = conn.get_mut();
            let ask = async {
                w.write_all(b"+ Ready for literal data\r\n").await?;
                w.flush().await
            };
            match tokio::time::timeout_at(d, ask).await {
                Ok(r) => r?,
                Err(_) => return Ok(Frame::Fatal(buf, Fatal::Deadline)),
            }
        }
        match tokio::time::timeout_at(d, read_literal(conn, &mut buf, n)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Frame::Eof),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(Frame::Fatal(buf, Fatal::Deadline)),
        }
    }
}

/// Appends `n` literal bytes to `buf` as they arrive: the buffer grows with what was
/// received, so an announced-but-unsent literal costs nothing but its budget.
async fn read_literal<S: AsyncRead + Unpin>(
    conn: &mut BufReader<S>,
    buf: &mut Vec<u8>,
    n: u64,
) -> std::io::Result<()> {
    // `read_to_end` grows the buffer with what arrives (never by the announced size).
    let got = (&mut *conn).take(n).read_to_end(buf).await?;
    if (got as u64) < n {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The tag at the start of a command line, if it looks like one (for BAD answers to lines
/// the parser refused).
pub fn tag_of(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    let tag = &line[..end.min(64)];
    let valid = !tag.is_empty()
        && tag.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    if valid {
        String::from_utf8_lossy(tag).into_owned()
    } else {
        "*".into()
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_found_at_line_ends() {
        assert_eq!(literal_at_end(b"a APPEND x {12}\r\n"), Some((12, true)));
        assert_eq!(literal_at_end(b"a APPEND x {12+}\r\n"), Some((12, false)));
        assert_eq!(literal_at_end(b"a APPEND x ~{3}\r\n"), Some((3, true)));
        assert_eq!(literal_at_end(b"a LOGIN \"{5}\"\r\n"), None);
        assert_eq!(literal_at_end(b"a X {}\r\n"), None);
        assert_eq!(literal_at_end(b"a X {99999999999999999}\r\n"), None);
        assert_eq!(tag_of(b"a1 NOOP\r\n"), "a1");
        assert_eq!(tag_of(b"+bad\r\n"), "*");
    }
}
