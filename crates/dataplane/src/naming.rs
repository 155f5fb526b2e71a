//! The names and numbers by which Strait recognises what it owns in the kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use strait_netlink::MacAddr;

/// The route protocol number on every route Strait installs (`ip route ... proto 83`).
pub const ROUTE_PROTOCOL: u8 = 83;

/// The IPv4 gateway every pod routes through; the host veth answers for it.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The IPv6 gateway every pod routes through: a link-local address the host veth holds.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The IPv6 gateway as the host veth holds it.
pub(crate) fn gateway_v6_on_host() -> IpNet {
    IpNet::new(IpAddr::V6(GATEWAY_V6), 64).expect("a /64 fits IPv6")
}

/// The gateway of a pod address's family.
pub fn gateway_for(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => IpAddr::V4(GATEWAY_V4),
        IpAddr::V6(_) => IpAddr::V6(GATEWAY_V6),
    }
}

/// The gateways of a pod with `addresses`: one per family, IPv4's first.
pub fn gateways(addresses: &[IpNet]) -> Vec<IpAddr> {
    families(addresses.iter().map(IpNet::addr))
        .into_iter()
        .map(|ipv6| match ipv6 {
            false => IpAddr::V4(GATEWAY_V4),
            true => IpAddr::V6(GATEWAY_V6),
        })
        .collect()
}

/// The families of `addresses`, each once, as `ipv6` flags, IPv4's first.
pub fn families(addresses: impl IntoIterator<Item = IpAddr>) -> Vec<bool> {
    let mut out: Vec<bool> = addresses.into_iter().map(|a| a.is_ipv6()).collect();
    out.sort();
    out.dedup();
    out
}

/// The link-local address of an interface with MAC `mac` (modified EUI-64, RFC 4291): what a
/// peer's VXLAN device is reached at for IPv6, known from its MAC alone.
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// Every host-side veth Strait creates starts with this.
pub const HOST_VETH_PREFIX: &str = "st";

const HASH_HEX_DIGITS: usize = 12;

/// The host-side veth name of an attachment: `st` and 12 hex digits of a stable hash of
/// (network, container id, interface) — 14 characters, within the kernel's 15.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    let hex = format!("{:016x}", stable_hash(&[network, container_id, ifname]));
    format!("{HOST_VETH_PREFIX}{}", &hex[..HASH_HEX_DIGITS])
}

/// FNV-1a (64 bit) of the parts, each ended by a zero byte: stable across releases and
/// platforms, unlike std's hasher, so names derived from it never change under a running node.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The MAC of a node's VXLAN device for a network: locally administered, unicast, and the same
/// every time the device is created, so peers never need to learn a new one.
pub fn vtep_mac(node: &str, network: &str) -> MacAddr {
    let h = stable_hash(&[node, network]).to_be_bytes();
    MacAddr([0x02, h[0], h[1], h[2], h[3], h[4]])
}

/// The MAC of an attachment's interface in its pod: locally administered, unicast, chosen by
/// Strait (so the host knows it without looking into the pod, and udev's MAC policies never
/// change it) and the same every time the attachment is rebuilt.
pub fn pod_mac(network: &str, container_id: &str, ifname: &str) -> MacAddr {
    let h = stable_hash(&["pod", network, container_id, ifname]).to_be_bytes();
    MacAddr([0x02, h[0], h[1], h[2], h[3], h[4]])
}

/// Is `name` shaped like one of Strait's host veths?
pub fn is_host_veth(name: &str) -> bool {
    name.len() == HOST_VETH_PREFIX.len() + HASH_HEX_DIGITS
        && name.starts_with(HOST_VETH_PREFIX)
        && name[HOST_VETH_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses_follow_modified_eui64() {
        let mac = MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(
            link_local(mac),
            "fe80::42:acff:fe11:2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            gateway_for("10.0.0.1".parse().unwrap()),
            IpAddr::V4(GATEWAY_V4)
        );
        assert_eq!(
            gateway_for("fd00::1".parse().unwrap()),
            IpAddr::V6(GATEWAY_V6)
        );
    }

    #[test]
    fn pod_macs_are_unicast_local_stable_and_distinct() {
        let mac = pod_mac("strait", "abc", "eth0");
        assert_eq!(mac, pod_mac("strait", "abc", "eth0"));
        assert_eq!(mac.0[0], 0x02, "locally administered, unicast");
        assert_ne!(mac, pod_mac("strait", "abc", "eth1"));
        assert_ne!(mac, vtep_mac("abc", "eth0"));
    }

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = host_veth_name("strait", "abc", "eth0");
        assert_eq!(a, host_veth_name("strait", "abc", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(is_host_veth(&a));
        assert_ne!(a, host_veth_name("strait", "abc", "eth1"));
        assert_ne!(a, host_veth_name("other", "abc", "eth0"));
        assert_ne!(
            host_veth_name("ab", "c", "eth0"),
            host_veth_name("a", "bc", "eth0")
        );
        // Pinned so an upgrade never renames existing pods' veths.
        assert_eq!(
            host_veth_name("strait", "c1", "eth0"),
            "st965df23b9966".to_string()
        );
    }

    #[test]
    fn vtep_macs_are_stable_local_unicast_and_distinct() {
        let a = vtep_mac("node-1", "pods");
        assert_eq!(a, vtep_mac("node-1", "pods"));
        assert_eq!(a.0[0], 0x02);
        assert_ne!(a, vtep_mac("node-2", "pods"));
        assert_ne!(a, vtep_mac("node-1", "other"));
    }

    #[test]
    fn recognises_only_its_own_names() {
        for other in [
            "eth0",
            "st",
            "stXYZ123456789",
            "st0123456789abc",
            "veth12345678",
        ] {
            assert!(!is_host_veth(other), "{other}");
        }
    }
}
