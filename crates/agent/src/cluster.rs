//! The cluster as this node knows it: nodes and blocks, kept current by store watches and read
//! by the reconciler. When the store is unreachable the last view stays, so the data plane keeps
//! working; the watches catch up (with a full relist) when it returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use strait_dataplane::model::NetId;
use strait_dataplane::overlay::{BlockKey, ClusterView, Peer, Vtep};
use strait_store::{BlockRecord, Kind, NodeRecord, Store, Versioned, WatchEvent, typed};

use crate::tasks::Tasks;
use crate::wake::{Reason, Wake};

#[derive(Debug, Default)]
pub struct ClusterCache {
    /// Shared with passes in flight; changed copy-on-write.
    view: RwLock<Arc<ClusterView>>,
    /// Each block of the view by its record's name in the store, which a deletion carries alone
    /// (the name says the block's address space, which the view does not keep). Changed only
    /// with the view's lock held.
    block_names: Mutex<HashMap<String, BlockKey>>,
    /// Set once each watch delivered its first full listing: before that the view is not the
    /// cluster, and acting on it would tear down routes to peers it has not heard of yet.
    nodes_synced: AtomicBool,
    blocks_synced: AtomicBool,
}

fn peer(record: &NodeRecord) -> Peer {
    Peer {
        address: record.address,
        address6: record.address6,
        vxlan_over_ipv6: record.vxlan_over_ipv6,
        vteps: record
            .networks
            .iter()
            .filter_map(|(network, v)| {
                let mac = v.mac.parse().ok()?;
                Some((NetId::new(network), Vtep { ip: v.ip, mac }))
            })
            .collect(),
    }
}

impl ClusterCache {
    pub fn is_synced(&self) -> bool {
        self.nodes_synced.load(Ordering::SeqCst) && self.blocks_synced.load(Ordering::SeqCst)
    }

    pub fn snapshot(&self) -> Arc<ClusterView> {
        Arc::clone(&self.view.read().expect("not poisoned"))
    }

    /// A cache that has seen `view` as its watches' first listings, for unit tests.
    #[cfg(test)]
    pub(crate) fn synced_to(view: ClusterView) -> ClusterCache {
        let cache = ClusterCache {
            view: RwLock::new(Arc::new(view)),
            ..ClusterCache::default()
        };
        cache.nodes_synced.store(true, Ordering::SeqCst);
        cache.blocks_synced.store(true, Ordering::SeqCst);
        cache
    }

    /// Applies one watch event; whether the view changed (a record rewritten unchanged, as some
    /// backends report status updates, changes nothing and costs no reconcile pass).
    fn apply(&self, kind: Kind, event: WatchEvent) -> bool {
        let mut guard = self.view.write().expect("not poisoned");
        match (kind, event) {
            (Kind::Node, WatchEvent::Reset(all)) => {
                Arc::make_mut(&mut guard).nodes = all.into_iter().filter_map(node).collect();
                self.nodes_synced.store(true, Ordering::SeqCst);
                true
            }
            (Kind::IpBlock, WatchEvent::Reset(all)) => {
                let mut names = self.block_names.lock().expect("not poisoned");
                names.clear();
                let mut blocks = BTreeMap::new();
                for (name, key, owner) in all.into_iter().filter_map(block) {
                    names.insert(name, key.clone());
                    blocks.insert(key, owner);
                }
                Arc::make_mut(&mut guard).blocks = blocks;
                self.blocks_synced.store(true, Ordering::SeqCst);
                true
            }
            (Kind::Node, WatchEvent::Put(v)) => match node(v) {
                Some((name, peer)) if guard.nodes.get(&name) != Some(&peer) => {
                    Arc::make_mut(&mut guard).nodes.insert(name, peer);
                    true
                }
                _ => false,
            },
            (Kind::IpBlock, WatchEvent::Put(v)) => match block(v) {
                Some((name, key, owner)) => {
                    let mut names = self.block_names.lock().expect("not poisoned");
                    let before = names.insert(name, key.clone());
                    let moved = before.filter(|k| *k != key);
                    if moved.is_none() && guard.blocks.get(&key) == Some(&owner) {
                        return false;
                    }
                    let view = Arc::make_mut(&mut guard);
                    if let Some(old) = moved {
                        view.blocks.remove(&old);
                    }
                    view.blocks.insert(key, owner);
                    true
                }
                None => false,
            },
            (Kind::Node, WatchEvent::Delete(name)) => {
                guard.nodes.contains_key(&name)
                    && Arc::make_mut(&mut guard).nodes.remove(&name).is_some()
            }
            (Kind::IpBlock, WatchEvent::Delete(name)) => {
                let key = self.block_names.lock().expect("not poisoned").remove(&name);
                key.is_some_and(|k| Arc::make_mut(&mut guard).blocks.remove(&k).is_some())
            }
            _ => false,
        }
    }
}

fn node(v: Versioned<serde_json::Value>) -> Option<(String, Peer)> {
    match typed::decode::<NodeRecord>(v) {
        Ok(r) => Some((r.name, peer(&r.value))),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an unreadable node record");
            None
        }
    }
}

/// A block record's name, key in the view, and holder.
fn block(v: Versioned<serde_json::Value>) -> Option<(String, BlockKey, String)> {
    match typed::decode::<BlockRecord>(v) {
        Ok(r) => Some((
            r.name,
            BlockKey {
                pool: r.value.pool,
                cidr: r.value.cidr,
            },
            r.value.node,
        )),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an unreadable block record");
            None
        }
    }
}

/// Keeps `cache` current for nodes and blocks, waking the reconciler on every change.
pub fn spawn_watches(
    tasks: &Arc<Tasks>,
    store: &impl Store,
    cache: &Arc<ClusterCache>,
    wake: &Arc<Wake>,
) {
    for kind in [Kind::Node, Kind::IpBlock] {
        let (store, cache, wake) = (store.clone(), Arc::clone(cache), Arc::clone(wake));
        let name = match kind {
            Kind::Node => "node watch",
            _ => "block watch",
        };
        tasks.spawn(name, async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match store.watch(kind).await {
                    Ok(mut events) => {
                        backoff = Duration::from_millis(200);
                        while let Some(event) = events.recv().await {
                            let mut changed = cache.apply(kind, event);
                            // One wake-up for everything that arrived together.
                            while let Ok(more) = events.try_recv() {
                                changed |= cache.apply(kind, more);
                            }
                            if changed {
                                wake.signal(Reason::Store);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%kind, error = %e, "cannot watch the cluster store; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }
}

/// Blocks of `view` per node, for straitctl.
pub fn blocks_by_node(view: &ClusterView) -> BTreeMap<String, Vec<ipnet::IpNet>> {
    let mut out: BTreeMap<String, Vec<ipnet::IpNet>> = BTreeMap::new();
    for (block, node) in &view.blocks {
        out.entry(node.clone()).or_default().push(block.cidr);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn put(name: &str, value: serde_json::Value, revision: u64) -> WatchEvent {
        WatchEvent::Put(Versioned {
            name: name.into(),
            revision,
            value,
        })
    }

    #[test]
    fn only_events_that_change_the_view_count() {
        let cache = ClusterCache::default();
        let record = json!({"address": "192.168.1.2", "networks": {"n": {"ip": "10.0.0.0", "mac": "02:00:00:00:00:01"}}});
        assert!(cache.apply(Kind::Node, WatchEvent::Reset(vec![])));
        assert!(cache.apply(Kind::Node, put("b", record.clone(), 1)));
        // The same record written again (a new revision, nothing else): no change.
        assert!(!cache.apply(Kind::Node, put("b", record.clone(), 2)));
        let mut moved = record.clone();
        moved["address"] = json!("192.168.1.3");
        assert!(cache.apply(Kind::Node, put("b", moved, 3)));
        assert!(cache.apply(Kind::Node, WatchEvent::Delete("b".into())));
        assert!(!cache.apply(Kind::Node, WatchEvent::Delete("b".into())));

        let block = json!({"pool": "p", "cidr": "10.0.0.64/26", "node": "b"});
        assert!(cache.apply(Kind::IpBlock, put("10-0-0-64-26", block.clone(), 4)));
        assert!(!cache.apply(Kind::IpBlock, put("10-0-0-64-26", block, 5)));
        assert!(cache.apply(Kind::IpBlock, WatchEvent::Delete("10-0-0-64-26".into())));
        assert!(!cache.apply(Kind::Node, put("c", json!("not a record"), 6)));
    }

    #[test]
    fn one_range_in_two_address_spaces_is_two_blocks() {
        let cache = ClusterCache::default();
        let default = json!({"pool": "p", "cidr": "10.0.0.64/26", "node": "a"});
        let blue = json!({"pool": "q", "cidr": "10.0.0.64/26", "node": "b", "space": "blue"});
        assert!(cache.apply(
            Kind::IpBlock,
            WatchEvent::Reset(vec![Versioned {
                name: "10-0-0-64-26".into(),
                revision: 1,
                value: default,
            }])
        ));
        assert!(cache.apply(Kind::IpBlock, put("blue.10-0-0-64-26", blue, 2)));
        assert_eq!(cache.snapshot().blocks.len(), 2);
        // Deleting the tenant's block leaves the default space's, whatever their order.
        assert!(cache.apply(
            Kind::IpBlock,
            WatchEvent::Delete("blue.10-0-0-64-26".into())
        ));
        let view = cache.snapshot();
        let holders: Vec<(&str, &str)> = view
            .blocks
            .iter()
            .map(|(k, node)| (k.pool.as_str(), node.as_str()))
            .collect();
        assert_eq!(holders, [("p", "a")]);
        assert!(cache.apply(Kind::IpBlock, WatchEvent::Delete("10-0-0-64-26".into())));
        assert!(cache.snapshot().blocks.is_empty());
    }
}
