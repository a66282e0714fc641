//! The outbound address policy: which IP addresses a fetch of a client-supplied URL may reach.
//!
//! Everything that is not ordinary public unicast is refused: the IANA special-purpose
//! registries (RFC 6890 and updates) for IPv4 and IPv6, plus every IPv6 form that embeds an
//! IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo), because those are ways to
//! reach an internal IPv4 address through an innocent-looking IPv6 one. Loopback is allowed
//! only when explicitly enabled (Moat's own tests on one machine), never by default.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused.
pub type Refusal = &'static str;

/// Checks one address; `Err` names the special-use range it falls in.
pub fn check(ip: IpAddr, allow_loopback: bool) -> Result<(), Refusal> {
    match ip {
        IpAddr::V4(v4) => check_v4(v4, allow_loopback),
        IpAddr::V6(v6) => check_v6(v6, allow_loopback),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn check_v4(ip: Ipv4Addr, allow_loopback: bool) -> Result<(), Refusal> {
    // (network, prefix, name) — IANA IPv4 Special-Purpose Address Registry and friends.
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\" 0.0.0.0/8 (RFC 791)"),
        ([10, 0, 0, 0], 8, "private 10.0.0.0/8 (RFC 1918)"),
        ([100, 64, 0, 0], 10, "shared address space 100.64.0.0/10 (RFC 6598)"),
        ([169, 254, 0, 0], 16, "link-local 169.254.0.0/16 (RFC 3927), incl. cloud metadata"),
        ([172, 16, 0, 0], 12, "private 172.16.0.0/12 (RFC 1918)"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments 192.0.0.0/24 (RFC 6890)"),
        ([192, 0, 2, 0], 24, "documentation 192.0.2.0/24 (RFC 5737)"),
        ([192, 31, 196, 0], 24, "AS112 192.31.196.0/24 (RFC 7535)"),
        ([192, 52, 193, 0], 24, "AMT 192.52.193.0/24 (RFC 7450)"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast 192.88.99.0/24 (RFC 7526)"),
        ([192, 168, 0, 0], 16, "private 192.168.0.0/16 (RFC 1918)"),
        ([192, 175, 48, 0], 24, "direct delegation AS112 192.175.48.0/24 (RFC 7534)"),
        ([198, 18, 0, 0], 15, "benchmarking 198.18.0.0/15 (RFC 2544)"),
        ([198, 51, 100, 0], 24, "documentation 198.51.100.0/24 (RFC 5737)"),
        ([203, 0, 113, 0], 24, "documentation 203.0.113.0/24 (RFC 5737)"),
        ([224, 0, 0, 0], 4, "multicast 224.0.0.0/4 (RFC 5771)"),
        ([240, 0, 0, 0], 4, "reserved 240.0.0.0/4 and broadcast (RFC 1112, RFC 919)"),
    ];
    if in_v4(ip, [127, 0, 0, 0], 8) {
        return if allow_loopback { Ok(()) } else { Err("loopback 127.0.0.0/8 (RFC 1122)") };
    }
    for (net, prefix, name) in RANGES {
        if in_v4(ip, *net, *prefix) {
            return Err(name);
        }
    }
    Ok(())
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

fn check_v6(ip: Ipv6Addr, allow_loopback: bool) -> Result<(), Refusal> {
    const RANGES: &[([u16; 8], u32, &str)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified :: (RFC 4291)"),
        ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped ::ffff:0:0/96 (RFC 4291)"),
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible ::/96 (RFC 4291, deprecated)"),
        ([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, "IPv4-translated ::ffff:0:0:0/96 (RFC 2765)"),
        ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64 64:ff9b::/96 (RFC 6052)"),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local NAT64 64:ff9b:1::/48 (RFC 8215)"),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only 100::/64 (RFC 6666)"),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "IETF protocol assignments 2001::/23 incl. Teredo (RFC 2928, RFC 4380)"),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation 2001:db8::/32 (RFC 3849)"),
        ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4 2002::/16 (RFC 3056)"),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation 3fff::/20 (RFC 9637)"),
        ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "segment routing 5f00::/16 (RFC 9602)"),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local fc00::/7 (RFC 4193)"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local fe80::/10 (RFC 4291)"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local fec0::/10 (RFC 3879, deprecated)"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast ff00::/8 (RFC 4291)"),
    ];
    if ip == Ipv6Addr::LOCALHOST {
        return if allow_loopback { Ok(()) } else { Err("loopback ::1 (RFC 4291)") };
    }
    // An IPv4-mapped loopback (::ffff:127.0.0.1) is refused like every mapped address, even
    // with loopback allowed: tests use plain 127.0.0.1 or ::1.
    for (net, prefix, name) in RANGES {
        if in_v6(ip, *net, *prefix) {
            return Err(name);
        }
    }
    // Only global unicast 2000::/3 is routable on the public internet today.
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return Err("outside global unicast 2000::/3");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        check(s.parse().unwrap(), false).is_err()
    }

    #[test]
    fn ipv4_special_use_is_refused() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(refused(a), "{a} must be refused");
        }
    }

    #[test]
    fn ipv4_public_is_allowed() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "93.184.216.34",
        ] {
            assert!(!refused(a), "{a} must be allowed");
        }
    }

    #[test]
    fn ipv6_special_use_and_embedded_ipv4_are_refused() {
        for a in [
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "::ffff:0:a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "2002:7f00:1::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "4000::1",
        ] {
            assert!(refused(a), "{a} must be refused");
        }
    }

    #[test]
    fn ipv6_public_is_allowed() {
        for a in ["2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "2001:4860:4860::8888"] {
            assert!(!refused(a), "{a} must be allowed");
        }
    }

    #[test]
    fn loopback_only_with_the_setting() {
        assert!(check("127.0.0.1".parse().unwrap(), true).is_ok());
        assert!(check("::1".parse().unwrap(), true).is_ok());
        assert!(check("::ffff:127.0.0.1".parse().unwrap(), true).is_err(), "mapped loopback stays refused");
        assert!(check("10.0.0.1".parse().unwrap(), true).is_err(), "the setting allows loopback only");
    }
}
