//! The address guard (SSRF protection): a customer-supplied URL or broker address must
//! not reach Herald's own network. Every address a host resolves to is checked, after
//! DNS resolution and at connect time; only addresses that pass are connected to.
//!
//! Refused unless an explicit allow-list admits them: loopback, private (RFC 1918),
//! carrier-grade NAT, link-local (and so the cloud metadata endpoint 169.254.169.254),
//! unique-local IPv6 (and so `fd00:ec2::254`), multicast, unspecified, broadcast,
//! documentation and benchmarking ranges, and IPv6 forms that embed one of those IPv4
//! addresses.
//!
//! An IPv6 address that embeds an IPv4 address at a fixed place is judged as that
//! IPv4 address: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, SIIT
//! `::ffff:0:a.b.c.d` (RFC 6145), the well-known NAT64 prefix `64:ff9b::/96`
//! (RFC 6052, which forbids it for non-global IPv4 addresses anyway) and 6to4
//! `2002:aabb:ccdd::/48`. A public IPv4 address stays reachable in those spellings, an
//! internal one is refused in all of them. Two prefixes are refused whole instead:
//! Teredo `2001::/32` (the client address is obfuscated and the server address is a
//! relay's: no delivery target lives behind one) and the local-use NAT64 prefix
//! `64:ff9b:1::/48` (RFC 8215: it translates into the operator's own network, and its
//! prefix length, hence where the IPv4 address sits, is the operator's choice).
//!
//! A refusal of a *name* never shows what the name resolved to (an internal address is
//! itself something to keep from the person who typed the name); the refusal of an
//! address literal names the address, which its author typed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An IP network, `addr/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a host network).
    pub fn parse(raw: &str) -> Option<Self> {
        let (addr, prefix) = match raw.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = raw.trim().parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why an address was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The address.
    pub addr: IpAddr,
    /// Which kind of range it is in.
    pub range: &'static str,
    /// The name that resolved to `addr`, when it came from DNS: the message then names
    /// the name and the range, never the address.
    pub name: Option<String>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(
                f,
                "{name} resolves to an address Herald does not deliver to ({} range)",
                self.range
            ),
            None => write!(
                f,
                "{} is a {} address, which deliveries may not reach",
                self.addr, self.range
            ),
        }
    }
}

/// The guard's configuration: which otherwise-refused networks are allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressGuard {
    allow: Vec<Cidr>,
}

impl AddressGuard {
    /// A guard that refuses every internal range.
    pub fn strict() -> Self {
        Self::default()
    }

    /// A guard that admits these networks despite their range (the dev server and
    /// tests admit `127.0.0.1/32` this way; the guard itself stays on).
    pub fn allowing(allow: Vec<Cidr>) -> Self {
        Self { allow }
    }

    /// Parses `HERALD_ALLOW_PRIVATE_CIDRS`-style text: CIDRs separated by commas.
    pub fn from_list(raw: &str) -> Result<Self, String> {
        let allow = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Cidr::parse(s).ok_or_else(|| format!("{s:?} is not a CIDR")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { allow })
    }

    /// Checks one address.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        match internal_range(ip) {
            None => Ok(()),
            Some(_) if self.allow.iter().any(|c| c.contains(ip)) => Ok(()),
            Some(range) => Err(Refused {
                addr: ip,
                range,
                name: None,
            }),
        }
    }

    /// Checks the addresses `name` resolved to: all of them pass, or the name is
    /// refused. A host whose addresses are partly internal is refused whole: a name
    /// that resolves to an internal address is never a legitimate delivery target. The
    /// refusal names `name`, not the address.
    pub fn filter(&self, name: &str, addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, Refused> {
        for a in addrs {
            self.check(a.ip()).map_err(|r| Refused {
                name: Some(name.to_owned()),
                ..r
            })?;
        }
        Ok(addrs.to_vec())
    }
}

const V4_RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
];

const V6_RANGES: &[(&str, &str)] = &[
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("100::/64", "discard"),
    ("2001::/32", "Teredo"),
    ("2001:db8::/32", "documentation"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("fc00::/7", "unique-local (cloud metadata)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// The IPv4 address an IPv6 address embeds, for the forms that route to IPv4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated) and
        // ::ffff:0:a.b.c.d (SIIT, RFC 6145)
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0, 0, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        // 64:ff9b::a.b.c.d (well-known NAT64; the local-use 64:ff9b:1::/48 is refused
        // whole)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:aabb:ccdd::/48 (6to4)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    if ip == Ipv4Addr::BROADCAST {
        return Some("broadcast");
    }
    V4_RANGES
        .iter()
        .find(|(net, _)| Cidr::parse(net).is_some_and(|c| c.contains(IpAddr::V4(ip))))
        .map(|(_, kind)| *kind)
}

/// The kind of internal range `ip` is in, or `None` for a public address.
pub fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => {
            if let Some(kind) = V6_RANGES
                .iter()
                .find(|(net, _)| Cidr::parse(net).is_some_and(|c| c.contains(ip)))
                .map(|(_, kind)| *kind)
            {
                return Some(kind);
            }
            embedded_v4(v6).and_then(v4_range)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn internal_addresses_of_every_kind_are_refused() {
        let refused = [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.10",
            "198.18.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001:db8::1",
            "fec0::1",
        ];
        let guard = AddressGuard::strict();
        for a in refused {
            assert!(guard.check(ip(a)).is_err(), "{a} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let guard = AddressGuard::strict();
        for a in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(guard.check(ip(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn siit_teredo_and_local_use_nat64_addresses_are_refused() {
        let guard = AddressGuard::strict();
        for (a, range) in [
            // SIIT (::ffff:0:a.b.c.d) embedding internal IPv4 addresses
            ("::ffff:0:7f00:1", "loopback"),
            ("::ffff:0:a00:1", "private"),
            ("::ffff:0:a9fe:a9fe", "link-local (cloud metadata)"),
            // Teredo: refused whatever it embeds
            ("2001::1", "Teredo"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            // local-use NAT64: refused whatever it embeds, even a public address
            ("64:ff9b:1::808:808", "local-use NAT64"),
            ("64:ff9b:1:ffff:ffff::1", "local-use NAT64"),
        ] {
            assert_eq!(guard.check(ip(a)).map_err(|r| r.range), Err(range), "{a}");
        }
    }

    #[test]
    fn an_ipv4_address_embedded_at_a_fixed_place_is_judged_as_that_ipv4_address() {
        let guard = AddressGuard::strict();
        // mapped, compatible, SIIT, well-known NAT64 and 6to4 forms of one address
        for (internal, public) in [
            ("::ffff:10.0.0.1", "::ffff:8.8.8.8"),
            ("::10.0.0.1", "::8.8.8.8"),
            ("::ffff:0:10.0.0.1", "::ffff:0:8.8.8.8"),
            ("64:ff9b::10.0.0.1", "64:ff9b::8.8.8.8"),
            ("2002:a00:1::1", "2002:808:808::1"),
        ] {
            assert_eq!(
                guard.check(ip(internal)).map_err(|r| r.range),
                Err("private"),
                "{internal}"
            );
            assert_eq!(guard.check(ip(public)), Ok(()), "{public}");
        }
        // the networks just outside the SIIT and Teredo prefixes are not caught
        assert_eq!(guard.check(ip("::ffff:1:a00:1")), Ok(()));
        assert_eq!(guard.check(ip("2001:1::1")), Ok(()));
        assert_eq!(guard.check(ip("64:ff9b:2::a00:1")), Ok(()));
    }

    #[test]
    fn the_allow_list_admits_exactly_its_networks() {
        let guard = AddressGuard::from_list("127.0.0.1/32, 10.1.0.0/16").expect("list");
        assert_eq!(guard.check(ip("127.0.0.1")), Ok(()));
        assert!(guard.check(ip("127.0.0.2")).is_err());
        assert_eq!(guard.check(ip("10.1.200.3")), Ok(()));
        assert!(guard.check(ip("10.2.0.1")).is_err());
        assert!(guard.check(ip("::1")).is_err());
        assert!(AddressGuard::from_list("10.0.0.0/33").is_err());
        assert!(AddressGuard::from_list("nope").is_err());
        assert_eq!(
            AddressGuard::from_list("").expect("empty"),
            AddressGuard::strict()
        );
    }

    #[test]
    fn a_host_with_any_internal_address_is_refused_whole() {
        let guard = AddressGuard::strict();
        let mixed = [
            SocketAddr::from(([93, 184, 216, 34], 443)),
            SocketAddr::from(([10, 0, 0, 1], 443)),
        ];
        assert_eq!(
            guard
                .filter("mixed.test", &mixed)
                .expect_err("refused")
                .addr,
            ip("10.0.0.1")
        );
        assert_eq!(
            guard
                .filter("public.test", &mixed[..1])
                .expect("public")
                .len(),
            1
        );
    }

    #[test]
    fn refusals_name_the_range() {
        let err = AddressGuard::strict()
            .check(ip("169.254.169.254"))
            .expect_err("refused");
        assert_eq!(err.to_string(), "169.254.169.254 is a link-local (cloud metadata) address, which deliveries may not reach");
    }

    #[test]
    fn a_refused_name_is_named_with_its_range_but_not_the_address_it_resolved_to() {
        let resolved = [SocketAddr::from(([10, 1, 2, 3], 443))];
        let err = AddressGuard::strict()
            .filter("hooks.example.com", &resolved)
            .expect_err("refused");
        assert_eq!(err.addr, ip("10.1.2.3"));
        assert_eq!(
            err.to_string(),
            "hooks.example.com resolves to an address Herald does not deliver to (private range)"
        );
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c = Cidr::parse("192.168.0.0/16").expect("cidr");
        assert!(c.contains(ip("192.168.44.1")));
        assert!(!c.contains(ip("192.169.0.1")));
        assert!(!c.contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").expect("all").contains(ip("::1")));
        assert_eq!(
            Cidr::parse("::1"),
            Some(Cidr {
                addr: ip("::1"),
                prefix: 128
            })
        );
    }
}

#[cfg(test)]
mod properties {
    //! The SSRF decision under every spelling of an address: however an IPv4 address
    //! is written in a URL (dotted, decimal, hex, octal, IPv4-mapped, SIIT or NAT64 IPv6),
    //! an internal one is refused. Checks decisions only: nothing connects.
    //! `PROPTEST_CASES` raises the case count (`make fuzz`).

    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000)
    }

    /// The host of `http://{host}/` as the URL parser (and so the client) sees it.
    fn host_ip(host: &str) -> Option<IpAddr> {
        match url::Url::parse(&format!("http://{host}/")).ok()?.host()? {
            url::Host::Ipv4(v4) => Some(v4.into()),
            url::Host::Ipv6(v6) => Some(v6.into()),
            url::Host::Domain(_) => None,
        }
    }

    /// Interesting addresses more often than uniform sampling would give them.
    fn v4() -> impl Strategy<Value = Ipv4Addr> {
        prop_oneof![
            any::<u32>().prop_map(Ipv4Addr::from),
            (
                prop::sample::select(vec![0u8, 10, 100, 127, 169, 172, 192, 198, 224, 255]),
                any::<[u8; 3]>()
            )
                .prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn every_spelling_of_an_internal_ipv4_address_is_refused(v4 in v4()) {
            let guard = AddressGuard::strict();
            let n = u32::from(v4);
            let [a, b, c, d] = v4.octets();
            let internal = internal_range(v4.into()).is_some();
            for form in [
                v4.to_string(),
                n.to_string(),
                format!("0x{n:x}"),
                format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
                format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
                format!("{a}.{}", (u32::from(b) << 16) | (u32::from(c) << 8) | u32::from(d)),
            ] {
                let ip = host_ip(&form);
                prop_assert_eq!(ip, Some(IpAddr::V4(v4)), "{}", form);
                prop_assert_eq!(guard.check(IpAddr::V4(v4)).is_err(), internal, "{}", form);
            }
            if internal {
                let mapped = Ipv6Addr::from(0xffff_0000_0000u128 | u128::from(n));
                let nat64 = Ipv6Addr::from((0x64_ff9bu128 << 96) | u128::from(n));
                let siit = Ipv6Addr::from(0xffff_0000_0000_0000u128 | u128::from(n));
                for v6 in [mapped, nat64, siit] {
                    let ip = host_ip(&format!("[{v6}]"));
                    prop_assert_eq!(ip, Some(IpAddr::V6(v6)));
                    prop_assert!(guard.check(IpAddr::V6(v6)).is_err(), "{}", v6);
                }
            }
        }

        #[test]
        fn a_resolved_set_with_any_internal_address_is_refused_whole(
            addrs in prop::collection::vec(v4(), 1..6),
        ) {
            let guard = AddressGuard::strict();
            let sockets: Vec<SocketAddr> = addrs.iter().map(|a| SocketAddr::new((*a).into(), 443)).collect();
            let any_internal = addrs.iter().any(|a| internal_range((*a).into()).is_some());
            match guard.filter("any.test", &sockets) {
                Err(_) => prop_assert!(any_internal),
                Ok(kept) => {
                    prop_assert!(!any_internal);
                    prop_assert_eq!(kept, sockets);
                }
            }
        }
    }
}
