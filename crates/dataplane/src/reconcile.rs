//! One pass of the node model: inputs → desired (pure) → read what the kernel holds of ours (or
//! take what the last pass left) → plan (pure) → apply in one batch; then, when asked, Strait's
//! nftables tables are read back and each one that differs replaced. The reconciler's loop,
//! `straitctl routes` (a pass that does not apply) and leaving the cluster (a pass towards
//! nothing) all run this, so there is one sequence to read and to trust.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use strait_netlink::MacAddr;
use strait_nft::{Nftables, Written};

use crate::error::DataplaneError;
use crate::kernel::{apply, read_actual};
use crate::model::{Actual, Desired, Family, HostAddress, HostRoute, Neigh, Rule, Table, plan};
use crate::naming::gateway_v6_on_host;
use crate::overlay::{self, ClusterView, LocalNode};
use crate::rtnetlink::Rtnetlink;

/// A pod's host side as its attachment record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHost {
    pub veth: String,
    pub table: Table,
    pub addresses: Vec<IpNet>,
    /// The pod interface's MAC, when Strait chose it: then its neighbours are kept too.
    pub mac: Option<MacAddr>,
}

/// Everything a pass needs to know besides the kernel.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub local: LocalNode,
    pub cluster: Arc<ClusterView>,
    /// The attachments whose host sides are kept (not those being released).
    pub pods: Vec<PodHost>,
    /// Strait's nftables tables as each concern wants them.
    pub nft_tables: Vec<strait_nft::Table>,
}

impl Inputs {
    /// A pass towards nothing: every overlay object of ours goes (host veths are left to their
    /// attachments).
    pub fn nothing(local: &LocalNode) -> Inputs {
        Inputs {
            local: LocalNode {
                networks: Vec::new(),
                ..local.clone()
            },
            cluster: Arc::default(),
            pods: Vec::new(),
            nft_tables: Vec::new(),
        }
    }
}

/// Everything this node must hold: each part of the node adds its share.
pub fn desired(inputs: &Inputs) -> Desired {
    let mut out = Desired {
        nft_tables: inputs.nft_tables.clone(),
        ..Desired::default()
    };
    overlay::contribute(&inputs.local, &inputs.cluster, &mut out);
    // An address two records claim is a conflict recovery reports; its route is neither pod's to
    // take from the other.
    let mut claims: BTreeMap<(Table, IpAddr), usize> = BTreeMap::new();
    for pod in &inputs.pods {
        for a in &pod.addresses {
            *claims.entry((pod.table, a.addr())).or_default() += 1;
        }
    }
    for pod in &inputs.pods {
        let device: Arc<str> = pod.veth.as_str().into();
        out.host_routes.extend(
            pod.addresses
                .iter()
                .filter(|a| claims[&(pod.table, a.addr())] == 1)
                .map(|a| HostRoute {
                    table: pod.table,
                    dst: IpNet::from(a.addr()),
                    device: Arc::clone(&device),
                }),
        );
        if let Some(mac) = pod.mac {
            out.host_neighbours
                .extend(pod.addresses.iter().map(|a| Neigh {
                    device: Arc::clone(&device),
                    ip: a.addr(),
                    mac,
                }));
        }
        // What a pod of a network with a table of its own sends is looked up there.
        if pod.table != Table::MAIN {
            out.rules.extend(
                pod.addresses
                    .iter()
                    .map(|a| Rule::arriving_on(Family::of(a.addr()), &device, pod.table)),
            );
        }
        if pod.addresses.iter().any(|a| a.addr().is_ipv6()) {
            out.host_addresses.insert(HostAddress {
                device: Arc::clone(&device),
                address: gateway_v6_on_host(),
            });
        }
    }
    out
}

/// Whether a pass changes the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Apply,
    /// Read and plan only.
    DryRun,
}

/// What a pass found and did.
#[derive(Debug, Default)]
pub struct Report {
    pub desired: Desired,
    /// What the kernel held before the pass.
    pub actual: Actual,
    pub planned: usize,
    pub done: usize,
    /// One line per operation that failed.
    pub failed: Vec<String>,
    /// What the kernel holds after a pass that applied everything it planned.
    pub after: Option<Actual>,
    /// Whether an nftables table had to be replaced or removed.
    pub nft_changed: bool,
    /// The indices of the links whose changes concern the node model: our devices and the
    /// underlay.
    pub owned_links: BTreeSet<u32>,
    /// The underlay's index: its links and routes concern the model, its neighbours and
    /// addresses (the underlay network's own) do not.
    pub underlay_link: Option<u32>,
    pub read_time: Duration,
    pub apply_time: Duration,
}

/// Strait's nftables tables, for a pass to check: the ruleset, and what its tables read back as
/// after Strait last wrote them.
pub type NftCheck<'a> = (&'a mut dyn Nftables, &'a mut Written);

/// Runs one pass. `known` is what the kernel holds when nothing but the inputs changed since the
/// last pass (its [`Report::after`]); without it the kernel is read. With `nft`, a pass that
/// applies also makes the nftables tables what the inputs want (they cost a read of each table,
/// so the caller asks when something may have changed them).
pub fn reconcile(
    nl: &mut impl Rtnetlink,
    inputs: &Inputs,
    known: Option<Actual>,
    pass: Pass,
    nft: Option<NftCheck<'_>>,
) -> Result<Report, DataplaneError> {
    let desired = desired(inputs);
    let started = Instant::now();
    let actual = match known {
        Some(actual) => actual,
        None => read_actual(nl, &inputs.local.underlay)?,
    };
    let read_time = started.elapsed();
    let ops = plan(&desired, &actual);
    let mut report = Report {
        planned: ops.len(),
        read_time,
        ..Report::default()
    };
    if pass == Pass::Apply {
        let started = Instant::now();
        let applied = apply(nl, ops, &actual);
        report.apply_time = started.elapsed();
        report.done = applied.done;
        report.failed = applied.failed;
        if report.failed.is_empty() {
            report.after =
                Some(desired.as_applied(&actual, &applied.hops, applied.highest_nexthop_id));
        }
        if let Some((nft, written)) = nft {
            match strait_nft::ensure(nft, &desired.nft_tables, written) {
                Ok(changed) => report.nft_changed = changed,
                Err(e) => report.failed.push(e.to_string()),
            }
        }
    }
    for name in desired.links.keys().chain([&inputs.local.underlay]) {
        if let Ok(Some(link)) = nl.link_by_name(name) {
            report.owned_links.insert(link.index);
            if *name == inputs.local.underlay {
                report.underlay_link = Some(link.index);
            }
        }
    }
    report.desired = desired;
    report.actual = actual;
    Ok(report)
}

#[cfg(test)]
mod tests;
