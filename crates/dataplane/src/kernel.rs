//! The node model against the kernel: read what Strait owns into an [`Actual`] (every routing
//! table, both families), and carry out a [`plan`](crate::model::plan). Device changes go one by
//! one (later entries need the device's index); nexthop objects, FDB entries, neighbours,
//! routes and rules go as one pipelined batch: removals first, then nexthops, then the entries
//! and routes that use them, then the rules that send traffic to the routes' tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use strait_netlink::Rule as KernelRule;
use strait_netlink::{FdbEntry, Link, NetlinkError, Route, Scope, Vxlan, VxlanSpec};

use crate::error::DataplaneError;
use crate::model::{
    Actual, ActualLink, Family, Fdb, Hop, HostAddress, HostRoute, LinkKind, LinkSpec, Neigh, Op,
    PeerRoute, Rule, Table,
};
use crate::naming::{ROUTE_PROTOCOL, gateway_v6_on_host, is_host_veth};
use crate::overlay::{VXLAN_PORT, is_device};
use crate::rtnetlink::{Change, Rtnetlink};

/// Strait's nexthop ids start here, well clear of ids other software picks by hand.
const NEXTHOP_ID_BASE: u32 = 0x5354_0000;

/// What the kernel holds of ours. `underlay` names the underlay device, through which routed
/// pools' nexthops lead.
pub fn read_actual(nl: &mut impl Rtnetlink, underlay: &str) -> Result<Actual, DataplaneError> {
    let links = nl.links()?;
    let names: BTreeMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut actual = Actual::default();
    let mut ours: BTreeMap<u32, Arc<str>> = BTreeMap::new();
    let mut host_veths: BTreeMap<u32, Arc<str>> = BTreeMap::new();
    for link in &links {
        if is_host_veth(&link.name) {
            let name: Arc<str> = link.name.as_str().into();
            actual.host_veths.insert(Arc::clone(&name), link.index);
            host_veths.insert(link.index, name);
        }
        if !is_device(&link.name) || link.vxlan.is_none() {
            continue;
        }
        ours.insert(link.index, link.name.as_str().into());
        actual.links.insert(
            link.name.clone(),
            ActualLink {
                kind: link_kind(link, &names),
                mac: link.mac,
                mtu: link.mtu,
                up: link.up,
                addresses: nl.addresses(link.index)?,
            },
        );
    }
    if !ours.is_empty() || !host_veths.is_empty() {
        for n in nl.all_neighbours()? {
            let (Some(mac), true) = (n.mac, n.permanent) else {
                continue;
            };
            let (set, device) = match (ours.get(&n.index), host_veths.get(&n.index)) {
                (Some(device), _) => (&mut actual.neighbours, device),
                (None, Some(device)) => (&mut actual.host_neighbours, device),
                (None, None) => continue,
            };
            set.insert(Neigh {
                device: Arc::clone(device),
                ip: n.ip,
                mac,
            });
        }
    }
    if !host_veths.is_empty() {
        let gateway = gateway_v6_on_host();
        for (index, address) in nl.all_ipv6_addresses()? {
            if let (Some(device), true) = (host_veths.get(&index), address == gateway) {
                actual.host_addresses.insert(HostAddress {
                    device: Arc::clone(device),
                    address,
                });
            }
        }
    }
    if !ours.is_empty() {
        for f in nl.all_fdb()? {
            if let Some(device) = ours.get(&f.index) {
                actual.fdb.insert(Fdb {
                    device: Arc::clone(device),
                    mac: f.mac,
                    dst: f.dst,
                });
            }
        }
    }
    let leads_through_ours = |oif: Option<u32>| {
        oif.and_then(|i| names.get(&i))
            .filter(|name| is_device(name) || name.as_str() == underlay)
    };
    let mut by_id: BTreeMap<u32, Hop> = BTreeMap::new();
    for nh in nl.nexthops()? {
        actual.highest_nexthop_id = actual.highest_nexthop_id.max(nh.id);
        if nh.protocol != ROUTE_PROTOCOL {
            continue;
        }
        let (Some(device), Some(gateway)) = (leads_through_ours(nh.oif), nh.gateway) else {
            actual.stray_hops.push(nh.id);
            continue;
        };
        let hop = Hop {
            device: device.as_str().into(),
            gateway,
            onlink: nh.onlink,
        };
        if actual.hops.contains_key(&hop) {
            actual.stray_hops.push(nh.id);
        } else {
            actual.hops.insert(hop.clone(), nh.id);
            by_id.insert(nh.id, hop);
        }
    }
    for family in Family::BOTH {
        for r in nl.all_routes(family == Family::V6)? {
            if r.protocol != ROUTE_PROTOCOL {
                continue;
            }
            let table = Table(r.table);
            if let Some(device) = r.oif.and_then(|i| host_veths.get(&i))
                && r.nexthop.is_none()
            {
                actual.host_routes.insert(HostRoute {
                    table,
                    dst: r.dst,
                    device: Arc::clone(device),
                });
                continue;
            }
            if leads_through_ours(r.oif).is_none() {
                continue;
            }
            match r.nexthop.and_then(|id| by_id.get(&id)) {
                Some(hop) => {
                    actual.routes.insert(PeerRoute {
                        table,
                        dst: r.dst,
                        hop: hop.clone(),
                    });
                }
                None => actual.stray_routes.push((table, r.dst)),
            }
        }
        for r in nl.rules(family == Family::V6)? {
            if r.protocol == ROUTE_PROTOCOL {
                actual.rules.insert(Rule {
                    family,
                    priority: r.priority,
                    iif: r.iif.map(|name| name.as_str().into()),
                    from: r.source,
                    table: Table(r.table),
                });
            }
        }
    }
    Ok(actual)
}

/// A rule as Strait installs it.
fn kernel_rule(rule: &Rule) -> KernelRule {
    KernelRule {
        ipv6: rule.family == Family::V6,
        priority: rule.priority,
        iif: rule.iif.as_deref().map(str::to_string),
        source: rule.from,
        table: rule.table.0,
        protocol: ROUTE_PROTOCOL,
    }
}

/// What one of Strait's links is, if it is one Strait makes as it stands; `names` are the
/// links' names by index.
fn link_kind(link: &Link, names: &BTreeMap<u32, String>) -> Option<LinkKind> {
    let v = link.vxlan.as_ref()?;
    if v.port != VXLAN_PORT || v.learning {
        return None;
    }
    Some(LinkKind::Vxlan {
        vni: v.vni,
        local: v.local?,
        underlay: names.get(&v.underlay?)?.clone(),
    })
}

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct Applied {
    pub done: usize,
    /// One line per operation that failed.
    pub failed: Vec<String>,
    /// Our nexthop objects and their ids afterwards.
    pub hops: BTreeMap<Hop, u32>,
    /// The highest nexthop id (of anyone's) now in the kernel, as far as we know.
    pub highest_nexthop_id: u32,
}

fn index_of(nl: &mut impl Rtnetlink, name: &str) -> Result<u32, DataplaneError> {
    nl.link_by_name(name)?.map(|l| l.index).ok_or_else(|| {
        DataplaneError::Netlink(NetlinkError::Decode(format!("link {name} is missing")))
    })
}

/// A route to `dst` in `table` as Strait installs it: through nexthop `nexthop`, or, to
/// delete, any.
fn peer_route(table: Table, dst: IpNet, nexthop: Option<u32>) -> Route {
    Route {
        dst,
        gateway: None,
        oif: None,
        table: table.0,
        protocol: ROUTE_PROTOCOL,
        scope: Scope::Universe,
        onlink: false,
        nexthop,
    }
}

/// A pod's host route as Strait installs it, on the veth with index `oif`.
pub(crate) fn host_route(table: Table, dst: IpNet, oif: u32) -> Route {
    Route {
        dst,
        gateway: None,
        oif: Some(oif),
        table: table.0,
        protocol: ROUTE_PROTOCOL,
        scope: Scope::Link,
        onlink: false,
        nexthop: None,
    }
}

fn create_link(nl: &mut impl Rtnetlink, name: &str, spec: &LinkSpec) -> Result<(), DataplaneError> {
    let LinkKind::Vxlan {
        vni,
        local,
        underlay,
    } = &spec.kind;
    let underlay = index_of(nl, underlay)?;
    let vxlan = VxlanSpec {
        name: name.to_string(),
        mac: spec.mac,
        mtu: spec.mtu,
        vxlan: Vxlan {
            vni: *vni,
            local: Some(*local),
            port: VXLAN_PORT,
            underlay: Some(underlay),
            learning: false,
        },
    };
    nl.add_vxlan(&vxlan).map_err(|e| {
        if e.is_unsupported() {
            DataplaneError::KernelFeatureMissing {
                what: "VXLAN devices",
                source: e,
            }
        } else {
            e.into()
        }
    })
}

/// Where a request goes in the batch: removals, then nexthops, then entries, then routes, then
/// the pods' host sides, then rules (which send traffic to tables that now hold their routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Removal,
    Nexthop,
    Entry,
    Route,
    /// Pods' host routes and neighbours, each on the veth (by index) the pass read.
    HostSide,
    Rule,
}

/// Carries out `ops` against the kernel `actual` describes (read by [`read_actual`], or left by
/// the last pass). Everything is attempted; every failure is reported.
pub fn apply<R: Rtnetlink>(nl: &mut R, ops: Vec<Op>, actual: &Actual) -> Applied {
    let mut hops = actual.hops.clone();
    let mut applied = Applied::default();
    let mut entries = Vec::new();
    for op in ops {
        let outcome = match &op {
            Op::CreateLink(name, spec) => create_link(nl, name, spec),
            Op::DeleteLink(name) => nl.delete_link(name).map_err(Into::into),
            Op::SetMtu(name, mtu) => index_of(nl, name)
                .and_then(|index| Ok(nl.apply_all(vec![Change::SetMtu { index, mtu: *mtu }])?)),
            Op::SetUp(name) => {
                index_of(nl, name).and_then(|index| Ok(nl.apply_all(vec![Change::SetUp(index)])?))
            }
            Op::AddAddress(name, address) => index_of(nl, name).and_then(|index| {
                let address = *address;
                Ok(nl.apply_all(vec![Change::AddAddress { index, address }])?)
            }),
            _ => {
                entries.push(op);
                continue;
            }
        };
        match outcome {
            Ok(()) => applied.done += 1,
            Err(e) => applied.failed.push(e.to_string()),
        }
    }
    let mut indices: BTreeMap<String, Option<u32>> = BTreeMap::new();
    let mut index = |nl: &mut R, name: &str| {
        *indices
            .entry(name.to_string())
            .or_insert_with(|| index_of(nl, name).ok())
    };
    // New nexthops get ids no one uses: above every id seen, and never below our base.
    let mut next_id = (actual.highest_nexthop_id + 1).max(NEXTHOP_ID_BASE);
    let mut requests: Vec<(Stage, Change)> = Vec::new();
    for op in &entries {
        let request = match op {
            Op::DelRoute(table, dst) => (
                Stage::Removal,
                Change::DelRoute(peer_route(*table, *dst, None)),
            ),
            Op::DelHop(id) => {
                hops.retain(|_, v| v != id);
                (Stage::Removal, Change::DelNexthop(*id))
            }
            Op::AddHop(hop) => {
                let Some(oif) = index(nl, &hop.device) else {
                    applied
                        .failed
                        .push(format!("{op:?}: device {} is missing", hop.device));
                    continue;
                };
                let id = next_id;
                next_id += 1;
                hops.insert(hop.clone(), id);
                let change = Change::AddNexthop {
                    id,
                    gateway: hop.gateway,
                    oif,
                    onlink: hop.onlink,
                    protocol: ROUTE_PROTOCOL,
                };
                (Stage::Nexthop, change)
            }
            Op::SetRoute(route) => {
                let Some(id) = hops.get(&route.hop) else {
                    applied
                        .failed
                        .push(format!("{op:?}: its nexthop is missing"));
                    continue;
                };
                (
                    Stage::Route,
                    Change::ReplaceRoute(peer_route(route.table, route.dst, Some(*id))),
                )
            }
            // Written to the veth that was read, by its index: if it has gone since (its pod
            // with it), or was made again for a later ADD, the write fails harmlessly.
            Op::SetHostRoute(r) => match actual.host_veths.get(&r.device) {
                Some(oif) => (
                    Stage::HostSide,
                    Change::ReplaceRoute(host_route(r.table, r.dst, *oif)),
                ),
                None => continue,
            },
            Op::SetHostNeighbour(n) => match actual.host_veths.get(&n.device) {
                Some(&index) => (
                    Stage::HostSide,
                    Change::SetNeighbour {
                        index,
                        ip: n.ip,
                        mac: n.mac,
                    },
                ),
                None => continue,
            },
            Op::AddHostAddress(a) => match actual.host_veths.get(&a.device) {
                Some(&index) => (
                    Stage::HostSide,
                    Change::AddAddress {
                        index,
                        address: a.address,
                    },
                ),
                None => continue,
            },
            Op::AddFdb(device, mac, dst) | Op::DelFdb(device, mac, dst) => {
                let Some(i) = index(nl, device) else {
                    applied
                        .failed
                        .push(format!("{op:?}: device {device} is missing"));
                    continue;
                };
                let entry = FdbEntry {
                    index: i,
                    mac: *mac,
                    dst: *dst,
                };
                match op {
                    Op::AddFdb(..) => (Stage::Entry, Change::SetFdb(entry)),
                    _ => (Stage::Removal, Change::DelFdb(entry)),
                }
            }
            Op::SetNeighbour(device, ip, mac) => match index(nl, device) {
                Some(index) => (
                    Stage::Entry,
                    Change::SetNeighbour {
                        index,
                        ip: *ip,
                        mac: *mac,
                    },
                ),
                None => {
                    applied
                        .failed
                        .push(format!("{op:?}: device {device} is missing"));
                    continue;
                }
            },
            Op::DelNeighbour(device, ip) => match index(nl, device) {
                Some(index) => (Stage::Removal, Change::DelNeighbour { index, ip: *ip }),
                None => continue,
            },
            Op::AddRule(rule) => (Stage::Rule, Change::AddRule(kernel_rule(rule))),
            Op::DelRule(rule) => (Stage::Removal, Change::DelRule(kernel_rule(rule))),
            _ => unreachable!("device operations were applied above"),
        };
        requests.push(request);
    }
    requests.sort_by_key(|(stage, _)| *stage);
    let stages: Vec<Stage> = requests.iter().map(|(s, _)| *s).collect();
    let results = nl.apply(requests.into_iter().map(|(_, r)| r).collect());
    for (result, stage) in results.into_iter().zip(stages) {
        match result {
            Ok(()) => applied.done += 1,
            // Already gone is what a removal wanted (a route may have gone with its nexthop).
            Err(e) if stage == Stage::Removal && e.is_not_found() => applied.done += 1,
            // A rule already there is what adding it wanted (a pass may plan from what the last
            // one left while someone added the same rule).
            Err(e) if stage == Stage::Rule && e.is_exists() => applied.done += 1,
            // The veth went with its pod since the read: nothing left to repair.
            Err(e) if stage == Stage::HostSide && e.is_no_device() => {}
            Err(e) => applied.failed.push(e.to_string()),
        }
    }
    applied.highest_nexthop_id = next_id.saturating_sub(1).max(actual.highest_nexthop_id);
    applied.hops = hops;
    applied
}
