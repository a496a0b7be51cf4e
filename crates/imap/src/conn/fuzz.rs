//! Generated-input test of the command reader (and the imap-codec decoding the session
//! does on what it returns): random bytes and damaged valid commands (lines, `{N}` and
//! `{N+}` literals, CR/LF split across reads, huge announced sizes), fed in reads of
//! random sizes. No input may panic, every command stays within the configured bounds,
//! its buffer's capacity too, and the literal budget is whole again once frames are
//! dropped. Fixed seed, no persistence: every run tries the same inputs.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};

use super::{Frame, MAX_LINE, ReadLimits, read_command};
use crate::limits::{LiteralBudget, SMALL_LITERAL};

const RANDOM_INPUTS: usize = 15_000;
const DAMAGED_INPUTS: usize = 15_000;
const MAX_LITERAL: u64 = 64 * 1024;
const MAX_COMMAND: u64 = MAX_LITERAL + 4 * MAX_LINE as u64;
const BUDGET: u64 = 100 * 1024;

/// A client whose bytes arrive in reads of `chunk` bytes at most; what the server
/// writes (continuations) is counted and dropped.
struct Client {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    continuations: usize,
}

impl AsyncRead for Client {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self
            .chunk
            .min(buf.remaining())
            .min(self.data.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.starts_with(b"+ ") {
            self.continuations += 1;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Valid commands to damage, literals included.
const VALID: &[&[u8]] = &[
    b"a1 LOGIN {14}\r\nuser@mail.test {8+}\r\npassword\r\n",
    b"a2 APPEND INBOX (\\Seen) {30}\r\nSubject: x\r\n\r\nhello, world!!\r\n\r\n",
    b"a3 APPEND INBOX ~{5}\r\nab\0cd\r\n",
    b"a4 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BINARY[1]<0.10>)\r\n",
    b"a5 SEARCH CHARSET UTF-8 OR SUBJECT {3+}\r\nabc BODY \"x\" NOT TEXT y\r\n",
    b"a6 LIST \"\" \"*a%b*\"\r\n",
    b"a7 STORE 1,2:4 +FLAGS.SILENT (\\Deleted $Junk)\r\n",
    b"a8 APPEND INBOX {70000}\r\n",
    b"a9 APPEND INBOX {99999999999+}\r\nxyz\r\n",
    b"b1 AUTHENTICATE PLAIN AGFAYg==\r\n",
    b"b2 ID (\"name\" {4}\r\ntest)\r\n",
];

/// A valid command, damaged: bytes changed, CR or LF inserted or removed, a huge literal
/// announced, parts repeated or cut.
fn damaged() -> impl Strategy<Value = Vec<u8>> {
    let pick = proptest::sample::select(VALID);
    let edit = (
        0u8..6,
        any::<prop::sample::Index>(),
        any::<u8>(),
        0u64..u64::MAX,
    );
    (
        proptest::collection::vec(pick, 1..4),
        proptest::collection::vec(edit, 0..4),
    )
        .prop_map(|(parts, edits)| {
            let mut m: Vec<u8> = parts.concat();
            for (kind, at, byte, big) in edits {
                let i = at.index(m.len() + 1);
                match kind {
                    0 if i < m.len() => m[i] = byte,
                    1 => m.insert(i, b'\n'),
                    2 => m.insert(i, b'\r'),
                    3 => {
                        let lit = format!(
                            " {{{}{}}}\r\n",
                            big % 10_000_000_000_000,
                            if byte % 2 == 0 { "+" } else { "" }
                        );
                        m.splice(i..i, lit.into_bytes());
                    }
                    4 => m.truncate(i),
                    _ => {
                        let copy = m[..i].to_vec();
                        m.extend_from_slice(&copy);
                    }
                }
            }
            m
        })
}

/// Reads every command of `data` and checks the bounds on each.
async fn read_all(data: Vec<u8>, chunk: usize, budget: &LiteralBudget) -> usize {
    let mut conn = BufReader::with_capacity(
        2048,
        Client {
            data,
            pos: 0,
            chunk,
            continuations: 0,
        },
    );
    let limits = ReadLimits {
        max_literal: MAX_LITERAL,
        max_command: MAX_COMMAND,
        budget,
        deadline: Duration::from_secs(60),
    };
    let mut commands = 0;
    // Every read consumes input or ends it, so this ends; the bound is a safety net.
    for _ in 0..10_000 {
        let frame = read_command(&mut conn, &limits)
            .await
            .expect("in-memory reads do not fail");
        match frame {
            Frame::Command(buf, _grant) => {
                commands += 1;
                let bound = MAX_COMMAND as usize + MAX_LINE;
                assert!(buf.len() <= bound, "a command of {} bytes", buf.len());
                assert!(buf.capacity() <= 2 * bound, "capacity {}", buf.capacity());
                assert!(budget.in_flight() <= BUDGET + 16 * SMALL_LITERAL);
                // What the session does with it.
                let _ = CommandCodec::default().decode(&buf);
            }
            Frame::LineTooLong(buf) | Frame::LiteralTooBig(buf) | Frame::NoBudget(buf) => {
                assert!(buf.len() <= MAX_LINE + 64, "{} bytes kept", buf.len());
            }
            Frame::Fatal(..) | Frame::Eof => break,
        }
        assert_eq!(budget.in_flight(), 0, "a grant outlived its command");
    }
    let continuations = conn.get_ref().continuations;
    assert!(continuations <= 10_000);
    commands
}

fn run<S: Strategy<Value = Vec<u8>>>(strategy: S, seed: u8, inputs: usize) -> usize {
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let mut gen_ = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    );
    let chunks = 1usize..80;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let budget = LiteralBudget::new(BUDGET);
    let mut commands = 0;
    for _ in 0..inputs {
        let data = strategy.new_tree(&mut gen_).expect("an input").current();
        let chunk = chunks.new_tree(&mut gen_).expect("a chunk size").current();
        // The decoder sees raw input too, as the session would after framing.
        let _ = CommandCodec::default().decode(&data);
        commands += rt.block_on(read_all(data, chunk, &budget));
        assert_eq!(budget.in_flight(), 0);
    }
    commands
}

/// Random bytes, one in four of them a byte the framer cares about (CR, LF, braces,
/// `+`, digits). Made from a seed by xorshift: a strategy per byte is far too slow.
fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    (any::<u64>(), 0usize..600).prop_map(|(seed, len)| {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let special = b"\r\n{}+~0123456789 ";
                if x % 4 == 0 {
                    special[(x >> 8) as usize % special.len()]
                } else {
                    (x >> 16) as u8
                }
            })
            .collect()
    })
}

#[test]
fn random_bytes_never_break_the_reader() {
    run(random_bytes(), 11, RANDOM_INPUTS);
}

#[test]
fn damaged_commands_never_break_the_reader() {
    let commands = run(damaged(), 23, DAMAGED_INPUTS);
    // The generator reaches whole commands with literals, not only refusals.
    assert!(commands > DAMAGED_INPUTS, "only {commands} whole commands");
}
