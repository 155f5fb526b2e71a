//! The names and numbers by which Strait recognises what it owns in the kernel.

use std::net::Ipv4Addr;

/// The route protocol number on every route Strait installs (`ip route ... proto 83`).
pub const ROUTE_PROTOCOL: u8 = 83;

/// The gateway every pod routes through; the host veth answers for it.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// Every host-side veth Strait creates starts with this.
pub const HOST_VETH_PREFIX: &str = "st";

const HASH_HEX_DIGITS: usize = 12;

/// The host-side veth name of an attachment: `st` and 12 hex digits of a stable hash of
/// (network, container id, interface) — 14 characters, within the kernel's 15.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bit: stable across releases and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [network, container_id, ifname] {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let hex = format!("{hash:016x}");
    format!("{HOST_VETH_PREFIX}{}", &hex[..HASH_HEX_DIGITS])
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
