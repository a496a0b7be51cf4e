//! Which IP addresses are on the public internet. Outbound connections that a tenant can
//! steer (webhook URLs, the MX hosts of a recipient domain) must not reach the operator's
//! own network: loopback, private ranges, link-local (cloud metadata at 169.254.169.254),
//! CGNAT, and the other special-purpose blocks of the IANA registries (RFC 6890 and its
//! updates). One classification, used by every door that connects out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a public unicast destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialAddress {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16 (RFC 1918), fc00::/7 (unique local, RFC 4193).
    Private,
    /// 169.254/16, fe80::/10 (and the deprecated site-local fec0::/10).
    LinkLocal,
    /// 100.64/10, shared address space of carrier-grade NAT (RFC 6598).
    SharedCgnat,
    /// 0.0.0.0/8 ("this network"), ::/128.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 224/4, ff00::/8.
    Multicast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18/15, 2001:2::/48 (RFC 2544, RFC 5180).
    Benchmarking,
    /// 240/4 and the rest of the special-purpose registries: IETF protocol assignments
    /// (192.0.0/24, 2001::/23), the 6to4 relay and 6to4 (192.88.99/24, 2002::/16),
    /// local-use NAT64 (64:ff9b:1::/48), discard-only (100::/64), IPv4-compatible
    /// (::/96), and everything outside IPv6 global unicast (2000::/3).
    Reserved,
}

impl SpecialAddress {
    /// A short name for diagnostics (`loopback`, `private`, …).
    pub fn name(self) -> &'static str {
        match self {
            SpecialAddress::Loopback => "loopback",
            SpecialAddress::Private => "private",
            SpecialAddress::LinkLocal => "link-local",
            SpecialAddress::SharedCgnat => "shared (CGNAT)",
            SpecialAddress::Unspecified => "unspecified",
            SpecialAddress::Broadcast => "broadcast",
            SpecialAddress::Multicast => "multicast",
            SpecialAddress::Documentation => "documentation",
            SpecialAddress::Benchmarking => "benchmarking",
            SpecialAddress::Reserved => "reserved",
        }
    }
}

impl std::fmt::Display for SpecialAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The address a connection to `ip` really reaches: IPv4-mapped (`::ffff:a.b.c.d`) and
/// well-known NAT64 (`64:ff9b::a.b.c.d`, RFC 6052) addresses carry an IPv4 address, and
/// are judged by it, so that `::ffff:127.0.0.1` is loopback.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                    let [a, b] = s[6].to_be_bytes();
                    let [c, d] = s[7].to_be_bytes();
                    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
                } else {
                    IpAddr::V6(v6)
                }
            }
        },
        v4 => v4,
    }
}

/// `None` for a public unicast address; otherwise which special block `ip` is in.
pub fn special_purpose(ip: IpAddr) -> Option<SpecialAddress> {
    match canonical(ip) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    special_purpose(ip).is_none()
}

fn special_v4(ip: Ipv4Addr) -> Option<SpecialAddress> {
    use SpecialAddress::*;
    let o = ip.octets();
    let class = if ip.is_loopback() {
        Loopback
    } else if ip.is_private() {
        Private
    } else if ip.is_link_local() {
        LinkLocal
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        SharedCgnat
    } else if o[0] == 0 {
        Unspecified
    } else if ip.is_broadcast() {
        Broadcast
    } else if ip.is_multicast() {
        Multicast
    } else if ip.is_documentation() {
        Documentation
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Benchmarking
    } else if o[0] >= 240 || o[..3] == [192, 0, 0] || o[..3] == [192, 88, 99] {
        Reserved
    } else {
        return None;
    };
    Some(class)
}

fn special_v6(ip: Ipv6Addr) -> Option<SpecialAddress> {
    use SpecialAddress::*;
    let s = ip.segments();
    let class = if ip.is_loopback() {
        Loopback
    } else if ip.is_unspecified() {
        Unspecified
    } else if ip.is_multicast() {
        Multicast
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Private
    } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        LinkLocal
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && s[1] < 0x1000) {
        Documentation
    } else if s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0 {
        Benchmarking
    } else if (s[0] & 0xe000) != 0x2000 || (s[0] == 0x2001 && s[1] < 0x0200) || s[0] == 0x2002 {
        // Outside global unicast (this takes ::/96, 64:ff9b:1::/48, 100::/64 and 5f00::/16
        // too), IETF protocol assignments 2001::/23, 6to4.
        Reserved
    } else {
        return None;
    };
    Some(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<SpecialAddress> {
        special_purpose(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn special_blocks_are_named() {
        use SpecialAddress::*;
        for (ip, want) in [
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.254", SharedCgnat),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("255.255.255.255", Broadcast),
            ("224.0.0.1", Multicast),
            ("239.1.1.1", Multicast),
            ("192.0.2.7", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.7", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.1", Benchmarking),
            ("240.0.0.1", Reserved),
            ("192.0.0.8", Reserved),
            ("192.88.99.1", Reserved),
            ("::1", Loopback),
            ("::", Unspecified),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fe80::1", LinkLocal),
            ("fec0::1", LinkLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001:2::1", Benchmarking),
            ("2001::1", Reserved),
            ("2002:c000:0204::1", Reserved),
            ("100::1", Reserved),
            ("64:ff9b:1::1", Reserved),
            ("::7f00:1", Reserved),
            ("5f00::1", Reserved),
            // IPv4 carried in IPv6 is judged as IPv4.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:100.64.0.1", SharedCgnat),
            ("64:ff9b::192.168.0.1", Private),
            ("64:ff9b::7f00:1", Loopback),
        ] {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "198.20.0.1",
            "192.0.3.1",
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "2001:4860:4860::8888",
            "::ffff:93.184.216.34",
            "64:ff9b::8.8.8.8",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }
}
