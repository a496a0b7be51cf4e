//! A small authoritative DNS server for tests: answers from a map that the test fills,
//! NXDOMAIN for every other name (without an SOA, as some resolvers answer), on a UDP port
//! of its own. Servers under test point their resolver at it (`MAILROOM_DNS_RESOLVER`), so
//! no test ever asks the internet. It can also be slow, lossy or mute
//! ([`TestDns::set_behaviour`]), the way real resolvers are under load, and it counts the
//! queries it gets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mail_auth::hickory_resolver::proto::op::{Message, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::{A, AAAA, MX, TXT};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

type Zone = HashMap<(String, RecordType), Vec<RData>>;

/// How the server answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// Every answer waits this long.
    pub delay: Duration,
    /// Drops one query in this many (0: none).
    pub drop_one_in: u64,
    /// Answers nothing at all.
    pub mute: bool,
}

/// A running test DNS server. Clones share the same records.
#[derive(Clone)]
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<RwLock<Zone>>,
    behaviour: Arc<Mutex<Behaviour>>,
    queries: Arc<AtomicU64>,
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl TestDns {
    /// Starts the server on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<TestDns> {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = sock.local_addr()?;
        let dns = TestDns {
            addr,
            zone: Arc::default(),
            behaviour: Arc::default(),
            queries: Arc::default(),
        };
        let served = dns.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, peer)) = sock.recv_from(&mut buf).await {
                let n = served.queries.fetch_add(1, Ordering::Relaxed) + 1;
                let how = served.behaviour();
                if how.mute || (how.drop_one_in > 0 && n.is_multiple_of(how.drop_one_in)) {
                    continue;
                }
                let answer = {
                    let zone = served.zone.read().unwrap_or_else(|e| e.into_inner());
                    answer(&zone, &buf[..len])
                };
                let Some(out) = answer else { continue };
                if how.delay.is_zero() {
                    let _ = sock.send_to(&out, peer).await;
                } else {
                    let sock = sock.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(how.delay).await;
                        let _ = sock.send_to(&out, peer).await;
                    });
                }
            }
        });
        Ok(dns)
    }

    /// Makes the server slow, lossy or mute from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner()) = behaviour;
    }

    fn behaviour(&self) -> Behaviour {
        *self.behaviour.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queries received so far (answered or not).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn add(&self, name: &str, rtype: RecordType, data: RData) {
        let mut zone = self.zone.write().unwrap_or_else(|e| e.into_inner());
        zone.entry((norm(name), rtype)).or_default().push(data);
    }

    /// Adds a TXT record (split into 255-byte strings as DNS requires).
    pub fn txt(&self, name: &str, value: &str) {
        let chunks: Vec<String> = value
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        self.add(name, RecordType::TXT, RData::TXT(TXT::new(chunks)));
    }

    /// Adds an A or AAAA record.
    pub fn ip(&self, name: &str, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.add(name, RecordType::A, RData::A(A(v4))),
            IpAddr::V6(v6) => self.add(name, RecordType::AAAA, RData::AAAA(AAAA(v6))),
        }
    }

    /// Adds an MX record.
    pub fn mx(&self, name: &str, preference: u16, exchange: &str) {
        let exchange = Name::from_ascii(format!("{}.", norm(exchange))).expect("a valid host name");
        self.add(
            name,
            RecordType::MX,
            RData::MX(MX::new(preference, exchange)),
        );
    }
}

fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    let mut resp = Message::response(req.id, req.op_code);
    resp.metadata.recursion_desired = req.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    resp.queries = req.queries.clone();
    let mut name_exists = false;
    for q in &req.queries {
        let n = norm(&q.name.to_ascii());
        name_exists |= zone.keys().any(|(k, _)| *k == n);
        for rd in zone.get(&(n, q.query_type)).into_iter().flatten() {
            resp.answers
                .push(Record::from_rdata(q.name.clone(), 1, rd.clone()));
        }
    }
    if resp.answers.is_empty() && !name_exists {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    resp.to_vec().ok()
}
