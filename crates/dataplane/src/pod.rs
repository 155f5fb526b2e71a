//! One pod attachment: the veth pair and everything on both of its ends.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use strait_netlink::{Link, MacAddr, Netlink, NetlinkError, Route, Scope, TABLE_MAIN};

use crate::error::DataplaneError;
use crate::fault;
use crate::finding::{End, Finding};
use crate::kernel::host_route;
use crate::model::Table;
use crate::naming::{ROUTE_PROTOCOL, families, gateway_v6_on_host, gateways};
use crate::rtnetlink::{Change, Rtnetlink};

/// What one attachment must look like. Built by the agent from the request and the allocation.
/// The namespace itself is passed alongside as a handle; `netns` is its path, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub host_veth: String,
    pub ifname: String,
    pub netns: PathBuf,
    /// The pod's addresses, each a host prefix (/32, /128).
    pub addresses: Vec<IpNet>,
    pub mtu: u32,
    /// The host routing table that holds the pod's host routes.
    pub table: Table,
    /// The MAC of the pod's interface, when Strait chose it (attachments recorded before it
    /// did have the kernel's).
    pub pod_mac: Option<MacAddr>,
}

/// The container's namespace as the agent receives it from the plugin: its handle (where the
/// veth's peer is created) and an rtnetlink socket opened inside it (through which everything
/// in it is changed and read; the agent never enters it).
#[derive(Debug)]
pub struct PodNamespace<R: Rtnetlink = Netlink> {
    pub netns: R::Namespace,
    pub netlink: R,
}

/// The two ends as the kernel reported them once created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLinks {
    pub host: Link,
    pub pod: Link,
}

fn route(dst: IpNet, gateway: Option<IpAddr>, oif: u32, scope: Scope) -> Route {
    Route {
        dst,
        gateway,
        oif: Some(oif),
        table: TABLE_MAIN,
        protocol: ROUTE_PROTOCOL,
        scope,
        onlink: false,
        nexthop: None,
    }
}

impl PodPlan {
    fn has_ipv6(&self) -> bool {
        self.addresses.iter().any(|a| a.addr().is_ipv6())
    }

    /// The families of the pod's addresses, as `ipv6` flags.
    fn families(&self) -> Vec<bool> {
        families(self.addresses.iter().map(IpNet::addr))
    }

    /// Inside the pod, per family: the default route through the gateway (IPv4's gateway also
    /// gets a link route; IPv6's is link-local, on the link by definition).
    fn pod_routes(&self, pod_index: u32) -> Vec<Route> {
        let mut out = Vec::new();
        for gw in gateways(&self.addresses) {
            let default = match gw {
                IpAddr::V4(_) => {
                    out.push(route(IpNet::from(gw), None, pod_index, Scope::Link));
                    "0.0.0.0/0"
                }
                IpAddr::V6(_) => "::/0",
            };
            out.push(route(
                default.parse().expect("literal"),
                Some(gw),
                pod_index,
                Scope::Universe,
            ));
        }
        out
    }

    /// On the host: each pod address through the host veth.
    fn host_routes(&self, host_index: u32) -> Vec<Route> {
        self.addresses
            .iter()
            .map(|a| host_route(self.table, IpNet::from(a.addr()), host_index))
            .collect()
    }
}

/// A host route as read back, compared with the one Strait writes: the kernel reports IPv6
/// routes with universe scope whatever was written, so only IPv4's scope is compared.
fn same_host_route(have: &Route, want: &Route) -> bool {
    if want.dst.addr().is_ipv6() {
        have.dst == want.dst
            && have.oif == want.oif
            && have.table == want.table
            && have.protocol == want.protocol
            && have.gateway.is_none()
            && have.nexthop.is_none()
    } else {
        have == want
    }
}

/// The routes in `table` of each family (`ipv6` flags).
fn routes_of(
    nl: &mut impl Rtnetlink,
    families: impl IntoIterator<Item = bool>,
    table: u32,
) -> Result<Vec<Route>, DataplaneError> {
    let mut out = Vec::new();
    for ipv6 in families {
        out.extend(nl.routes(ipv6, table)?);
    }
    Ok(out)
}

fn must_exist(link: Option<Link>, name: &str) -> Result<Link, DataplaneError> {
    link.ok_or_else(|| {
        DataplaneError::Netlink(NetlinkError::Decode(format!(
            "link {name} vanished right after it was created"
        )))
    })
}

/// Builds the pod's network. The host end is created up; each side's link, addresses,
/// neighbour and routes then go in one pipelined write. `before_addresses` runs once the veth
/// pair exists and before any address reaches the kernel; its error stops the build. A build
/// that fails leaves what it made for its caller to remove: everything hangs off the host veth,
/// so [`delete_pod`] of it removes it all (the agent's ADD does, in its one rollback).
pub fn add_pod<R: Rtnetlink>(
    host: &mut R,
    plan: &PodPlan,
    ns: &mut PodNamespace<R>,
    before_addresses: impl FnOnce() -> Result<(), DataplaneError>,
) -> Result<PodLinks, DataplaneError> {
    let pod = &mut ns.netlink;
    // Left by an interrupted earlier attempt for this same attachment (the name is its hash);
    // once it is gone, only the pod's interface name can be taken.
    host.delete_link(&plan.host_veth)?;
    host.add_veth(
        &plan.host_veth,
        &plan.ifname,
        &ns.netns,
        plan.mtu,
        plan.pod_mac,
    )
    .map_err(|e| match e {
        e if e.is_exists() => DataplaneError::IfnameTaken {
            ifname: plan.ifname.clone(),
            netns: plan.netns.display().to_string(),
        },
        e if e.is_unsupported() => DataplaneError::KernelFeatureMissing {
            what: "veth interfaces",
            source: e,
        },
        e => e.into(),
    })?;
    fault::inject("after-veth")?;
    let host_link = must_exist(host.link_by_name(&plan.host_veth)?, &plan.host_veth)?;
    let pod_link = must_exist(pod.link_by_name(&plan.ifname)?, &plan.ifname)?;
    let host_mac = host_link.mac.ok_or_else(|| no_mac(&plan.host_veth))?;
    let pod_mac = pod_link.mac.ok_or_else(|| no_mac(&plan.ifname))?;
    before_addresses()?;

    let index = pod_link.index;
    let mut pod_side = vec![Change::SetUp(index)];
    pod_side.extend(
        plan.addresses
            .iter()
            .map(|&address| Change::AddAddress { index, address }),
    );
    pod_side.extend(
        gateways(&plan.addresses)
            .into_iter()
            .map(|ip| Change::SetNeighbour {
                index,
                ip,
                mac: host_mac,
            }),
    );
    pod_side.extend(plan.pod_routes(index).into_iter().map(Change::AddRoute));
    pod.apply_all(pod_side)?;
    fault::inject("after-pod-side")?;

    let index = host_link.index;
    let host_routes = plan.host_routes(index);
    let gateway_address = plan.has_ipv6().then(|| Change::AddAddress {
        index,
        address: gateway_v6_on_host(),
    });
    let host_side = gateway_address
        .into_iter()
        .chain(host_routes.iter().cloned().map(Change::AddRoute))
        .chain(plan.addresses.iter().map(|a| Change::SetNeighbour {
            index,
            ip: a.addr(),
            mac: pod_mac,
        }))
        .collect();
    let results = host.apply(host_side);
    let skip = usize::from(plan.has_ipv6());
    for (i, result) in results.into_iter().enumerate() {
        let route = i.checked_sub(skip).filter(|r| *r < host_routes.len());
        match result {
            // Added, not replaced: a route to the address through another veth is another
            // pod's, and refuses the ADD. The reconciler repairs recorded attachments' host
            // routes, and the record is written beside this work, so it may have put this very
            // route here first: that one is ours.
            Err(e) if e.is_exists() && route.is_some() => {
                let want = &host_routes[route.expect("checked")];
                if !host
                    .routes(want.dst.addr().is_ipv6(), want.table)?
                    .iter()
                    .any(|have| same_host_route(have, want))
                {
                    return Err(e.into());
                }
            }
            other => other?,
        }
    }
    fault::inject("after-host-side")?;
    Ok(PodLinks {
        host: host_link,
        pod: pod_link,
    })
}

fn no_mac(name: &str) -> DataplaneError {
    DataplaneError::Netlink(NetlinkError::Decode(format!(
        "link {name} has no MAC address"
    )))
}

/// Both ends of an attachment as they are now, if both exist.
pub fn pod_links<R: Rtnetlink>(
    host: &mut R,
    plan: &PodPlan,
    pod: &mut R,
) -> Result<Option<PodLinks>, DataplaneError> {
    let Some(host_link) = host.link_by_name(&plan.host_veth)? else {
        return Ok(None);
    };
    Ok(pod.link_by_name(&plan.ifname)?.map(|pod| PodLinks {
        host: host_link,
        pod,
    }))
}

/// Removes the pod's network: deleting the host veth takes its peer, the addresses, routes and
/// neighbours on both ends with it. Repeat-safe.
pub fn delete_pod(host: &mut impl Rtnetlink, host_veth: &str) -> Result<(), DataplaneError> {
    Ok(host.delete_link(host_veth)?)
}

/// Every way the kernel differs from `plan`; empty when the pod's network is intact. `pod` is a
/// socket inside the pod's namespace; without one only the host side is checked, and the
/// namespace's absence is reported.
pub fn check_pod<R: Rtnetlink>(
    host: &mut R,
    plan: &PodPlan,
    pod: Option<&mut R>,
) -> Result<Vec<Finding>, DataplaneError> {
    let mut problems = Vec::new();
    let host_link = host.link_by_name(&plan.host_veth)?;
    let pod_side = match pod {
        Some(pod) => {
            let link = pod.link_by_name(&plan.ifname)?;
            Some((pod, link))
        }
        None => {
            problems.push(Finding::NamespaceGone {
                netns: plan.netns.clone(),
            });
            None
        }
    };
    let pod_mac = pod_side
        .as_ref()
        .and_then(|(_, l)| l.as_ref())
        .and_then(|l| l.mac);

    match &host_link {
        None => problems.push(Finding::HostLinkMissing {
            name: plan.host_veth.clone(),
        }),
        Some(link) => {
            check_link(link, "veth", plan.mtu, End::Host, &mut problems);
            if plan.has_ipv6() && !host.addresses(link.index)?.contains(&gateway_v6_on_host()) {
                problems.push(Finding::GatewayAddressMissing {
                    address: gateway_v6_on_host(),
                    veth: plan.host_veth.clone(),
                });
            }
            let routes = routes_of(host, plan.families(), plan.table.0)?;
            for want in plan.host_routes(link.index) {
                if !routes.iter().any(|have| same_host_route(have, &want)) {
                    problems.push(Finding::HostRouteMissing {
                        dst: want.dst,
                        veth: plan.host_veth.clone(),
                    });
                }
            }
            let neighbours = host.neighbours(link.index)?;
            for address in &plan.addresses {
                check_neighbour(
                    &neighbours,
                    address.addr(),
                    pod_mac,
                    &plan.host_veth,
                    &mut problems,
                );
            }
        }
    }

    if let Some((pod, link)) = pod_side {
        match link {
            None => problems.push(Finding::PodLinkMissing {
                name: plan.ifname.clone(),
                netns: plan.netns.clone(),
            }),
            Some(link) => {
                check_link(&link, "veth", plan.mtu, End::Pod, &mut problems);
                let have = pod.addresses(link.index)?;
                for address in &plan.addresses {
                    if !have.contains(address) {
                        problems.push(Finding::AddressMissing {
                            address: *address,
                            ifname: plan.ifname.clone(),
                        });
                    }
                }
                let routes = routes_of(pod, plan.families(), TABLE_MAIN)?;
                for want in plan.pod_routes(link.index) {
                    if !routes.iter().any(|r| same_route(r, &want)) {
                        problems.push(Finding::PodRouteMissing {
                            dst: want.dst,
                            gateway: want.gateway,
                            ifname: plan.ifname.clone(),
                        });
                    }
                }
                let host_mac = host_link.as_ref().and_then(|l| l.mac);
                let neighbours = pod.neighbours(link.index)?;
                for gw in gateways(&plan.addresses) {
                    check_neighbour(&neighbours, gw, host_mac, &plan.ifname, &mut problems);
                }
            }
        }
    }
    Ok(problems)
}

/// Inside the pod the runtime or the user may have re-added a route with another protocol; what
/// matters is where it goes.
fn same_route(have: &Route, want: &Route) -> bool {
    have.dst == want.dst && have.gateway == want.gateway && have.oif == want.oif
}

fn check_link(link: &Link, kind: &'static str, mtu: u32, end: End, problems: &mut Vec<Finding>) {
    let name = || link.name.clone();
    if link.kind.as_deref() != Some(kind) {
        problems.push(Finding::WrongKind {
            end,
            name: name(),
            kind: link.kind.clone(),
            want: kind,
        });
    }
    if !link.up {
        problems.push(Finding::Down { end, name: name() });
    }
    if link.mtu != mtu {
        problems.push(Finding::WrongMtu {
            end,
            name: name(),
            mtu: link.mtu,
            want: mtu,
        });
    }
}

fn check_neighbour(
    neighbours: &[strait_netlink::Neighbour],
    ip: IpAddr,
    mac: Option<MacAddr>,
    dev: &str,
    problems: &mut Vec<Finding>,
) {
    let found = neighbours.iter().find(|n| n.ip == ip);
    match found {
        Some(n) if n.permanent && (mac.is_none() || n.mac == mac) => {}
        Some(n) => problems.push(Finding::NeighbourWrong {
            ip,
            device: dev.to_string(),
            mac: n.mac,
            permanent: n.permanent,
            want: mac,
        }),
        None => problems.push(Finding::NeighbourMissing {
            ip,
            device: dev.to_string(),
        }),
    }
}
