//! The SSRF decisions on hostile input: arbitrary bytes as an IPv4 and an IPv6
//! address (`AddressGuard::check`), and as URL text — a registration body's webhook
//! URL (`validate::parse_create`), the connect-time literal check of the webhook
//! client (`WebhookDeliverer::check_literal_host`), and the same text as the host of
//! `http://{text}/` (where the URL parser normalises every IPv4 spelling).
//!
//! Invariants: nothing panics; the guard never allows an address that std's own
//! predicates (or the special-purpose registries std has no stable predicate for)
//! call non-public — loopback, private, link-local, unspecified, broadcast,
//! multicast, documentation, shared (CGNAT), benchmarking, reserved, IETF protocol
//! assignments, unique-local, and IPv4 internal addresses embedded in IPv6 (mapped,
//! compatible, NAT64); a URL literal is allowed exactly when its address is; a
//! registered webhook URL parses, is http(s), has a host and no credentials.
//! Decisions only: nothing resolves or connects.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

use herald_core::delivery::webhook::WebhookDeliverer;
use herald_core::net::guard::AddressGuard;
use herald_core::validate::{parse_create, Policy};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use url::{Host, Url};

fn v4_internal(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o0 == 0 // "this network"
        || o0 >= 240 // reserved
        || (o0 == 100 && (o1 & 0xc0) == 64) // shared address space (CGNAT)
        || (o0 == 198 && (o1 & 0xfe) == 18) // benchmarking
        || (o0 == 192 && o1 == 0 && o2 == 0) // IETF protocol assignments
}

fn v6_internal(a: Ipv6Addr) -> bool {
    let s = a.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let compatible = s[..6] == [0; 6];
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || a.is_unique_local()
        || a.is_unicast_link_local()
        || a.to_ipv4_mapped().is_some_and(v4_internal)
        || ((nat64 || compatible) && v4_internal(tail))
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
}

fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => v4_internal(a),
        IpAddr::V6(a) => v6_internal(a),
    }
}

fn guard() -> &'static AddressGuard {
    static GUARD: OnceLock<AddressGuard> = OnceLock::new();
    GUARD.get_or_init(AddressGuard::strict)
}

fn deliverer() -> &'static WebhookDeliverer {
    static DELIVERER: OnceLock<WebhookDeliverer> = OnceLock::new();
    DELIVERER.get_or_init(|| {
        WebhookDeliverer::new(AddressGuard::strict(), Duration::from_secs(1))
            .expect("the webhook client builds")
    })
}

fn check_address(ip: IpAddr) {
    if guard().check(ip).is_ok() {
        assert!(!internal(ip), "the guard allowed the internal address {ip}");
    }
}

fn check_url(text: &str, url: &Url) {
    let literal: Option<IpAddr> = match url.host() {
        Some(Host::Ipv4(a)) => Some(a.into()),
        Some(Host::Ipv6(a)) => Some(a.into()),
        _ => None,
    };
    let decision = deliverer().check_literal_host(url);
    if let Some(ip) = literal {
        check_address(ip);
        assert_eq!(
            decision.is_ok(),
            guard().check(ip).is_ok(),
            "{text:?}: the literal check and the guard disagree on {ip}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = data.get(..4) {
        let octets: [u8; 4] = bytes.try_into().expect("4 bytes");
        check_address(Ipv4Addr::from(octets).into());
    }
    if let Some(bytes) = data.get(..16) {
        let octets: [u8; 16] = bytes.try_into().expect("16 bytes");
        check_address(Ipv6Addr::from(octets).into());
    }
    let text = String::from_utf8_lossy(data);
    let body = json!({"data": {
        "type": "integration",
        "integration_type": "webhook",
        "name": "fuzz",
        "observes": ["order.paid"],
        "configuration": {"url": text},
    }});
    if parse_create(&body, Policy::STORED).is_ok() {
        let url = Url::parse(&text).expect("a registered webhook URL parses");
        assert!(matches!(url.scheme(), "http" | "https"), "{text:?}");
        assert!(url.host_str().is_some_and(|h| !h.is_empty()), "{text:?}");
        assert!(
            url.username().is_empty() && url.password().is_none(),
            "{text:?}"
        );
    }
    if let Ok(url) = Url::parse(&text) {
        check_url(&text, &url);
    }
    if let Ok(url) = Url::parse(&format!("http://{text}/")) {
        check_url(&text, &url);
    }
});
