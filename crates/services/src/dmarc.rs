//! What a DMARC result does to an inbound message (RFC 7489 §6.7, RFC 9989 §5): the author
//! domain's policy, as far as the operator lets it decide.
//!
//! - Only a `fail` is acted on. `temperror` and `permerror` (a DNS server past the time
//!   budget, a broken record) never refuse or quarantine anything: fail-open, because a
//!   slow resolver must not cost anyone their mail, and the verdict is still recorded for
//!   the reader (`extracted.authenticated` is false).
//! - `p=reject` refuses the message at the end of DATA (`550 5.7.1`), `p=quarantine` files
//!   it in the recipient's Junk mailbox, `p=none` only records.
//! - `pct` is not applied: the checker (mail-auth, which implements RFC 9989, DMARCbis)
//!   does not parse it, and DMARCbis replaced it with `t=y` (test mode), which the checker
//!   applies by lowering the policy one step (reject → quarantine → none).
//! - A message with several `From` header fields has no one author domain; the checker
//!   exempts it, which would let a domain the sender controls decide. It is treated as
//!   failing under `p=reject` (docs/decisions.md).

use serde::{Deserialize, Serialize};

/// The error code of a message refused for its DMARC policy (SMTP `550 5.7.1`).
pub const DMARC_REJECTED: &str = "DMARC_REJECTED";

/// How far the operator lets DMARC policies act (`smtp.dmarc_enforcement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmarcEnforcement {
    /// `p=reject` refuses, `p=quarantine` files in Junk.
    #[default]
    Enforce,
    /// Both `p=reject` and `p=quarantine` file in Junk; nothing is refused.
    QuarantineOnly,
    /// Results are recorded only.
    Monitor,
}

impl DmarcEnforcement {
    pub const NAMES: [&'static str; 3] = ["enforce", "quarantine-only", "monitor"];
}

impl std::str::FromStr for DmarcEnforcement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "enforce" => Ok(DmarcEnforcement::Enforce),
            "quarantine-only" => Ok(DmarcEnforcement::QuarantineOnly),
            "monitor" => Ok(DmarcEnforcement::Monitor),
            other => Err(format!(
                "{other:?} is not a DMARC enforcement; use one of {}",
                DmarcEnforcement::NAMES.join(", ")
            )),
        }
    }
}

/// The policy the author domain asks for (`p=`, or `sp=`/`np=` for a subdomain, after
/// `t=y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    #[default]
    None,
    Quarantine,
    Reject,
}

impl From<mail_auth::dmarc::Policy> for DmarcPolicy {
    fn from(p: mail_auth::dmarc::Policy) -> Self {
        match p {
            mail_auth::dmarc::Policy::Reject => DmarcPolicy::Reject,
            mail_auth::dmarc::Policy::Quarantine => DmarcPolicy::Quarantine,
            mail_auth::dmarc::Policy::None | mail_auth::dmarc::Policy::Unspecified => {
                DmarcPolicy::None
            }
        }
    }
}

/// What is done with the message (RFC 7489's "disposition").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcDisposition {
    /// Delivered as usual.
    #[default]
    None,
    /// Filed in Junk.
    Quarantine,
    /// Refused at the end of DATA.
    Reject,
}

/// The disposition of a message whose DMARC result is `result` under `policy`.
pub fn disposition(
    result: &str,
    policy: DmarcPolicy,
    enforcement: DmarcEnforcement,
) -> DmarcDisposition {
    if result != "fail" {
        return DmarcDisposition::None;
    }
    match (enforcement, policy) {
        (DmarcEnforcement::Monitor, _) | (_, DmarcPolicy::None) => DmarcDisposition::None,
        (DmarcEnforcement::Enforce, DmarcPolicy::Reject) => DmarcDisposition::Reject,
        (_, DmarcPolicy::Reject | DmarcPolicy::Quarantine) => DmarcDisposition::Quarantine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DmarcDisposition as D;
    use DmarcEnforcement as E;
    use DmarcPolicy as P;

    #[test]
    fn only_a_failure_under_a_policy_acts() {
        for result in ["pass", "none", "temperror", "permerror"] {
            for p in [P::None, P::Quarantine, P::Reject] {
                assert_eq!(disposition(result, p, E::Enforce), D::None, "{result}");
            }
        }
        let table = [
            (E::Enforce, P::Reject, D::Reject),
            (E::Enforce, P::Quarantine, D::Quarantine),
            (E::Enforce, P::None, D::None),
            (E::QuarantineOnly, P::Reject, D::Quarantine),
            (E::QuarantineOnly, P::Quarantine, D::Quarantine),
            (E::QuarantineOnly, P::None, D::None),
            (E::Monitor, P::Reject, D::None),
            (E::Monitor, P::Quarantine, D::None),
        ];
        for (e, p, want) in table {
            assert_eq!(disposition("fail", p, e), want, "{e:?} {p:?}");
        }
    }

    #[test]
    fn enforcement_names_parse() {
        assert_eq!("enforce".parse::<E>(), Ok(E::Enforce));
        assert_eq!("Quarantine-Only".parse::<E>(), Ok(E::QuarantineOnly));
        assert_eq!("monitor".parse::<E>(), Ok(E::Monitor));
        assert!("reject".parse::<E>().is_err());
    }
}
