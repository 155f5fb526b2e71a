//! The overlay against the kernel: read what Strait owns into an [`Actual`], and carry out a
//! [`plan`](crate::overlay::plan). Device changes go one by one (later entries need the device's
//! index); FDB entries, neighbours and routes go as one pipelined batch, removals first.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use strait_netlink::{
    FdbEntry, Neighbour, Netlink, NetlinkError, Request, Route, Scope, TABLE_MAIN, Vxlan, VxlanSpec,
};

use crate::error::DataplaneError;
use crate::naming::ROUTE_PROTOCOL;
use crate::overlay::{Actual, ActualDevice, Fdb, Neigh, Op, PeerRoute, VXLAN_PORT, is_device};

/// What the kernel holds of ours. `underlay` names the underlay device, through which routed
/// pools' routes leave.
pub fn read_actual(nl: &mut Netlink, underlay: &str) -> Result<Actual, DataplaneError> {
    let links = nl.links()?;
    let names: BTreeMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut actual = Actual::default();
    let mut ours: BTreeMap<u32, String> = BTreeMap::new();
    for link in &links {
        let (true, Some(v)) = (is_device(&link.name), &link.vxlan) else {
            continue;
        };
        ours.insert(link.index, link.name.clone());
        actual.devices.insert(
            link.name.clone(),
            ActualDevice {
                vni: v.vni,
                mac: link.mac,
                mtu: link.mtu,
                local: v.local,
                port: v.port,
                underlay: v.underlay.and_then(|i| names.get(&i).cloned()),
                learning: v.learning,
                up: link.up,
                addresses: nl.addresses(link.index)?,
            },
        );
    }
    if !ours.is_empty() {
        for f in nl.all_fdb()? {
            if let Some(device) = ours.get(&f.index) {
                actual.fdb.insert(Fdb {
                    device: device.clone(),
                    mac: f.mac,
                    dst: f.dst,
                });
            }
        }
        for n in nl.all_neighbours()? {
            if let (Some(device), Some(mac), true) = (ours.get(&n.index), n.mac, n.permanent) {
                actual.neighbours.insert(Neigh {
                    device: device.clone(),
                    ip: n.ip,
                    mac,
                });
            }
        }
    }
    let leaves_ours = |oif: Option<u32>| {
        oif.and_then(|i| names.get(&i))
            .filter(|name| is_device(name) || name.as_str() == underlay)
    };
    for r in nl.routes(false, TABLE_MAIN)? {
        if r.protocol != ROUTE_PROTOCOL {
            continue;
        }
        if let (Some(device), Some(gateway)) = (leaves_ours(r.oif), r.gateway) {
            actual.routes.insert(PeerRoute {
                dst: r.dst,
                gateway,
                device: device.clone(),
                onlink: r.onlink,
            });
        }
    }
    Ok(actual)
}

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct Applied {
    pub done: usize,
    /// One line per operation that failed.
    pub failed: Vec<String>,
}

fn index_of(nl: &mut Netlink, name: &str) -> Result<u32, DataplaneError> {
    nl.link_by_name(name)?.map(|l| l.index).ok_or_else(|| {
        DataplaneError::Netlink(NetlinkError::Decode(format!("link {name} is missing")))
    })
}

fn peer_route(dst: IpNet, gateway: IpAddr, oif: u32, onlink: bool) -> Route {
    Route {
        dst,
        gateway: Some(gateway),
        oif: Some(oif),
        table: TABLE_MAIN,
        protocol: ROUTE_PROTOCOL,
        scope: Scope::Universe,
        onlink,
    }
}

/// Carries out `ops`. A failed device operation stops the entries on that device; everything
/// else is attempted regardless, and every failure is reported.
pub fn apply(nl: &mut Netlink, ops: Vec<Op>) -> Applied {
    let mut applied = Applied::default();
    let mut entries = Vec::new();
    for op in ops {
        let outcome = match &op {
            Op::CreateDevice(name, spec) => index_of(nl, &spec.underlay).and_then(|underlay| {
                let vxlan = VxlanSpec {
                    name: name.clone(),
                    mac: spec.mac,
                    mtu: spec.mtu,
                    vxlan: Vxlan {
                        vni: spec.vni,
                        local: Some(spec.local),
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
            }),
            Op::DeleteDevice(name) => nl.delete_link(name).map_err(Into::into),
            Op::SetMtu(name, mtu) => index_of(nl, name).and_then(|i| Ok(nl.set_link_mtu(i, *mtu)?)),
            Op::SetUp(name) => index_of(nl, name).and_then(|i| Ok(nl.set_link_up(i)?)),
            Op::AddAddress(name, address) => {
                index_of(nl, name).and_then(|i| Ok(nl.add_address(i, *address)?))
            }
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
    let mut index = |nl: &mut Netlink, name: &str| {
        *indices
            .entry(name.to_string())
            .or_insert_with(|| index_of(nl, name).ok())
    };
    let mut requests: Vec<(Request, bool)> = Vec::new();
    for op in &entries {
        let device = match op {
            Op::AddFdb(d, ..)
            | Op::DelFdb(d, ..)
            | Op::SetNeighbour(d, ..)
            | Op::DelNeighbour(d, _) => d,
            Op::AddRoute(_, _, d, _) | Op::DelRoute(_, _, d, _) => d,
            _ => unreachable!("device operations were applied above"),
        };
        let Some(i) = index(nl, device) else {
            applied
                .failed
                .push(format!("{op:?}: device {device} is missing"));
            continue;
        };
        let (request, removal) = match op {
            Op::AddFdb(_, mac, dst) => (
                FdbEntry {
                    index: i,
                    mac: *mac,
                    dst: *dst,
                }
                .replace_request(),
                false,
            ),
            Op::DelFdb(_, mac, dst) => (
                FdbEntry {
                    index: i,
                    mac: *mac,
                    dst: *dst,
                }
                .delete_request(),
                true,
            ),
            Op::SetNeighbour(_, ip, mac) => (Neighbour::set_request(i, *ip, *mac), false),
            Op::DelNeighbour(_, ip) => (Neighbour::delete_request(i, *ip), true),
            Op::AddRoute(dst, gw, _, onlink) => {
                (peer_route(*dst, *gw, i, *onlink).replace_request(), false)
            }
            Op::DelRoute(dst, gw, _, onlink) => {
                (peer_route(*dst, *gw, i, *onlink).delete_request(), true)
            }
            _ => unreachable!("device operations were applied above"),
        };
        requests.push((request, removal));
    }
    // Removals first, so a replaced entry is never deleted after its replacement.
    requests.sort_by_key(|(_, removal)| !removal);
    let removals: Vec<bool> = requests.iter().map(|(_, r)| *r).collect();
    let results = nl.batch(requests.into_iter().map(|(r, _)| r).collect());
    for (result, removal) in results.into_iter().zip(removals) {
        match result {
            Ok(()) => applied.done += 1,
            // Already gone is what a removal wanted.
            Err(e) if removal && e.is_not_found() => applied.done += 1,
            Err(e) => applied.failed.push(e.to_string()),
        }
    }
    applied
}
