//! The bare CR / bare LF rule (smuggling defence) against a byte-at-a-time model, on
//! every string of up to 9 characters over `a`, CR and LF.

use mailroom_smtp::session::has_bare_cr_or_lf;

/// The rule as RFC 5321 §2.3.8 says it: every CR is followed by LF, every LF follows CR.
fn model(data: &[u8]) -> bool {
    data.iter().enumerate().any(|(i, &b)| {
        (b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
            || (b == b'\r' && data.get(i + 1) != Some(&b'\n'))
    })
}

#[test]
fn agrees_with_the_model_on_every_short_string() {
    let alphabet = [b'a', b'\r', b'\n'];
    let mut checked = 0;
    for len in 0..=9u32 {
        for mut n in 0..3usize.pow(len) {
            let mut s = Vec::with_capacity(len as usize);
            for _ in 0..len {
                s.push(alphabet[n % 3]);
                n /= 3;
            }
            assert_eq!(has_bare_cr_or_lf(&s), model(&s), "{s:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 29_524);
}

#[test]
fn plain_cases() {
    assert!(!has_bare_cr_or_lf(b""));
    assert!(!has_bare_cr_or_lf(b"Subject: x\r\n\r\nbody\r\n"));
    assert!(has_bare_cr_or_lf(b"a\nb"));
    assert!(has_bare_cr_or_lf(b"a\rb\r\n"));
    assert!(has_bare_cr_or_lf(b"a\r"));
    assert!(has_bare_cr_or_lf(b"\r\r\n"));
}
