//! One throttle for wrong passwords at every door: `POST /v1/auth/token`, SMTP AUTH, IMAP
//! LOGIN/AUTHENTICATE and POP3 USER/PASS/AUTH all ask it before they check a password.
//!
//! Failures are counted twice: per client address (an IPv4 address, or an IPv6 /64, which
//! is what one host or one customer of a provider holds), and per client address *and*
//! user name together. There is deliberately no count per user name alone: with one, a
//! stranger who fails as a real user locks that user out from everywhere. With these two,
//! a guesser is slowed at their own address, a real user who mistypes is slowed only at
//! theirs, and a success forgets that address's failures for that user.
//!
//! Guessing one user's password from many addresses is bounded by the per-address count
//! of each address, and made expensive by argon2id on a bounded pool
//! ([`Services::hash_work`](crate::Services::hash_work)).

use std::net::IpAddr;
use std::time::Duration;

use crate::ratelimit::{RateLimiter, RateRule};

/// How many wrong passwords are allowed in a window (`[login]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottlePolicy {
    /// Wrong passwords from one client address (IPv6: its /64), any user names.
    pub failures_per_address: u32,
    /// Wrong passwords from one client address for one user name.
    pub failures_per_address_user: u32,
    /// The window both counts live in; a throttled client waits at most this long.
    pub window: Duration,
}

impl Default for LoginThrottlePolicy {
    fn default() -> Self {
        LoginThrottlePolicy {
            failures_per_address: 30,
            failures_per_address_user: 5,
            window: Duration::from_secs(900),
        }
    }
}

/// A login refused before its password was looked at: too many failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// When the client may try again (`Retry-After` over HTTP), at least a second.
    pub retry_after: Duration,
}

/// The counters behind [`LoginThrottlePolicy`]. One per process, shared by every door.
#[derive(Debug)]
pub struct LoginThrottle {
    policy: LoginThrottlePolicy,
    failures: RateLimiter,
}

impl LoginThrottle {
    pub fn new(policy: LoginThrottlePolicy) -> LoginThrottle {
        LoginThrottle {
            policy,
            failures: RateLimiter::new(),
        }
    }

    fn per_address(&self) -> RateRule {
        RateRule {
            limit: self.policy.failures_per_address,
            window: self.policy.window,
        }
    }

    fn per_address_user(&self) -> RateRule {
        RateRule {
            limit: self.policy.failures_per_address_user,
            window: self.policy.window,
        }
    }

    /// Whether a login from `client` as `user` at `door` (`http`, `smtp`, `imap`, `pop3`)
    /// may have its password checked now. A refusal counts in
    /// `mailroom_refusals_total{door, reason="login_throttled"}`.
    pub fn admit(&self, door: &'static str, client: IpAddr, user: &str) -> Result<(), Throttled> {
        let (address, address_user) = keys(client, user);
        let wait = [
            self.failures.exhausted_for(&address, self.per_address()),
            self.failures
                .exhausted_for(&address_user, self.per_address_user()),
        ]
        .into_iter()
        .flatten()
        .max();
        match wait {
            Some(retry_after) => {
                metrics::counter!("mailroom_refusals_total", "door" => door, "reason" => "login_throttled")
                    .increment(1);
                Err(Throttled { retry_after })
            }
            None => Ok(()),
        }
    }

    /// A wrong password (or unknown user) from `client` as `user`.
    pub fn failed(&self, client: IpAddr, user: &str) {
        let (address, address_user) = keys(client, user);
        self.failures.check(&address, self.per_address());
        self.failures.check(&address_user, self.per_address_user());
    }

    /// A correct password: this address's failures for this user are forgotten (its
    /// failures for other names still count).
    pub fn succeeded(&self, client: IpAddr, user: &str) {
        let (_, address_user) = keys(client, user);
        self.failures.forget(&address_user);
    }
}

/// The address a client is counted by: IPv4 as is (an IPv4-mapped IPv6 address is its
/// IPv4 address), IPv6 by its /64, since one host is usually given a whole /64.
pub fn client_network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

fn keys(client: IpAddr, user: &str) -> (String, String) {
    let network = client_network(client);
    let user = user.trim().to_ascii_lowercase();
    (
        format!("login-fail:addr:{network}"),
        format!("login-fail:addr-user:{network}:{user}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LoginThrottlePolicy {
        LoginThrottlePolicy {
            failures_per_address: 4,
            failures_per_address_user: 2,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_stranger_cannot_lock_a_user_out_from_another_address() {
        let t = LoginThrottle::new(policy());
        let stranger: IpAddr = "192.0.2.7".parse().unwrap();
        let owner: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..2 {
            assert!(t.admit("test", stranger, "alice@example.com").is_ok());
            t.failed(stranger, "alice@example.com");
        }
        let refused = t.admit("test", stranger, "Alice@example.com").unwrap_err();
        assert!(refused.retry_after > Duration::from_secs(50));
        assert!(t.admit("test", owner, "alice@example.com").is_ok());
        // The stranger may still try other names, up to the per-address count.
        for _ in 0..2 {
            assert!(t.admit("test", stranger, "bob@example.com").is_ok());
            t.failed(stranger, "bob@example.com");
        }
        assert!(t.admit("test", stranger, "carol@example.com").is_err());
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let t = LoginThrottle::new(policy());
        for i in 0..4 {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            t.failed(ip, &format!("user{i}"));
        }
        assert!(
            t.admit("test", "2001:db8:1:2:ffff::1".parse().unwrap(), "x")
                .is_err()
        );
        assert!(
            t.admit("test", "2001:db8:1:3::1".parse().unwrap(), "x")
                .is_ok()
        );
        assert_eq!(
            client_network("::ffff:192.0.2.9".parse().unwrap()),
            "192.0.2.9"
        );
    }

    #[test]
    fn a_success_forgets_that_users_failures_at_that_address() {
        let t = LoginThrottle::new(policy());
        let ip: IpAddr = "192.0.2.8".parse().unwrap();
        t.failed(ip, "dave");
        t.succeeded(ip, "dave");
        t.failed(ip, "dave");
        assert!(t.admit("test", ip, "dave").is_ok());
        t.failed(ip, "dave");
        assert!(t.admit("test", ip, "dave").is_err());
    }
}
