//! What outbound delivery refuses to do (issue #12): connect to loopback, private and other
//! special-purpose addresses that a recipient domain's DNS names (unless the operator
//! allows it), and talk to a relay whose TLS certificate cannot be verified. Real sockets
//! throughout: a counting listener stands for an internal service, a tiny SMTP relay with
//! TLS (certificates made with rcgen) records every login it is given.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailroom_core::Tier;
use mailroom_testkit::{Backend, TestAccount, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

mod mx_on_special_addresses_is_never_connected {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::mx_on_special_addresses_is_never_connected(mailroom_testkit::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::mx_on_special_addresses_is_never_connected(mailroom_testkit::Backend::Postgres)
            .await;
    }
}

async fn send(s: &TestServer, from: &TestAccount, body: Value) -> String {
    let (status, answer, _) = s
        .call(
            "POST",
            &format!("/v1/inboxes/{}/send", from.inbox_id),
            Some(&from.inbox_key),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    answer["result"]["id"].as_str().unwrap().to_owned()
}

/// Polls the delivery row of `rcpt` until `done` accepts it (30 s at most).
async fn delivery_until(
    s: &TestServer,
    acc: &TestAccount,
    sent_id: &str,
    rcpt: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view = s
            .get_json(
                &acc.inbox_key,
                &format!("/v1/inboxes/{}/messages/{sent_id}", acc.inbox_id),
            )
            .await;
        let row = view["result"]["delivery"]
            .as_array()
            .and_then(|rows| rows.iter().find(|d| d["recipient"] == rcpt).cloned())
            .unwrap_or(Value::Null);
        if done(&row) {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Accepts connections and counts them (and never answers): an internal service.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    (port, count)
}

/// Without `delivery.allow_private_destinations` (which `--dev` turns on, so the test sets
/// it off), a domain whose MX hosts resolve only to loopback, link-local and IPv4-mapped
/// loopback addresses is never connected to: the recipient bounces at once with `5.4.4`
/// naming each address, the API shows it, and the DSN reaches the sender.
async fn mx_on_special_addresses_is_never_connected(backend: Backend) {
    let (port, connections) = counting_listener().await;
    let Some(a) = TestServer::start_with(backend, |c| {
        c.hostname = "mail.a.test".into();
        c.default_domain = "a.test".into();
        c.delivery.port = port;
        c.delivery.allow_private_destinations = false;
        c.delivery.poll_interval = Duration::from_millis(200);
    })
    .await
    else {
        eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set");
        return;
    };
    a.dns.mx("inside.test", 10, "mx.inside.test");
    a.dns.mx("inside.test", 20, "metadata.inside.test");
    a.dns.ip("mx.inside.test", LOOPBACK);
    a.dns
        .ip("metadata.inside.test", "169.254.169.254".parse().unwrap());
    a.dns
        .ip("metadata.inside.test", "::ffff:127.0.0.1".parse().unwrap());
    let before = a.refusals("delivery", "special_address").await;
    let alice = a.new_account("alice").await;
    a.set_tier(&alice.account_id, Tier::Developer).await;
    let sent_id = send(
        &a,
        &alice,
        json!({"to": "admin@inside.test", "subject": "to the inside", "text": "hi"}),
    )
    .await;
    let row = delivery_until(&a, &alice, &sent_id, "admin@inside.test", "a bounce", |r| {
        r["status"] == "bounced"
    })
    .await;
    let resp = row["last_response"].as_str().unwrap();
    assert!(resp.starts_with("5.4.4 no usable address"), "{row}");
    for part in [
        "mx.inside.test [127.0.0.1] is loopback",
        "metadata.inside.test [169.254.169.254] is link-local",
        "allow_private_destinations",
    ] {
        assert!(resp.contains(part), "{part:?} in {resp}");
    }
    assert!(
        resp.contains("[::ffff:127.0.0.1] is loopback") || resp.contains("[127.0.0.1] is loopback"),
        "{resp}"
    );
    assert_eq!(
        row["attempts"], 1,
        "a bounce at once, not days of retries: {row}"
    );
    // The sender hears of it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = a
            .get_json(
                &alice.inbox_key,
                &format!("/v1/inboxes/{}/messages", alice.inbox_id),
            )
            .await;
        let dsn = list["result"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["subject"] == "Undelivered Mail Returned to Sender");
        if dsn {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no DSN: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no connection reached the listener"
    );
    assert!(a.refusals("delivery", "special_address").await >= before + 2);
    a.stop().await;
}

/// The certificates of the relay test: a CA given to the server, a leaf it issued for
/// 127.0.0.1, one it issued for another name, and a self-signed one it never saw.
struct Certificates {
    ca_pem: String,
    good: Arc<rustls::ServerConfig>,
    wrong_name: Arc<rustls::ServerConfig>,
    self_signed: Arc<rustls::ServerConfig>,
}

fn server_config(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> Arc<rustls::ServerConfig> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    Arc::new(config)
}

fn params(names: &[&str], common_name: &str) -> rcgen::CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut p = rcgen::CertificateParams::new(names).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    p
}

fn certificates() -> Certificates {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = params(&[], "Mailroom test relay CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf = |names: &[&str], cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params(names, cn).signed_by(&key, &ca).unwrap();
        server_config(&cert, &key)
    };
    let own_key = rcgen::KeyPair::generate().unwrap();
    let own = params(&["127.0.0.1", "localhost"], "relay, self-signed")
        .self_signed(&own_key)
        .unwrap();
    Certificates {
        ca_pem: ca.pem(),
        good: leaf(&["127.0.0.1", "localhost"], "relay"),
        wrong_name: leaf(&["smtp.elsewhere.example"], "elsewhere"),
        self_signed: server_config(&own, &own_key),
    }
}

/// A tiny SMTP relay: STARTTLS with whichever certificate it is told to present, AUTH
/// PLAIN (each login recorded with whether it came over TLS), and DATA.
#[derive(Clone)]
struct TestRelay {
    port: u16,
    presents: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    logins: Arc<Mutex<Vec<(String, bool)>>>,
    handshakes_failed: Arc<AtomicUsize>,
    /// Each message received: whether it came over TLS.
    messages: Arc<Mutex<Vec<bool>>>,
}

impl TestRelay {
    async fn start(presents: Arc<rustls::ServerConfig>) -> TestRelay {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let relay = TestRelay {
            port: listener.local_addr().unwrap().port(),
            presents: Arc::new(Mutex::new(presents)),
            logins: Arc::default(),
            handshakes_failed: Arc::default(),
            messages: Arc::default(),
        };
        let me = relay.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let Some(plain) = me.session(sock, false).await else {
                        return;
                    };
                    let config = me.presents.lock().unwrap().clone();
                    match tokio_rustls::TlsAcceptor::from(config).accept(plain).await {
                        Ok(tls) => {
                            me.session(tls, true).await;
                        }
                        Err(_) => {
                            me.handshakes_failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        relay
    }

    fn present(&self, config: &Arc<rustls::ServerConfig>) {
        *self.presents.lock().unwrap() = config.clone();
    }

    fn messages(&self) -> Vec<bool> {
        self.messages.lock().unwrap().clone()
    }

    fn logins(&self) -> Vec<(String, bool)> {
        self.logins.lock().unwrap().clone()
    }

    /// Serves commands; gives the stream back when the client asks for STARTTLS.
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, tls: bool) -> Option<S> {
        use base64::Engine as _;
        let mut s = BufReader::new(stream);
        if !tls {
            s.get_mut()
                .write_all(b"220 relay.test ESMTP\r\n")
                .await
                .ok()?;
        }
        loop {
            let mut line = String::new();
            if s.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let upper = line.trim_end().to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                if tls {
                    b"250-relay.test\r\n250 AUTH PLAIN\r\n"
                } else {
                    b"250-relay.test\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"
                }
            } else if upper == "STARTTLS" && !tls {
                s.get_mut()
                    .write_all(b"220 2.0.0 go ahead\r\n")
                    .await
                    .ok()?;
                return Some(s.into_inner());
            } else if let Some(token) = line.trim_end().strip_prefix("AUTH PLAIN ") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(token)
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&decoded).replace('\0', " ");
                self.logins.lock().unwrap().push((text, tls));
                b"235 2.7.0 accepted\r\n"
            } else if upper == "DATA" {
                s.get_mut().write_all(b"354 go on\r\n").await.ok()?;
                loop {
                    let mut l = String::new();
                    if s.read_line(&mut l).await.ok()? == 0 {
                        return None;
                    }
                    if l == ".\r\n" {
                        break;
                    }
                }
                self.messages.lock().unwrap().push(tls);
                b"250 2.0.0 queued\r\n"
            } else if upper == "QUIT" {
                s.get_mut().write_all(b"221 bye\r\n").await.ok()?;
                return None;
            } else {
                b"250 2.0.0 ok\r\n"
            };
            s.get_mut().write_all(reply).await.ok()?;
        }
    }
}

const RELAY_PASSWORD: &str = "relay-secret-8c1f";

/// The relay's certificate is verified: one it cannot chain to the CA file (self-signed),
/// then one for another name, each defer the message with `4.7.5` naming the problem and
/// no login is ever sent (not even in clear to this loopback relay); once the relay
/// presents the certificate its CA issued for 127.0.0.1, the message goes, the login over
/// TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_certificate_is_verified_before_the_password_is_sent() {
    let certs = certificates();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("relay-ca.pem");
    std::fs::write(&ca_file, &certs.ca_pem).unwrap();
    let relay = TestRelay::start(certs.self_signed.clone()).await;
    let a = TestServer::start_with(Backend::Sqlite, |c| {
        c.hostname = "mail.a.test".into();
        c.default_domain = "a.test".into();
        c.delivery.retry_schedule = vec![Duration::from_secs(1)];
        c.delivery.poll_interval = Duration::from_millis(200);
        c.delivery.relay = Some(mailroom_delivery::Relay {
            host: "127.0.0.1".into(),
            port: relay.port,
            username: Some("relay-user".into()),
            password: Some(RELAY_PASSWORD.into()),
            ca_file: Some(ca_file.clone()),
        });
    })
    .await
    .unwrap();
    let before = a.refusals("delivery", "relay_certificate").await;
    let alice = a.new_account("alice").await;
    a.set_tier(&alice.account_id, Tier::Developer).await;
    let rcpt = "carol@c.test";
    let sent_id = send(
        &a,
        &alice,
        json!({"to": rcpt, "subject": "via a verified relay", "text": "hi"}),
    )
    .await;
    let row = delivery_until(&a, &alice, &sent_id, rcpt, "a deferral", |r| {
        r["status"] == "deferred"
    })
    .await;
    let resp = row["last_response"].as_str().unwrap().to_owned();
    assert!(resp.starts_with("4.7.5"), "{row}");
    assert!(
        resp.contains("certificate") && resp.contains("127.0.0.1"),
        "{resp}"
    );
    assert!(resp.contains("UnknownIssuer"), "names the problem: {resp}");
    assert!(relay.handshakes_failed.load(Ordering::SeqCst) >= 1);
    assert!(
        relay.logins().is_empty(),
        "no password after a failed check"
    );
    assert!(relay.messages().is_empty());
    // A certificate from the right CA, for another name.
    relay.present(&certs.wrong_name);
    let row = delivery_until(&a, &alice, &sent_id, rcpt, "a name mismatch", |r| {
        r["status"] == "deferred"
            && r["last_response"]
                .as_str()
                .is_some_and(|t| t.starts_with("4.7.5") && !t.contains("UnknownIssuer"))
    })
    .await;
    let resp = row["last_response"].as_str().unwrap();
    assert!(resp.contains("not valid for name"), "{resp}");
    assert!(
        relay.logins().is_empty(),
        "no password for the wrong name either"
    );
    // The certificate its CA issued for the relay's address.
    relay.present(&certs.good);
    let row = delivery_until(&a, &alice, &sent_id, rcpt, "delivery", |r| {
        r["status"] == "delivered"
    })
    .await;
    assert!(
        row["last_response"].as_str().unwrap().starts_with("250"),
        "{row}"
    );
    assert_eq!(
        relay.logins(),
        [(format!(" relay-user {RELAY_PASSWORD}"), true)],
        "one login, over TLS"
    );
    assert_eq!(relay.messages(), [true]);
    assert!(a.refusals("delivery", "relay_certificate").await >= before + 2);
    a.stop().await;
}

/// Opportunistic MX delivery stays opportunistic: the same self-signed certificate that the
/// relay check refuses is fine for a domain's MX (STARTTLS, then the message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_delivery_still_accepts_any_certificate() {
    let certs = certificates();
    let mx = TestRelay::start(certs.self_signed.clone()).await;
    let a = TestServer::start_with(Backend::Sqlite, |c| {
        c.hostname = "mail.a.test".into();
        c.default_domain = "a.test".into();
        c.delivery.port = mx.port;
        c.delivery.poll_interval = Duration::from_millis(200);
    })
    .await
    .unwrap();
    a.dns.mx("c.test", 10, "mx.c.test");
    a.dns.ip("mx.c.test", LOOPBACK);
    let alice = a.new_account("alice").await;
    a.set_tier(&alice.account_id, Tier::Developer).await;
    let sent_id = send(
        &a,
        &alice,
        json!({"to": "carol@c.test", "subject": "opportunistic", "text": "hi"}),
    )
    .await;
    delivery_until(&a, &alice, &sent_id, "carol@c.test", "delivery", |r| {
        r["status"] == "delivered"
    })
    .await;
    assert_eq!(mx.handshakes_failed.load(Ordering::SeqCst), 0);
    assert_eq!(mx.messages(), [true], "over TLS");
    a.stop().await;
}
