//! What a start finds beyond the attachment records. The kernel is the second ledger of the node's
//! pod addresses: a host veth that carries addresses without a readable record (a truncated file,
//! an emptied state directory, a record of a newer format) belongs to a pod that may still run, so
//! its link is kept and its addresses are quarantined (held, never handed out) until the runtime
//! deletes that pod. An address the node cannot take back (its block belongs to another node, two
//! pods hold it, no pool has it) is a conflict: the node is not ready, and takes no new pod, until
//! the pod holding it is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;

use strait_dataplane::ledger::HostVeth;
use strait_store::Store;

use crate::attachments::registry::Attachment;
use crate::error::AgentError;
use crate::ipam::Ipam;
use crate::ipam::network::NetworkState;

/// Addresses a host veth carries that no readable record accounts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub veth: String,
    /// The device's interface index when it was read: a GC removes that device, never one an ADD
    /// has since created under the same name.
    pub index: u32,
    /// The network whose pools hold the addresses, when one does.
    pub network: Option<String>,
    pub addresses: Vec<IpAddr>,
}

/// An address this node holds but could not take back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub veth: String,
    pub address: IpAddr,
    /// Who holds it: the pod, or the container, as the record says.
    pub holder: String,
    pub reason: String,
}

#[derive(Debug, Default)]
struct Held {
    quarantined: BTreeMap<String, Quarantined>,
    conflicts: Vec<Conflict>,
}

/// The quarantined addresses and conflicts of this node; both go away when the pod behind them is
/// deleted ([`Recovery::forget`]).
#[derive(Debug, Default)]
pub struct Recovery {
    held: Mutex<Held>,
}

impl Recovery {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.lock().quarantined.values().cloned().collect()
    }

    pub fn conflicts(&self) -> Vec<Conflict> {
        self.lock().conflicts.clone()
    }

    /// Forgets everything about `veth`, whose pod is gone; returns what was quarantined on it, for
    /// the caller to free.
    pub fn forget(&self, veth: &str) -> Option<Quarantined> {
        let mut held = self.lock();
        held.conflicts.retain(|c| c.veth != veth);
        held.quarantined.remove(veth)
    }

    /// Quarantines again what [`Recovery::forget`] returned, its device not removed after all.
    pub fn keep(&self, q: Quarantined) {
        self.lock().quarantined.insert(q.veth.clone(), q);
    }

    /// Why the node must not take new pods, with what to do about it; `None` when it may.
    pub fn not_ready(&self) -> Option<String> {
        let held = self.lock();
        if held.conflicts.is_empty() {
            return None;
        }
        let each: Vec<String> = held
            .conflicts
            .iter()
            .map(|c| {
                format!(
                    "{} of {} (host veth {}): {}",
                    c.address, c.holder, c.veth, c.reason
                )
            })
            .collect();
        Some(format!(
            "this node holds addresses it cannot keep: {}. Delete those pods (their CNI DEL \
             resolves it), or, if they no longer run, delete their host veths",
            each.join("; ")
        ))
    }

    /// The veths whose quarantined addresses lie in `network`'s pools, and those that carry no
    /// address at all (an ADD cut short before its record was written leaves one; it carries no
    /// traffic, and the first GC that does not list it removes it).
    pub fn quarantined_in(&self, network: &str) -> Vec<String> {
        let held = self.lock();
        held.quarantined
            .values()
            .filter(|q| match &q.network {
                Some(n) => n == network,
                None => q.addresses.is_empty() && !held.conflicts.iter().any(|c| c.veth == q.veth),
            })
            .map(|q| q.veth.clone())
            .collect()
    }
}

/// What the kernel shows on Strait's host veths that no readable record accounts for: every veth
/// without a record (with whatever it carries, maybe nothing), and the extra addresses of a veth
/// whose record lists others.
pub fn unrecorded(records: &[Attachment], kernel: Vec<HostVeth>) -> Vec<HostVeth> {
    let recorded: BTreeMap<&str, BTreeSet<IpAddr>> = records
        .iter()
        .map(|a| {
            let addresses = a.addresses.iter().map(|n| n.addr()).collect();
            (a.host_veth.as_str(), addresses)
        })
        .collect();
    kernel
        .into_iter()
        .filter_map(|mut veth| match recorded.get(veth.name.as_str()) {
            None => Some(veth),
            Some(known) => {
                veth.addresses.retain(|a| !known.contains(a));
                (!veth.addresses.is_empty()).then_some(veth)
            }
        })
        .collect()
}

/// Takes back, in the allocators, every address of the records and every address the kernel
/// carries without one: the records' first, then the quarantined. A block no node holds is
/// claimed again; an address that cannot be taken back becomes a conflict. Store failures end
/// the start (it is retried).
pub async fn restore(
    ipam: &Ipam<impl Store>,
    records: &[Attachment],
    kernel: Vec<HostVeth>,
) -> Result<Recovery, AgentError> {
    let recovery = Recovery::default();
    for a in records {
        let Ok(net) = ipam.network(a.network()) else {
            tracing::warn!(network = %a.network(), container_id = %a.key.container_id,
                "attachment of a network no longer configured; kept until DEL or GC");
            continue;
        };
        let holder = match &a.pod {
            Some(p) => format!("pod {}/{}", p.namespace, p.name),
            None => format!("container {}", a.key.container_id),
        };
        for address in &a.addresses {
            take_back(ipam, net, &a.host_veth, address.addr(), &holder, &recovery).await?;
        }
    }
    for veth in unrecorded(records, kernel) {
        let network = veth
            .addresses
            .first()
            .and_then(|ip| ipam.network_holding(ip));
        let holder = "a pod without a readable record";
        let mut kept = Vec::new();
        for &ip in &veth.addresses {
            match network {
                Some(net) if net.spec.pools.iter().any(|p| p.pool.cidr.contains(&ip)) => {
                    if take_back(ipam, net, &veth.name, ip, holder, &recovery).await? {
                        kept.push(ip);
                    }
                }
                _ => recovery.lock().conflicts.push(Conflict {
                    veth: veth.name.clone(),
                    address: ip,
                    holder: holder.into(),
                    reason: "no configured network has a pool with this address".into(),
                }),
            }
        }
        tracing::warn!(veth = %veth.name, addresses = ?veth.addresses,
            "a host veth carries addresses no readable record accounts for: kept, and its \
             addresses quarantined until the runtime deletes its pod (CNI DEL or GC)");
        recovery.lock().quarantined.insert(
            veth.name.clone(),
            Quarantined {
                veth: veth.name,
                index: veth.index,
                network: network.map(|n| n.spec.name.clone()),
                addresses: kept,
            },
        );
    }
    for c in recovery.conflicts() {
        tracing::error!(address = %c.address, holder = %c.holder, veth = %c.veth, reason = %c.reason,
            "an address this node holds cannot be kept: the node stays not ready until its pod is deleted");
    }
    Ok(recovery)
}

/// Reserves `ip` for `veth`; false (and a conflict recorded) when it cannot be.
async fn take_back(
    ipam: &Ipam<impl Store>,
    net: &NetworkState,
    veth: &str,
    ip: IpAddr,
    holder: &str,
    recovery: &Recovery,
) -> Result<bool, AgentError> {
    match ipam.allocate_fixed(net, ip).await {
        Ok(_) => Ok(true),
        Err(
            AgentError::AddressUnavailable { reason, .. }
            | AgentError::AddressInvalid { reason, .. },
        ) => {
            recovery.lock().conflicts.push(Conflict {
                veth: veth.to_string(),
                address: ip,
                holder: holder.to_string(),
                reason,
            });
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::registry::AttachmentKey;

    fn record(veth: &str, addresses: &[&str]) -> Attachment {
        Attachment {
            key: AttachmentKey {
                network: "n".into(),
                container_id: veth.into(),
                ifname: "eth0".into(),
            },
            served_by: None,
            netns: None,
            pod: None,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            host_veth: veth.into(),
            pod_mac: None,
            mtu: 1450,
            releasing: false,
        }
    }

    fn veth(name: &str, addresses: &[&str]) -> HostVeth {
        HostVeth {
            name: name.into(),
            index: 7,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn the_kernel_adds_what_the_records_miss_and_nothing_they_have() {
        let records = [record("sta", &["10.0.0.1/32"])];
        let kernel = vec![
            veth("sta", &["10.0.0.1"]),             // recorded: nothing to add
            veth("stb", &["10.0.0.2"]),             // no record: all of it
            veth("stc", &[]),                       // no record, no address: still reported
            veth("sta", &["10.0.0.1", "10.0.0.9"]), // an address the record lacks
        ];
        assert_eq!(
            unrecorded(&records, kernel),
            vec![
                veth("stb", &["10.0.0.2"]),
                veth("stc", &[]),
                veth("sta", &["10.0.0.9"]),
            ]
        );
    }

    #[test]
    fn conflicts_keep_the_node_unready_until_their_pod_is_forgotten() {
        let recovery = Recovery::default();
        assert_eq!(recovery.not_ready(), None);
        recovery.lock().conflicts.push(Conflict {
            veth: "sta".into(),
            address: "10.0.0.1".parse().unwrap(),
            holder: "pod default/web".into(),
            reason: "its block 10.0.0.0/26 belongs to node b".into(),
        });
        recovery.lock().quarantined.insert(
            "sta".into(),
            Quarantined {
                veth: "sta".into(),
                index: 7,
                network: Some("n".into()),
                addresses: vec!["10.0.0.2".parse().unwrap()],
            },
        );
        let why = recovery.not_ready().unwrap();
        assert!(
            why.contains("10.0.0.1 of pod default/web (host veth sta)"),
            "{why}"
        );
        assert_eq!(recovery.quarantined_in("n"), vec!["sta".to_string()]);
        assert!(recovery.quarantined_in("m").is_empty());
        assert!(recovery.forget("stb").is_none());
        assert_eq!(recovery.forget("sta").unwrap().addresses.len(), 1);
        assert_eq!(recovery.not_ready(), None);
        assert!(recovery.quarantined().is_empty());
    }

    #[test]
    fn a_veth_carrying_nothing_goes_to_any_networks_gc_unless_it_is_in_conflict() {
        let recovery = Recovery::default();
        for veth in ["ste", "stf"] {
            recovery.lock().quarantined.insert(
                veth.into(),
                Quarantined {
                    veth: veth.into(),
                    index: 7,
                    network: None,
                    addresses: vec![],
                },
            );
        }
        recovery.lock().conflicts.push(Conflict {
            veth: "stf".into(),
            address: "192.0.2.1".parse().unwrap(),
            holder: "a pod without a readable record".into(),
            reason: "no configured network has a pool with this address".into(),
        });
        assert_eq!(recovery.quarantined_in("n"), vec!["ste".to_string()]);
        assert_eq!(recovery.quarantined_in("m"), vec!["ste".to_string()]);
    }
}
