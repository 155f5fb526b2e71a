//! What CHECK can find wrong with a pod's network, as values: callers can tell one finding from
//! another without reading its text, and each prints as a sentence for the CNI answer.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use strait_netlink::MacAddr;

/// Which end of the veth pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Host,
    Pod,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            End::Host => "host interface",
            End::Pod => "pod interface",
        })
    }
}

/// One way the kernel differs from a pod's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    NamespaceGone {
        netns: PathBuf,
    },
    HostLinkMissing {
        name: String,
    },
    PodLinkMissing {
        name: String,
        netns: PathBuf,
    },
    WrongKind {
        end: End,
        name: String,
        kind: Option<String>,
        want: &'static str,
    },
    Down {
        end: End,
        name: String,
    },
    WrongMtu {
        end: End,
        name: String,
        mtu: u32,
        want: u32,
    },
    GatewayAddressMissing {
        address: IpNet,
        veth: String,
    },
    HostRouteMissing {
        dst: IpNet,
        veth: String,
    },
    AddressMissing {
        address: IpNet,
        ifname: String,
    },
    PodRouteMissing {
        dst: IpNet,
        gateway: Option<IpAddr>,
        ifname: String,
    },
    NeighbourMissing {
        ip: IpAddr,
        device: String,
    },
    /// A neighbour entry that is not permanent, or points elsewhere than `want`.
    NeighbourWrong {
        ip: IpAddr,
        device: String,
        mac: Option<MacAddr>,
        permanent: bool,
        want: Option<MacAddr>,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NamespaceGone { netns } => {
                write!(f, "network namespace {} is gone", netns.display())
            }
            Finding::HostLinkMissing { name } => write!(f, "host interface {name} is missing"),
            Finding::PodLinkMissing { name, netns } => {
                write!(f, "interface {name} is missing in {}", netns.display())
            }
            Finding::WrongKind {
                end,
                name,
                kind,
                want,
            } => write!(
                f,
                "{end} {name} is a {} interface, not {want}",
                kind.as_deref().unwrap_or("plain")
            ),
            Finding::Down { end, name } => write!(f, "{end} {name} is down"),
            Finding::WrongMtu {
                end,
                name,
                mtu,
                want,
            } => {
                write!(f, "{end} {name} has MTU {mtu}, not {want}")
            }
            Finding::GatewayAddressMissing { address, veth } => {
                write!(f, "gateway address {address} is missing on {veth}")
            }
            Finding::HostRouteMissing { dst, veth } => {
                write!(f, "host route {dst} dev {veth} is missing")
            }
            Finding::AddressMissing { address, ifname } => {
                write!(f, "address {address} is missing on {ifname}")
            }
            Finding::PodRouteMissing {
                dst,
                gateway,
                ifname,
            } => write!(
                f,
                "pod route {dst}{} dev {ifname} is missing",
                gateway.map(|g| format!(" via {g}")).unwrap_or_default()
            ),
            Finding::NeighbourMissing { ip, device } => {
                write!(f, "neighbour {ip} on {device} is missing")
            }
            Finding::NeighbourWrong {
                ip,
                device,
                mac,
                permanent,
                want,
            } => write!(
                f,
                "neighbour {ip} on {device} is {}{}, not permanent{}",
                mac.map(|m| m.to_string())
                    .unwrap_or_else(|| "incomplete".into()),
                if *permanent { " permanent" } else { "" },
                want.map(|m| format!(" {m}")).unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_finding_reads_as_a_sentence() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let cases = [
            (
                Finding::NamespaceGone {
                    netns: "/run/netns/p".into(),
                },
                "network namespace /run/netns/p is gone",
            ),
            (
                Finding::HostLinkMissing { name: "st1".into() },
                "host interface st1 is missing",
            ),
            (
                Finding::PodLinkMissing {
                    name: "eth0".into(),
                    netns: "/run/netns/p".into(),
                },
                "interface eth0 is missing in /run/netns/p",
            ),
            (
                Finding::WrongKind {
                    end: End::Host,
                    name: "st1".into(),
                    kind: None,
                    want: "veth",
                },
                "host interface st1 is a plain interface, not veth",
            ),
            (
                Finding::Down {
                    end: End::Pod,
                    name: "eth0".into(),
                },
                "pod interface eth0 is down",
            ),
            (
                Finding::WrongMtu {
                    end: End::Pod,
                    name: "eth0".into(),
                    mtu: 1500,
                    want: 1450,
                },
                "pod interface eth0 has MTU 1500, not 1450",
            ),
            (
                Finding::GatewayAddressMissing {
                    address: "fe80::1/64".parse().unwrap(),
                    veth: "st1".into(),
                },
                "gateway address fe80::1/64 is missing on st1",
            ),
            (
                Finding::HostRouteMissing {
                    dst: "10.0.0.5/32".parse().unwrap(),
                    veth: "st1".into(),
                },
                "host route 10.0.0.5/32 dev st1 is missing",
            ),
            (
                Finding::AddressMissing {
                    address: "10.0.0.5/32".parse().unwrap(),
                    ifname: "eth0".into(),
                },
                "address 10.0.0.5/32 is missing on eth0",
            ),
            (
                Finding::PodRouteMissing {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gateway: Some("169.254.1.1".parse().unwrap()),
                    ifname: "eth0".into(),
                },
                "pod route 0.0.0.0/0 via 169.254.1.1 dev eth0 is missing",
            ),
            (
                Finding::NeighbourMissing {
                    ip: "169.254.1.1".parse().unwrap(),
                    device: "eth0".into(),
                },
                "neighbour 169.254.1.1 on eth0 is missing",
            ),
            (
                Finding::NeighbourWrong {
                    ip: "10.0.0.5".parse().unwrap(),
                    device: "st1".into(),
                    mac: None,
                    permanent: false,
                    want: Some(mac),
                },
                "neighbour 10.0.0.5 on st1 is incomplete, not permanent 02:00:00:00:00:01",
            ),
        ];
        for (finding, sentence) in cases {
            assert_eq!(finding.to_string(), sentence);
        }
    }
}
