//! Connection budgets: how many connections one door holds at once, in all and per client
//! address, and what happens to a connection that arrives when its address is at the limit.
//!
//! A busy peer MTA that sends one message per connection (as Postfix's `smtp-source` and
//! most MTAs do) opens its next connection the moment it has read our last reply; our task
//! for the old connection may not have ended yet. Refusing at once would turn a peer that
//! keeps exactly to the limit into a stream of `421`s. So a connection whose address is at
//! its limit waits a short while ([`ConnLimits::per_ip_wait`]) for a slot, and only the
//! connections beyond twice the limit are refused without waiting. Front ends also give
//! their slot back as soon as a session is over by protocol (SMTP `QUIT`), before the last
//! reply is written ([`Permit::release`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::Door;

/// The connection budget of one door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one address (an IPv4 address, or an IPv6 /64).
    pub max_per_ip: usize,
    /// How long a connection from an address at its limit waits for a slot before it is
    /// refused. Zero refuses at once.
    pub per_ip_wait: Duration,
    /// Loopback addresses are not limited per address (a local proxy or webmail brings
    /// everyone's connections from there). The total still holds.
    pub exempt_loopback: bool,
    /// Addresses not limited per address either: trusted proxies, whose connections carry
    /// many clients each.
    pub exempt: Vec<IpAddr>,
    /// How long a client may take to finish a TLS handshake.
    pub tls_handshake_timeout: Duration,
}

impl ConnLimits {
    /// Limits with the given caps and the shared defaults for the rest (1 s wait, loopback
    /// counted, 30 s for a handshake).
    pub fn new(max_connections: usize, max_per_ip: usize) -> ConnLimits {
        ConnLimits {
            max_connections,
            max_per_ip,
            per_ip_wait: Duration::from_secs(1),
            exempt_loopback: false,
            exempt: Vec::new(),
            tls_handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// The key an address is counted under: an IPv4 address (IPv4-mapped IPv6 included), or
/// the /64 an IPv6 address is in. One IPv6 host usually holds a whole /64, so counting
/// single IPv6 addresses would give each host 2^64 budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(_) => AddrKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    AddrKey(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for AddrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many connections; try again later")]
    Total,
    #[error("too many connections from your address; try again later")]
    PerAddress,
}

impl Refused {
    /// The `reason` label of `mailroom_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerAddress => "max_connections_per_ip",
        }
    }
}

#[derive(Debug, Default)]
struct Count {
    open: usize,
    waiting: usize,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    per_addr: HashMap<AddrKey, Count>,
}

/// Admits connections to one door within its [`ConnLimits`].
#[derive(Debug)]
pub struct Gate {
    door: Door,
    limits: ConnLimits,
    state: Mutex<State>,
    freed: Notify,
}

impl Gate {
    pub fn new(door: Door, limits: ConnLimits) -> Arc<Gate> {
        Arc::new(Gate {
            door,
            limits,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
        })
    }

    pub fn door(&self) -> Door {
        self.door
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        (self.limits.exempt_loopback && ip.is_loopback()) || self.limits.exempt.contains(&ip)
    }

    /// Takes a slot for a connection from `ip`, waiting up to [`ConnLimits::per_ip_wait`]
    /// when its address is at the limit.
    pub async fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let key = AddrKey::of(ip);
        let exempt = self.exempt(ip);
        let deadline = tokio::time::Instant::now() + self.limits.per_ip_wait;
        let mut waiting = false;
        loop {
            // Registered before the check, so a release between the check and the wait
            // is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_admit(key, exempt, &mut waiting) {
                Some(Ok(permit)) => return Ok(permit),
                Some(Err(why)) => return Err(why),
                None => {}
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                let mut st = self.lock();
                if let Some(c) = st.per_addr.get_mut(&key) {
                    c.waiting = c.waiting.saturating_sub(1);
                    if c.open == 0 && c.waiting == 0 {
                        st.per_addr.remove(&key);
                    }
                }
                return Err(Refused::PerAddress);
            }
        }
    }

    /// One admission attempt: a permit, a refusal, or `None` to wait (then `waiting` is
    /// set and the caller is counted as a waiter of `key`).
    fn try_admit(
        self: &Arc<Self>,
        key: AddrKey,
        exempt: bool,
        waiting: &mut bool,
    ) -> Option<Result<Permit, Refused>> {
        let mut st = self.lock();
        if st.total >= self.limits.max_connections {
            if *waiting && let Some(c) = st.per_addr.get_mut(&key) {
                c.waiting = c.waiting.saturating_sub(1);
                if c.open == 0 && c.waiting == 0 {
                    st.per_addr.remove(&key);
                }
            }
            return Some(Err(Refused::Total));
        }
        if exempt {
            st.total += 1;
            self.gauge(st.total);
            return Some(Ok(self.permit(None)));
        }
        let max = self.limits.max_per_ip;
        let wait_allowed = !self.limits.per_ip_wait.is_zero();
        let c = st.per_addr.entry(key).or_default();
        if c.open < max {
            c.open += 1;
            if *waiting {
                c.waiting = c.waiting.saturating_sub(1);
            }
            st.total += 1;
            self.gauge(st.total);
            return Some(Ok(self.permit(Some(key))));
        }
        if !*waiting {
            // At most as many waiters as open connections: beyond twice the limit, an
            // address is refused without costing a wait.
            if !wait_allowed || c.waiting >= max {
                if c.open == 0 && c.waiting == 0 {
                    st.per_addr.remove(&key);
                }
                return Some(Err(Refused::PerAddress));
            }
            c.waiting += 1;
            *waiting = true;
        }
        None
    }

    fn permit(self: &Arc<Self>, key: Option<AddrKey>) -> Permit {
        Permit {
            gate: Some(self.clone()),
            key,
        }
    }

    fn gauge(&self, total: usize) {
        metrics::gauge!("mailroom_connections_open", "door" => self.door.as_str())
            .set(total as f64);
    }

    fn release(&self, key: Option<AddrKey>) {
        {
            let mut st = self.lock();
            st.total = st.total.saturating_sub(1);
            self.gauge(st.total);
            if let Some(key) = key
                && let Some(c) = st.per_addr.get_mut(&key)
            {
                c.open = c.open.saturating_sub(1);
                if c.open == 0 && c.waiting == 0 {
                    st.per_addr.remove(&key);
                }
            }
        }
        self.freed.notify_waiters();
    }
}

/// A connection's slot; given back on drop, or earlier with [`Permit::release`].
#[derive(Debug)]
pub struct Permit {
    gate: Option<Arc<Gate>>,
    key: Option<AddrKey>,
}

impl Permit {
    /// Gives the slot back now: the session is over by protocol (after `QUIT`), and the
    /// peer may open its next connection before this task has finished closing this one.
    pub fn release(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release(self.key);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn ipv6_is_counted_by_its_64() {
        assert_eq!(
            AddrKey::of(ip("2001:db8:1:2:aaaa::1")),
            AddrKey::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            AddrKey::of(ip("2001:db8:1:2::1")),
            AddrKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            AddrKey::of(ip("::ffff:192.0.2.1")),
            AddrKey::of(ip("192.0.2.1"))
        );
        assert_eq!(AddrKey::of(ip("2001:db8::1")).to_string(), "2001:db8::/64");
    }

    #[tokio::test]
    async fn per_address_and_total_limits() {
        let mut limits = ConnLimits::new(3, 2);
        limits.per_ip_wait = Duration::ZERO;
        let gate = Gate::new(Door::Smtp, limits);
        let a1 = gate.admit(ip("192.0.2.1")).await.expect("first");
        let _a2 = gate.admit(ip("192.0.2.1")).await.expect("second");
        assert_eq!(
            gate.admit(ip("192.0.2.1")).await.unwrap_err(),
            Refused::PerAddress
        );
        let _b1 = gate.admit(ip("192.0.2.2")).await.expect("another address");
        assert_eq!(
            gate.admit(ip("192.0.2.3")).await.unwrap_err(),
            Refused::Total
        );
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _a3 = gate.admit(ip("192.0.2.1")).await.expect("a slot came back");
    }

    #[tokio::test]
    async fn a_waiting_connection_gets_the_next_free_slot() {
        let mut limits = ConnLimits::new(100, 1);
        limits.per_ip_wait = Duration::from_secs(5);
        let gate = Gate::new(Door::Smtp, limits);
        let mut first = gate.admit(ip("192.0.2.1")).await.expect("first");
        let g = gate.clone();
        let second = tokio::spawn(async move { g.admit(ip("192.0.2.1")).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A third one would be beyond twice the limit: refused without waiting.
        assert_eq!(
            gate.admit(ip("192.0.2.1")).await.unwrap_err(),
            Refused::PerAddress
        );
        first.release();
        let second = second
            .await
            .expect("the task")
            .expect("admitted after the release");
        assert_eq!(gate.open(), 1);
        drop(second);
        assert_eq!(gate.open(), 0);
        assert!(gate.lock().per_addr.is_empty(), "no entry left behind");
    }

    #[tokio::test]
    async fn a_wait_ends_with_a_refusal() {
        let mut limits = ConnLimits::new(100, 1);
        limits.per_ip_wait = Duration::from_millis(30);
        let gate = Gate::new(Door::Imap, limits);
        let _first = gate.admit(ip("192.0.2.1")).await.expect("first");
        assert_eq!(
            gate.admit(ip("192.0.2.1")).await.unwrap_err(),
            Refused::PerAddress
        );
        assert_eq!(
            gate.lock().per_addr[&AddrKey::of(ip("192.0.2.1"))].waiting,
            0
        );
    }

    #[tokio::test]
    async fn loopback_can_be_exempt_from_the_per_address_limit() {
        let mut limits = ConnLimits::new(3, 1);
        limits.exempt_loopback = true;
        let gate = Gate::new(Door::Imap, limits);
        let _a = gate.admit(ip("127.0.0.1")).await.expect("one");
        let _b = gate.admit(ip("127.0.0.1")).await.expect("two");
        let _c = gate.admit(ip("::1")).await.expect("three");
        assert_eq!(
            gate.admit(ip("127.0.0.1")).await.unwrap_err(),
            Refused::Total
        );
    }
}
