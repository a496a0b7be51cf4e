//! `[login]` in the file: the one throttle for wrong passwords at every door (HTTP token
//! grants, SMTP AUTH, IMAP, POP3). See docs/security.md, "Logins".

use std::time::Duration;

use anyhow::bail;
use mailroom_services::LoginThrottlePolicy;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLogin {
    failures_per_address: Option<u32>,
    failures_per_address_user: Option<u32>,
    failure_window_secs: Option<u64>,
}

pub(super) fn resolve(file: &FileLogin) -> anyhow::Result<LoginThrottlePolicy> {
    let d = LoginThrottlePolicy::default();
    let p = LoginThrottlePolicy {
        failures_per_address: file.failures_per_address.unwrap_or(d.failures_per_address),
        failures_per_address_user: file
            .failures_per_address_user
            .unwrap_or(d.failures_per_address_user),
        window: file
            .failure_window_secs
            .map(Duration::from_secs)
            .unwrap_or(d.window),
    };
    if p.failures_per_address == 0 || p.failures_per_address_user == 0 {
        bail!("login.failures_per_address and login.failures_per_address_user must be at least 1");
    }
    if !(1..=86_400).contains(&p.window.as_secs()) {
        bail!("login.failure_window_secs must be between 1 and 86400");
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let p = resolve(&FileLogin::default()).unwrap();
        assert_eq!(p, LoginThrottlePolicy::default());
        let f: FileLogin = toml::from_str("failures_per_address_user = 3\n").unwrap();
        assert_eq!(resolve(&f).unwrap().failures_per_address_user, 3);
        let f: FileLogin = toml::from_str("failure_window_secs = 0\n").unwrap();
        assert!(resolve(&f).is_err());
        assert!(toml::from_str::<FileLogin>("failures_per_user = 3\n").is_err());
    }
}
