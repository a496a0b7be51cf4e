//! Generated-input test of MIME to JSON: what the API, webhooks and the store's facts make
//! of a message. Inputs are built like mail (headers, encoded words, nested multiparts,
//! base64 and quoted-printable parts, HTML) and then broken (truncated, bytes flipped,
//! boundaries lost). Parsing must never panic and the JSON must stay in proportion to the
//! message, so that one message cannot make a reader allocate without bound.
//!
//! Deterministic: a fixed seed, so every run parses the same messages.

use mailroom_services::{parse_facts, view_of};
use mailroom_store::MessageRow;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// With the SMTP, POP3 and IMAP sessions', over 100,000 generated inputs in all.
const MESSAGES: usize = 30_000;

fn header() -> impl Strategy<Value = String> {
    let name = select(vec![
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Content-Disposition",
        "Content-ID",
        "X-Anything",
    ]);
    let value = prop_oneof![
        "[ -~]{0,80}",
        Just("=?utf-8?B?w6nDqcOp?= =?iso-8859-1?Q?caf=E9?=".to_owned()),
        Just("=?utf-8?B?".to_owned()),
        Just("\"a\\\"b\" <a@b.example>, <@route:c@d>, group: e@f;, ".to_owned()),
        Just("attachment; filename*=utf-8''%E2%82%AC.txt".to_owned()),
        Just("Tue, 31 Feb 2026 25:61:61 +9999".to_owned()),
        Just("<a@b> <c@d> <unterminated".to_owned()),
        "[ -~]{0,40}".prop_map(|v| format!("{v}\r\n\t{v}")),
    ];
    (name, value).prop_map(|(n, v)| format!("{n}: {v}\r\n"))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~\n]{0,300}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..300),
        Just(b"<html><body><p>Your code is <b>123456</b> <a href=\"https://x.example/a?b=c\">go</a><script>".to_vec()),
        Just(b"=E2=82=AC =\r\nsoft break =ZZ bad escape=".to_vec()),
        Just(b"SGVsbG8gd29ybGQ=\r\n!!!not base64***\r\n".to_vec()),
        (0usize..5000).prop_map(|n| b"https://a.example/ ".repeat(n / 20)),
    ]
}

/// A leaf part: a content type, an encoding, a body.
fn leaf() -> impl Strategy<Value = Vec<u8>> {
    let ctype = select(vec![
        "text/plain; charset=utf-8",
        "text/plain; charset=iso-8859-1",
        "text/plain; charset=x-unknown",
        "text/html",
        "application/pdf; name=\"a.pdf\"",
        "image/png",
        "message/rfc822",
        "text/calendar; method=REQUEST",
        "garbage",
    ]);
    let encoding = select(vec![
        "",
        "base64",
        "quoted-printable",
        "8bit",
        "x-uuencode",
        "bogus",
    ]);
    (
        ctype,
        encoding,
        proptest::collection::vec(header(), 0..3),
        body(),
    )
        .prop_map(|(ct, enc, headers, body)| {
            let mut out = format!("Content-Type: {ct}\r\n").into_bytes();
            if !enc.is_empty() {
                out.extend_from_slice(format!("Content-Transfer-Encoding: {enc}\r\n").as_bytes());
            }
            for h in headers {
                out.extend_from_slice(h.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            out
        })
}

/// A part: a leaf, or a multipart of parts, up to three levels deep.
fn part() -> impl Strategy<Value = Vec<u8>> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        (
            select(vec!["mixed", "alternative", "related", "signed", "digest"]),
            "[a-zA-Z0-9'()+_,./:=?-]{1,20}",
            proptest::collection::vec(inner, 0..6),
            any::<bool>(),
        )
            .prop_map(|(sub, boundary, parts, closed)| {
                let mut out = format!(
                    "Content-Type: multipart/{sub}; boundary=\"{boundary}\"\r\n\r\npreamble\r\n"
                )
                .into_bytes();
                for p in parts {
                    out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                    out.extend_from_slice(&p);
                    out.extend_from_slice(b"\r\n");
                }
                if closed {
                    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
                }
                out
            })
    })
}

/// A message, then perhaps broken: cut short, a few bytes changed, line ends made bare.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let whole = (proptest::collection::vec(header(), 0..10), part()).prop_map(|(headers, part)| {
        let mut out = b"MIME-Version: 1.0\r\n".to_vec();
        for h in headers {
            out.extend_from_slice(h.as_bytes());
        }
        out.extend_from_slice(&part);
        out
    });
    let damage = prop_oneof![
        4 => Just(None),
        1 => (any::<prop::sample::Index>()).prop_map(|i| Some((0u8, i, 0u8))),
        2 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Some((1u8, i, b))),
        1 => (any::<prop::sample::Index>()).prop_map(|i| Some((2u8, i, 0u8))),
    ];
    (whole, proptest::collection::vec(damage, 0..4)).prop_map(|(mut m, damage)| {
        for d in damage.into_iter().flatten() {
            match d {
                (0, i, _) if !m.is_empty() => m.truncate(i.index(m.len())),
                (1, i, b) if !m.is_empty() => {
                    let at = i.index(m.len());
                    m[at] = b;
                }
                (2, _, _) => m.retain(|&c| c != b'\r'),
                _ => {}
            }
        }
        m
    })
}

fn row(size: usize) -> MessageRow {
    MessageRow {
        seq: 1,
        id: "msg_fuzz".into(),
        account_id: "acc_fuzz".into(),
        inbox_id: "inb_fuzz".into(),
        mailbox: "INBOX".into(),
        uid: 1,
        modseq: 1,
        blob_hash: String::new(),
        size: size as i64,
        internal_date: 0,
        flags: vec![],
        labels: vec![],
        thread_id: "thr_fuzz".into(),
        message_id: None,
        subject: None,
        from_addr: None,
        envelope_from: None,
        auth_results: Some("{not json".into()),
    }
}

#[test]
fn mime_to_json_survives_generated_messages() {
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let mut generator =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[37; 32]));
    let strategy = message();
    let (mut with_parts, mut largest_ratio) = (0usize, 0f64);
    for _ in 0..MESSAGES {
        let raw = strategy
            .new_tree(&mut generator)
            .expect("a message")
            .current();
        let parsed =
            std::panic::catch_unwind(|| (parse_facts(&raw), view_of(&row(raw.len()), &raw)));
        let Ok((facts, view)) = parsed else {
            panic!("parsing panicked on: {:?}", String::from_utf8_lossy(&raw));
        };
        let json = serde_json::to_vec(&view).expect("a view is always JSON");
        // The JSON is in proportion to the message: the text, its HTML rendering and the
        // header list are each at most a few times the input, escaped.
        let limit = 24 * raw.len() + 64 * 1024;
        assert!(
            json.len() <= limit,
            "{} bytes of JSON from a {}-byte message: {:?}",
            json.len(),
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(2000)])
        );
        if raw.len() >= 1024 {
            largest_ratio = largest_ratio.max(json.len() as f64 / raw.len() as f64);
        }
        if !view.attachments.is_empty() || facts.subject.is_some() {
            with_parts += 1;
        }
    }
    eprintln!("MIME: largest JSON/message ratio over 1 KiB messages: {largest_ratio:.1}");
    // The generator reaches structure the parser must walk, not only junk.
    assert!(
        with_parts > MESSAGES / 10,
        "only {with_parts} messages had a subject or an attachment"
    );
}
