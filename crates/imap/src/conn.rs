//! Reading whole commands off the wire: lines, and the literals inside them (RFC 9051 §4.3,
//! LITERAL+ from RFC 7888), with a bound on every piece so that no client can make the
//! server buffer more than it allows.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// The longest line (between literals) accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// What reading a command gave.
pub enum Frame {
    /// A whole command, literals included.
    Command(Vec<u8>),
    /// A line over [`MAX_LINE`]; the rest of it was skipped.
    LineTooLong(Vec<u8>),
    /// A synchronizing literal over the limit: refused before the client sent it.
    LiteralTooBig(Vec<u8>),
    /// A non-synchronizing literal over the limit: its bytes are on their way and cannot be
    /// refused, so the connection must end (RFC 7888 §4).
    Fatal(&'static str),
    /// The client closed the connection.
    Eof,
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

/// Reads a whole command. `max_literal` bounds each literal, `max_command` the total.
pub async fn read_command<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    max_literal: u64,
    max_command: u64,
) -> std::io::Result<Frame> {
    let mut buf = Vec::new();
    loop {
        match read_line(conn, &mut buf).await {
            Ok(true) => {}
            Ok(false) => return Ok(Frame::LineTooLong(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Frame::Eof),
            Err(e) => return Err(e),
        }
        let Some((n, sync)) = literal_at_end(&buf) else {
            return Ok(Frame::Command(buf));
        };
        if n > max_literal || buf.len() as u64 + n > max_command {
            if sync {
                return Ok(Frame::LiteralTooBig(buf));
            }
            return Ok(Frame::Fatal("literal too big"));
        }
        if sync {
            let w = conn.get_mut();
            w.write_all(b"+ Ready for literal data\r\n").await?;
            w.flush().await?;
        }
        let start = buf.len();
        buf.resize(start + n as usize, 0);
        if let Err(e) = conn.read_exact(&mut buf[start..]).await {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return Ok(Frame::Eof);
            }
            return Err(e);
        }
    }
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
