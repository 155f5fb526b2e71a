//! Address arithmetic shared by pools and blocks: addresses as 128-bit offsets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

/// The address `n` in the family of `like`. `n` must fit that family.
pub(crate) fn from_u128(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// How many addresses `net` holds.
pub(crate) fn size(net: IpNet) -> u128 {
    1u128 << (net.max_prefix_len() - net.prefix_len())
}

/// The offset of `ip` inside `net`, if it is inside.
pub(crate) fn offset_in(net: IpNet, ip: IpAddr) -> Option<u128> {
    net.contains(&ip)
        .then(|| to_u128(ip) - to_u128(net.network()))
}
